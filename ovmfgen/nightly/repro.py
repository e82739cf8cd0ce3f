"""Reproducibility: one cell built twice from scratch from two places, and where the outputs differ.

The two builds differ in every path a build can see: the workspace (two roots of different
lengths) and ovmfgen's cache (the second build's ``OVMFGEN_CACHE`` is a linked copy of the edk2
tree's directory at a longer path, so the tree sources and BaseTools sit elsewhere too). The first
build compiles through ccache and the link cache, the second without either: the promise is the same
bytes from the same inputs, however they were built (``ovmfgen/builder/child/pathfree.py``).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovmfgen import paths
from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import plan as build_plan
from ovmfgen.request import Request
from ovmfgen.edk2 import tree as edk2_tree
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import Layout
from ovmfgen.platform.resolve import resolve
from ovmfgen.nightly.history import CELL_LOG
from ovmfgen.nightly.matrix import Cell
from ovmfgen.nightly.records import Comparison, ReproRecord
from ovmfgen.ui import say


def _tree_files(root: Path, patterns: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pattern in patterns:
        for p in root.glob(pattern):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = p
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def elf_alloc_sections(data: bytes) -> dict[str, bytes] | None:
    """The contents of an ELF64 file's allocated sections by name (None when not ELF64 LE)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx]
    names = data[strtab[4]: strtab[4] + strtab[5]]
    out = {}
    for name_off, sh_type, flags, _addr, off, size, *_ in heads:
        if flags & 0x2:  # SHF_ALLOC: what ends up in the image
            name = names[name_off: names.index(b"\0", name_off)].decode(errors="replace")
            out[name] = b"" if sh_type == 8 else data[off: off + size]  # SHT_NOBITS has no bytes
    return out


def _difference_cause(a_efi: Path, b_efi: Path) -> str:
    """Why two builds of one EFI image differ: ``pe-conversion`` when the linked ELF (``DEBUG/*.dll``)
    is the same in every allocated section, i.e. only GenFw's ELF->PE step differs (its CodeView debug
    entry holds the .dll's path, so the build path's length can move what follows), else ``compiled``."""
    name = a_efi.stem + ".dll"
    dlls = [p.parent.parent / "DEBUG" / name for p in (a_efi, b_efi)]
    try:
        a, b = (elf_alloc_sections(p.read_bytes()) for p in dlls)
    except (OSError, IndexError, ValueError):
        return "unknown"
    if a is None or b is None:
        return "unknown"
    return "pe-conversion" if a == b else "compiled"


def embedded_paths(data: bytes, roots: Mapping[str, Sequence[str]]) -> list[str]:
    """The labels of ``roots`` (label -> path spellings) whose path occurs in ``data``, sorted."""
    return sorted(label for label, spellings in roots.items()
                  if any(s and s.encode() in data for s in spellings))


