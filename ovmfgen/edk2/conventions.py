"""EDK2's conventions, spelled once: the architecture, the build targets, the FD-size vocabulary, the
tool chain tag of a tree, and the edksetup.sh-style environment of a plain ``build``.

FD sizes: an FD size is a number of MiB (1, 2 or 4) everywhere in ovmfgen. Every other spelling is
derived from it here: the command line's ``4M`` (``fd_size_label``), the DSC's ``-D FD_SIZE_4MB``
(``fd_size_define``), the FDF's ``FD_SIZE_IN_KB`` and the platform's ``header_region`` keys
(``fd_size_kb``), and the image length (``fd_size_bytes``). ``parse_fd_size`` reads any of them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from ovmfgen.errors import OvmfgenError

ARCH = "X64"
TARGETS = ("DEBUG", "RELEASE", "NOOPT")
FD_SIZES_MIB = (1, 2, 4)
FD_SIZE_DEFINE = re.compile(r"^FD_SIZE_([124])MB$")
TOOLS_DEF = Path("BaseTools") / "Conf" / "tools_def.template"
# Tags in the order they are preferred: GCC wherever the tree defines it (edk2-stable202502 defines
# GCC beside GCC5, with the same flags), GCC5 only in the older trees that know no GCC tag.
TOOLCHAIN_TAGS = ("GCC", "GCC5")


def parse_fd_size(text: str | int | None) -> int | None:
    """``1M``/``2M``/``4M`` (also ``2``, ``2MB``, ``2MiB``, ``FD_SIZE_2MB``) -> MiB; None stays None."""
    if text is None or text == "":
        return None
    t = str(text).strip().upper()
    m = FD_SIZE_DEFINE.match(t)
    if m:
        return int(m.group(1))
    for suffix in ("MIB", "MB", "M"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    if t.isdigit() and int(t) in FD_SIZES_MIB:
        return int(t)
    raise OvmfgenError(f"bad FD size '{text}': expected one of 1M, 2M, 4M")


def fd_size_label(mib: int) -> str:
    """``4`` -> ``4M`` (the command line's and the manifest's spelling)."""
    return f"{mib}M"


def fd_size_define(mib: int) -> str:
    """``4`` -> ``FD_SIZE_4MB`` (OvmfXen.dsc's ``-D`` switch)."""
    return f"FD_SIZE_{mib}MB"


def fd_size_kb(mib: int) -> int:
    """``4`` -> ``4096`` (the FDF's ``FD_SIZE_IN_KB``, the keys of ``elf.header_region``)."""
    return mib * 1024


def fd_size_bytes(mib: int) -> int:
    """``4`` -> the FD's length in bytes."""
    return mib * 1024 * 1024


FD_SIZES_KB = tuple(fd_size_kb(m) for m in FD_SIZES_MIB)


@dataclass(frozen=True)
class NvLayout:
    """OvmfPkg's variable store sizes for one FD size (OvmfPkgDefines.fdf.inc, VarStore.fdf.inc, the DSC's
    PcdMaxAuthVariableSize): what an emulated (RAM) store holds and what it accepts."""

    variable_size: int       # PcdFlashNvStorageVariableSize: the bytes of the store itself
    fv_length: int           # EMU_FVB_SIZE = 2 * PcdFlashNvStorageFtwSpareSize: the whole emulated FV
    max_auth_variable: int   # PcdMaxAuthVariableSize: the largest authenticated variable


#: By FD size in MiB (1 and 2 share the small layout).
NV_LAYOUTS = {1: NvLayout(0xE000, 0x20000, 0x2800), 2: NvLayout(0xE000, 0x20000, 0x2800),
              4: NvLayout(0x40000, 0x84000, 0x8400)}


def parse_target(text: str) -> str:
    """DEBUG, RELEASE or NOOPT (any case)."""
    t = str(text).strip().upper()
    if t not in TARGETS:
        raise OvmfgenError(f"bad target '{text}': expected one of {', '.join(TARGETS)}")
    return t


def toolchain_tag(tree_root: Path) -> str:
    """The GCC tool chain tag of the edk2 tree at ``tree_root``, read from its tools_def.template.

    ``GCC`` wherever the tree defines it (edk2-stable202502 defines GCC and GCC5 with the same
    flags; edk2-stable202605 dropped GCC5), ``GCC5`` only in a tree that knows no ``GCC`` tag.
    """
    path = Path(tree_root) / TOOLS_DEF
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise OvmfgenError(f"no {TOOLS_DEF} in {tree_root}: not an edk2 tree (run `invoke setup`)") from None
    return _toolchain_tag(path, stamp)


@lru_cache(maxsize=8)
def _toolchain_tag(path: Path, _stamp: int) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    for tag in TOOLCHAIN_TAGS:
        if re.search(rf"^\*_{tag}_\S*_FAMILY\s*=", text, re.M):
            return tag
    raise OvmfgenError(f"{path}: defines none of the tool chain tags {', '.join(TOOLCHAIN_TAGS)}")


def build_env(workspace: Path, basetools: Path, conf_dir: Path, packages_path: Sequence[Path] = (),
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment edksetup.sh would give a plain upstream ``build`` in ``workspace``.

    WORKSPACE, PACKAGES_PATH (only when given), EDK_TOOLS_PATH, CONF_PATH, PYTHON_COMMAND, the
    BaseTools wrappers first on PATH, and edksetup.sh's PYTHONHASHSEED. ``base`` defaults to this
    process's environment; a PACKAGES_PATH or EDK_TOOLS_BIN there would point at another tree.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ("PACKAGES_PATH", "EDK_TOOLS_BIN")}
    env.update({
        "WORKSPACE": str(workspace), "EDK_TOOLS_PATH": str(basetools), "CONF_PATH": str(conf_dir),
        "PYTHON_COMMAND": sys.executable,
        # edksetup.sh pins it: AutoGen picks each module's STACK_COOKIE_VALUE by hash(), so without it
        # every run rewrites every AutoGen.h and an incremental build recompiles everything.
        "PYTHONHASHSEED": "1",
        "PATH": f"{Path(basetools) / 'BinWrappers' / 'PosixLike'}{os.pathsep}{env.get('PATH', '')}",
    })
    if packages_path:
        env["PACKAGES_PATH"] = os.pathsep.join(str(p) for p in packages_path)
    return env
