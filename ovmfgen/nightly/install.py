"""``--install-root``: the passing cells' firmware laid out as packagers install it, with QEMU firmware descriptors."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ovmfgen.boot.shell import split_unified_fd
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import ELF_NAME
from ovmfgen.nightly.history import write_public
from ovmfgen.nightly.matrix import InstallSpec
from ovmfgen.nightly.records import CellRecord, Summary
from ovmfgen.ui import say

# The code and variable halves of a split OVMF, as edk2's QEMU platforms name them.
SPLIT_FDS = ("OVMF_CODE.fd", "OVMF_VARS.fd")


def firmware_descriptor(kind: str, description: str, paths_abs: Mapping[str, str], cell: CellRecord,
                        edk2_tag: str | None = None) -> dict[str, object]:
    """A QEMU firmware descriptor (docs/interop/firmware.json in QEMU) for an installed image.

    ``kind`` is ``kernel`` (the PVH ELF: QEMU ``-kernel``; Xen ``xl`` ``type='pvh'`` +
    ``kernel=``) or ``flash`` (OVMF_CODE + OVMF_VARS template). ``interface-types`` is ``uefi``
    in both cases: that is what the guest sees, on Xen and QEMU alike. ``features`` carries
    ``verbose-dynamic`` for DEBUG builds whose log goes to the debug console (port 0x402), which is
    exactly what that feature means; ``tags`` (ignored by management software) say what was built.
    """
    features = dict(str(f).split("=", 1) for f in cell.get("features") or [] if "=" in str(f))
    manifest = cell.get("manifest") or {}
    feats = (manifest.get("features") if isinstance(manifest, dict) else None) or features
    target = str(cell.get("target"))
    verbose = target != "RELEASE" and feats.get("debug_output", "debugcon") == "debugcon"
    mapping: dict[str, object]
    if kind == "kernel":
        mapping = {"device": "kernel", "filename": paths_abs["firmware"]}
    elif kind == "flash":
        mapping = {"device": "flash",
                   "executable": {"filename": paths_abs["code"], "format": "raw"},
                   "nvram-template": {"filename": paths_abs["vars"], "format": "raw"}}
    else:
        raise OvmfgenError(f"unknown firmware mapping '{kind}'")
    tags = [f"ovmfgen-platform={cell.get('platform')}", f"target={target}", f"fd-size={cell.get('fd_size')}"]
    if kind == "kernel":
        tags += ["xen-pvh-elf", "xl: type='pvh' kernel='" + paths_abs["firmware"] + "'"]
    if edk2_tag:
        tags.append(f"edk2={edk2_tag}")
    tags += [f"feature:{k}={v}" for k, v in sorted(feats.items())]
    return {
        "description": description,
        "interface-types": ["uefi"],
        "mapping": mapping,
        # What ovmfgen's nightly boots: the i440fx "pc" machine, with TCG (KVM is not required).
        "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*"]}],
        "features": ["verbose-dynamic"] if verbose else [],
        "tags": tags,
    }


def install(summary: Summary, night: Path, root: Path, specs: Sequence[InstallSpec]) -> list[Path]:
    """Lay out the passing cells' firmware under ``root`` as packagers install it (see ``InstallSpec``).

    The xen-pvh ELF goes to ``usr/lib/xen/boot/ovmf.bin`` in the shipped nightly.yaml: upstream
    Xen's XENFIRMWAREDIR (``$(libexecdir)/xen/boot``), where Xen's own build installs the OVMF it
    builds (``tools/firmware``: ``ovmf.bin``) and where libxl's OVMF_PATH points unless configured
    ``--with-system-ovmf``. Using Xen's name and place means a Xen built without its own OVMF finds
    ours, and xl PVH configs can say ``kernel='/usr/lib/xen/boot/ovmf.bin'``. Not /usr/share/ovmf:
    that is Debian's ovmf package's (a QEMU-flavoured OVMF.fd), which we must not shadow.
    Descriptors go to ``usr/share/qemu/firmware/`` (QEMU's distro directory for firmware JSON).
    """
    cells = {str(c.get("name")): c for c in summary.get("cells") or []}
    written: list[Path] = []
    edk2 = summary.get("edk2") or {}
    for spec in specs:
        cell = cells.get(spec.cell)
        if cell is None:
            say(f"install: cell {spec.cell} was not run tonight; skipped")
            continue
        if cell.get("status") != "passed":
            say(f"install: cell {spec.cell} failed; not installing it")
            continue
        arts = cell.get("artifacts") or {}
        files: dict[str, tuple[str, Path]]
        if spec.firmware:
            src = night / arts.get(ELF_NAME, "")
            if not arts.get(ELF_NAME) or not src.is_file():
                raise OvmfgenError(f"install: cell {spec.cell} has no {ELF_NAME} to install as {spec.firmware}")
            files = {"firmware": (spec.firmware, src)}
            kind = "kernel"
        else:
            code = arts.get(SPLIT_FDS[0])
            vars_ = arts.get(SPLIT_FDS[1])
            if not (code and vars_):
                # The unified FD the build published (the platform's FD name: OVMF.fd).
                fd_rel = next((rel for name, rel in sorted(arts.items())
                               if name.endswith(".fd") and "/" not in name and name not in SPLIT_FDS), None)
                if not fd_rel:
                    raise OvmfgenError(f"install: cell {spec.cell} has no unified FD (OVMF.fd) to install")
                v, c = split_unified_fd((night / fd_rel).read_bytes())
                tmp = night / "cells" / spec.cell
                (tmp / SPLIT_FDS[0]).write_bytes(c)
                (tmp / SPLIT_FDS[1]).write_bytes(v)
                code, vars_ = (f"cells/{spec.cell}/{name}" for name in SPLIT_FDS)
            if not spec.vars:
                raise OvmfgenError(f"install: the entry for {spec.cell} needs 'vars' with 'code'")
            assert spec.code, "parse_matrix: an install entry without 'firmware' has 'code'"
            files = {"code": (spec.code, night / code), "vars": (spec.vars, night / vars_)}
            kind = "flash"
        abs_paths = {}
        for key, (rel, src) in files.items():
            dst = root / rel
            write_public(dst, src.read_bytes())
            written.append(dst)
            abs_paths[key] = "/" + str(rel)
        if spec.descriptor:
            desc = firmware_descriptor(
                kind, f"{cell.get('description') or spec.cell} (ovmfgen nightly {summary.get('date')})",
                abs_paths, cell, edk2.get("tag"))
            dst = root / spec.descriptor
            write_public(dst, (json.dumps(desc, indent=4) + "\n").encode())
            written.append(dst)
    for p in written:
        say(f"installed {p}")
    return written