def compare_build_outputs(a_out: Path, b_out: Path, a_dist: Path, b_dist: Path, limit: int = 20,
                          roots: Mapping[str, Sequence[str]] | None = None) -> Comparison:
    """Compare two builds of one variant: the published firmware, and if it differs, where.

    ``*_out`` are EDK2's BUILD_OUTPUT_BASE (``.../<TARGET>_<TOOL_CHAIN_TAG>``), ``*_dist`` the published dirs.
    Returns ``{"identical", "outputs": {name: same?}, "fvs": [...], "modules": [...], "modules_total",
    "modules_differing", "ffs_differing", "files": [...]}``: the firmware volumes (``FV/*.Fv``)
    that differ, the differing EFI images (``<ARCH>/**/OUTPUT/*.efi``, at most ``limit``, each with
    the cause ``_difference_cause`` finds, and in ``embeds`` the labels of ``roots`` whose paths
    either build's image holds, e.g. ``{"workspace": [...], "cache": [...]}``) and the differing FFS
    files (``FV/Ffs/**.ffs``).
    """
    outputs: dict[str, bool] = {}
    for name in sorted(set(os.listdir(a_dist)) & set(os.listdir(b_dist))):
        if name.endswith((".fd", ".elf")):
            outputs[name] = _same(a_dist / name, b_dist / name)
    identical = bool(outputs) and all(outputs.values())
    result: Comparison = {"identical": identical, "outputs": outputs, "fvs": [], "modules": [], "modules_total": 0,
                          "modules_differing": 0, "ffs_differing": 0, "files": []}
    if identical:
        return result

    def differing(a: dict[str, Path], b: dict[str, Path]) -> list[str]:
        return sorted(n for n in set(a) | set(b) if n not in a or n not in b or not _same(a[n], b[n]))

    result["fvs"] = differing(_tree_files(a_out / "FV", ("*.Fv", "*.fv")), _tree_files(b_out / "FV", ("*.Fv", "*.fv")))
    a_ffs, b_ffs = _tree_files(a_out, ("FV/Ffs/**/*.ffs",)), _tree_files(b_out, ("FV/Ffs/**/*.ffs",))
    ffs = differing(a_ffs, b_ffs)
    a_efi, b_efi = _tree_files(a_out, ("*/**/OUTPUT/*.efi",)), _tree_files(b_out, ("*/**/OUTPUT/*.efi",))
    efis = differing(a_efi, b_efi)
    result["modules_total"] = len(set(a_efi) | set(b_efi))
    result["modules_differing"] = len(efis)
    result["ffs_differing"] = len(ffs)
    for rel in efis[:limit]:
        both = rel in a_efi and rel in b_efi
        cause = _difference_cause(a_efi[rel], b_efi[rel]) if both else "missing"
        embeds: list[str] = []
        if both and roots:
            embeds = sorted(set(embedded_paths(a_efi[rel].read_bytes(), roots))
                            | set(embedded_paths(b_efi[rel].read_bytes(), roots)))
        result["modules"].append({"module": Path(rel).stem, "path": rel, "cause": cause, "embeds": embeds})
    result["files"] = (efis + ffs)[:limit]
    return result


def repro_detail(cmp: Comparison) -> str:
    """One line on a comparison that found differences: what, where, and the likely cause."""
    outs = [n for n, same in cmp["outputs"].items() if not same]
    fvs = ", ".join(f.rsplit(".", 1)[0] for f in cmp["fvs"]) or "none"
    mods = cmp["modules"]
    names = ", ".join(m["module"] for m in mods[:6]) + (", ..." if len(mods) > 6 else "")
    text = (f"{', '.join(outs) or 'outputs'} differ; FVs {fvs}; {cmp['modules_differing']} of "
            f"{cmp['modules_total']} EFI modules differ ({names or 'none'})")
    causes = [m["cause"] for m in mods]
    if causes and all(c == "pe-conversion" for c in causes):
        text += ("; each links to the same ELF code and data: only GenFw's ELF->PE conversion differs (its CodeView "
                 "entry names the .dll by the path GenFw was given; --zero clears the bytes, not their number)")
    elif "compiled" in causes:
        text += f"; {causes.count('compiled')} already differ as linked ELF (compiler/linker output)"
    for label in sorted({e for m in mods for e in m.get("embeds", [])}):
        n = sum(label in m.get("embeds", []) for m in mods)
        text += f"; {n} hold the {label} path (__FILE__ or a debug name)"
    return text


@contextmanager
def _cache_at(cache: Path | None) -> Iterator[None]:
    """``OVMFGEN_CACHE=cache`` for the duration (nothing when ``cache`` is None)."""
    if cache is None:
        yield
        return
    old = os.environ.get("OVMFGEN_CACHE")
    os.environ["OVMFGEN_CACHE"] = str(cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OVMFGEN_CACHE", None)
        else:
            os.environ["OVMFGEN_CACHE"] = old


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def moved_cache(edk2: str | None, cache: Path) -> Path | None:
    """A cache at ``cache`` holding the tree of ``edk2`` (its cache directory, hard-linked), or None.

    None when the tree does not live in ovmfgen's cache (``$OVMFGEN_EDK2``, the submodule): its path
    cannot move. The tree, BaseTools and identity are read-only for builds, so links are safe.
    """
    tree = edk2_tree.locate(edk2)
    try:
        rel = tree.root.parent.relative_to(paths.cache_dir())
    except ValueError:
        return None
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(paths.cache_dir() / rel, cache / rel, symlinks=True, copy_function=_link_or_copy)
    return cache


def _spellings(*dirs: Path) -> list[str]:
    """Each directory as given and resolved."""
    return sorted({str(p) for d in dirs for p in (d, d.resolve())})


@dataclass(frozen=True)
class PlacedBuild:
    """A build made at a place of its own: its plan, result and the cache it used."""

    plan: build_plan.Plan
    result: build_cmd.BuildResult
    cache: Path
    root: Path | None = None    # the checkout it was built in (build_at's ``root``); None: the repository's


def build_at(request: Request, root: Path, cache: Path | None = None) -> PlacedBuild:
    """Build ``request`` with its workspace and dist under ``root`` and (when given) ``OVMFGEN_CACHE=cache``."""
    lay = Layout(build_root=root / "build", dist_root=root / "dist")
    with _cache_at(cache):
        say(f"reproducibility: building from scratch in {display_path(lay.build_root)}"
            + (f", cache {display_path(cache)}" if cache is not None else ""))
        # The plan is decided before building: the comparison then describes the inputs this build
        # really read, even if the checkout's platform files change while it runs.
        result = build_cmd.build(resolve(request, lay))
        return PlacedBuild(result.plan, result, paths.cache_dir(), root)


def compare_placed(a: PlacedBuild, b: PlacedBuild, limit: int = 20) -> Comparison:
    """Compare two placed builds; the differing modules say which build path they hold."""
    roots = {"workspace": _spellings(a.plan.workspace, b.plan.workspace), "cache": _spellings(a.cache, b.cache)}
    return compare_build_outputs(a.plan.output_base, b.plan.output_base, a.result.dist, b.result.dist, limit, roots)


# Two roots of different lengths; the second build's cache path differs too.
FIRST_ROOT = "a"
SECOND_ROOT = "second-place-with-a-longer-path"
SECOND_CACHE = "second-cache-at-another-path"


def run_repro(cell: Cell, repro_dir: Path, threads: int | None = None, keep_workspaces: bool = False) -> ReproRecord:
    """Build ``cell`` twice with ``--clean`` from two places and compare the firmware.

    The first build is in ``build/.nightly-repro/a/`` with ovmfgen's cache and ``--ccache``; the second
    in a longer path, without ccache, with ``OVMFGEN_CACHE`` at another path (``moved_cache``). Both
    are removed afterwards unless ``keep_workspaces``.
    """
    repro_dir = Path(repro_dir).resolve()
    repro_dir.mkdir(parents=True, exist_ok=True)
    root = Layout().build_root / ".nightly-repro"
    t0 = time.monotonic()
    builds: list[dict[str, Any]] = []
    record: ReproRecord = {"cell": cell.name, "status": "failed", "builds": builds}
    try:
        placed = []
        for tag, ccache in ((FIRST_ROOT, True), (SECOND_ROOT, False)):
            cache = moved_cache(cell.edk2, root / SECOND_CACHE) if tag == SECOND_ROOT else None
            b = build_at(cell.request(jobs=threads, clean=True, ccache=ccache), root / tag, cache)
            placed.append(b)
            builds.append({"workspace": display_path(b.plan.workspace), "cache": display_path(b.cache),
                           "ccache": ccache, "seconds": round(b.result.seconds, 1)})
        cmp = compare_placed(placed[0], placed[1])
        record.update(ReproRecord(**cmp))
        record["status"] = "identical" if cmp["identical"] else "differs"
        if cmp["identical"]:
            record["detail"] = f"byte-identical: {', '.join(cmp['outputs'])}"
        else:
            record["detail"] = repro_detail(cmp)
    except OvmfgenError as exc:
        record["status"] = "error"
        record["detail"] = exc.message
    except Exception as exc:
        traceback.print_exc()
        record["status"] = "error"
        record["detail"] = f"internal error: {type(exc).__name__}: {exc}"
    finally:
        if not keep_workspaces:
            shutil.rmtree(root, ignore_errors=True)
    record["seconds"] = round(time.monotonic() - t0, 1)
    record["log"] = "repro/" + CELL_LOG
    say(f"reproducibility of {cell.name}: {record['status']} - {record.get('detail', '')}")
    return record
