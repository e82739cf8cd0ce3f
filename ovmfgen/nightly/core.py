"""``invoke nightly``: the firmware build matrix, its checks and boots, its history and report.

What one night does
-------------------
``nightly.yaml`` declares the cells (platform, target, FD size, features, boot tests). For each
selected cell, in its own process and at most ``--jobs`` at a time:

1. **build** - ``ovmfgen.build`` with the compiler cache on (one ccache directory and one BaseTools
   for every cell: both come from ovmfgen's cache). A cell whose inputs are already published is a
   no-op; its artifacts (OVMF.fd, ovmf.elf, manifest.json, build.log) are linked into the night.
2. **check-elf** (cells with a PVH ELF) - every loader rule of ``ovmfgen.elf.check_elf``.
3. **boot** - ``pvh``/``reset``: QEMU to XenPlatformPei through that entry (``boot.boot_qemu``);
   ``shell``: QEMU to the UEFI Shell from pflash with a FAT disk (``boot.boot_qemu_shell``);
   ``xen``: a real Xen PVH guest (``xen.boot_xen``; optional, slow).

One failing cell never stops the others; the exit status is the number of failed cells (capped at
100; 0 when all passed). Selection works like Fedora's edk2-build.py: ``--list``, ``--match`` and
``--exclude`` (substrings of the cell name, repeatable), ``--cell`` (an exact name, repeatable),
``--quiet`` (one status line per cell; each cell's full output is always in its ``cell.log``).
Optional cells (``optional: true``) only run when ``--match``/``--cell`` names them; cells that
``require`` a module that is not there are listed as unavailable.

Reproducibility: one cell per night (rotating through ``reproducibility.rotate`` by the date, or
``--repro CELL``) is built twice from scratch, without ccache, in two workspaces at different paths;
the night records whether the firmware outputs are byte-identical and, if not, which FV and which
FFS/EFI files differ.

History: ``<out>/<date>/summary.json`` (with ``cells/<name>/`` holding each cell's log, artifacts
and boot logs) and ``<out>/index.html`` (``ovmfgen.nightly.report``), keeping the last ``--keep`` nights.
The date is an input (``--date``, default today); it names the night and nothing else: no date or
time enters the firmware (its version string and release date come from the edk2 release).

Scale-out: ``--emit github|gitlab`` writes a CI workflow with one job per cell and a final job that
runs ``--merge`` over the cells' results, producing the same report; ``--install-root`` lays out
the installed firmware and its QEMU firmware descriptor for packagers.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ovmfgen import paths
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes, replace_dir
from ovmfgen.run import DEVNULL, PIPE, STDOUT, Process, popen, stop, wait
from ovmfgen.ui import say

SCHEMA = 1
DEFAULT_MATRIX = paths.REPO_ROOT / "nightly.yaml"
DEFAULT_OUT = paths.REPO_ROOT / "nightly"
DEFAULT_KEEP = 14
SUMMARY = "summary.json"
RESULT = "result.json"
CELL_LOG = "cell.log"
BOOT_KINDS = ("pvh", "reset", "shell", "xen")
CELL_KEYS = ("name", "platform", "target", "fd_size", "features", "defines", "boot", "description", "optional",
             "requires", "ccache", "timeout")
TOP_KEYS = ("description", "defaults", "cells", "reproducibility", "install")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_EXIT = 100


# ---------------------------------------------------------------------------------------------
# The matrix


@dataclass(frozen=True)
class Cell:
    """One matrix cell: a build variant and what is checked on it."""

    name: str
    platform: str
    target: str = "DEBUG"
    fd_size: str | None = None                 # "2M"; None: the platform's default
    features: tuple[str, ...] = ()             # NAME=VALUE feature overrides
    defines: tuple[str, ...] = ()              # NAME=VALUE extra -D
    boot: tuple[str, ...] = ()                 # pvh, reset, shell, xen
    description: str = ""
    optional: bool = False                     # only when --match/--cell names it
    requires: str | None = None                # a module that must be importable (e.g. ovmfgen.boot.xen)
    ccache: bool = True
    timeout: float | None = None               # per boot, seconds (None: the boot's default)

    def to_json(self) -> dict:
        """The cell as plain JSON data (what the cell process receives)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Cell:
        """The inverse of ``to_json``."""
        kw = dict(data)
        for key in ("features", "defines", "boot"):
            kw[key] = tuple(kw.get(key) or ())  # type: ignore[arg-type]
        return cls(**kw)  # type: ignore[arg-type]

    def available(self) -> str | None:
        """None when the cell can run here, else why not."""
        if self.requires:
            import importlib.util

            try:
                found = importlib.util.find_spec(self.requires) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"needs {self.requires}"
        return None

    def line(self) -> str:
        """``name  description [flags]`` for --list."""
        flags = []
        if self.optional:
            flags.append("optional")
        why = self.available()
        if why:
            flags.append(f"unavailable: {why}")
        text = self.description or f"{self.platform} {self.target}"
        return f"{self.name:<28} {text}" + (f" [{', '.join(flags)}]" if flags else "")


@dataclass(frozen=True)
class InstallSpec:
    """Where ``--install-root`` puts one cell's firmware and its QEMU firmware descriptor."""

    cell: str
    firmware: str | None = None    # the PVH ELF (xen-pvh), e.g. usr/lib/xen/boot/ovmf.bin
    code: str | None = None        # OVMF_CODE (flash platforms)
    vars: str | None = None        # OVMF_VARS template (flash platforms)
    descriptor: str | None = None  # e.g. usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json


@dataclass(frozen=True)
class Matrix:
    """nightly.yaml: the cells, the reproducibility rotation and the install layout."""

    path: str
    cells: tuple[Cell, ...]
    repro_rotate: tuple[str, ...] = ()
    repro_required: bool = False
    install: tuple[InstallSpec, ...] = ()
    description: str = ""

    def cell(self, name: str) -> Cell:
        """The cell called ``name``."""
        for c in self.cells:
            if c.name == name:
                return c
        raise OvmfgenError(f"no cell '{name}' in {self.path} (cells: {', '.join(c.name for c in self.cells)})")


def _str_list(value: object, what: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        return (str(value),)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return tuple(str(v) for v in value)
    raise OvmfgenError(f"{where}: {what} must be a list of text")


def _mapping(value: object, what: str, where: str, allowed: Sequence[str]) -> dict:
    if not isinstance(value, dict):
        raise OvmfgenError(f"{where}: {what} must be a mapping")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise OvmfgenError(f"{where}: unknown key '{unknown[0]}' in {what} (expected one of: {', '.join(allowed)})")
    return value


def _cell_name(platform: str, target: str, fd_size: str | None, features: Sequence[str]) -> str:
    parts = [platform, target]
    if fd_size:
        parts.append(fd_size)
    parts += [f.split("=", 1)[-1] for f in features]
    return re.sub(r"[^A-Za-z0-9._-]", "", "-".join(parts))


def parse_matrix(data: object, path: str = "nightly.yaml") -> Matrix:
    """Check and convert nightly.yaml's data (see the file itself for the format)."""
    from ovmfgen.build.request import parse_assignments, parse_fd_size, parse_target

    top = _mapping(data, "the matrix", path, TOP_KEYS)
    defaults = _mapping(top.get("defaults") or {}, "defaults", path, CELL_KEYS)
    raw_cells = top.get("cells")
    if not isinstance(raw_cells, list) or not raw_cells:
        raise OvmfgenError(f"{path}: 'cells' must be a non-empty list")
    cells: list[Cell] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_cells, 1):
        where = f"{path}: cell {i}"
        item = {**defaults, **_mapping(raw, "a cell", where, CELL_KEYS)}
        if "platform" not in item:
            raise OvmfgenError(f"{where}: missing 'platform'")
        platform = str(item["platform"])
        try:
            target = parse_target(str(item.get("target", "DEBUG")))
            size = parse_fd_size(item.get("fd_size"))
            features = _str_list(item.get("features"), "features", where)
            defines = _str_list(item.get("defines"), "defines", where)
            parse_assignments(features, "feature")
            parse_assignments(defines, "define")
        except OvmfgenError as exc:
            raise OvmfgenError(f"{where}: {exc.message}") from None
        fd_size = f"{size}M" if size else None
        name = str(item.get("name") or _cell_name(platform, target, fd_size, features))
        where = f"{path}: cell '{name}'"
        if not _NAME_RE.match(name):
            raise OvmfgenError(f"{where}: a cell name is letters, digits, '.', '_' and '-'")
        if name in seen:
            raise OvmfgenError(f"{where}: two cells are called '{name}'")
        seen.add(name)
        boot = _str_list(item.get("boot"), "boot", where)
        for b in boot:
            if b not in BOOT_KINDS:
                raise OvmfgenError(f"{where}: boot '{b}' is not one of: {', '.join(BOOT_KINDS)}")
        if target == "RELEASE" and any(b in ("pvh", "reset") for b in boot):
            raise OvmfgenError(f"{where}: a RELEASE build prints no DEBUG log, so a pvh/reset boot cannot be judged")
        timeout = item.get("timeout")
        cells.append(Cell(
            name=name, platform=platform, target=target, fd_size=fd_size, features=features, defines=defines,
            boot=boot, description=" ".join(str(item.get("description") or "").split()),
            optional=bool(item.get("optional", False)),
            requires=str(item["requires"]) if item.get("requires") else None,
            ccache=bool(item.get("ccache", True)),
            timeout=float(timeout) if timeout is not None else None,
        ))
    repro = _mapping(top.get("reproducibility") or {}, "reproducibility", path, ("rotate", "required"))
    rotate = _str_list(repro.get("rotate"), "reproducibility.rotate", path)
    for name in rotate:
        if name not in seen:
            raise OvmfgenError(f"{path}: reproducibility.rotate names no cell '{name}'")
    installs = []
    for raw in top.get("install") or []:
        spec = _mapping(raw, "an install entry", path, ("cell", "firmware", "code", "vars", "descriptor"))
        if spec.get("cell") not in seen:
            raise OvmfgenError(f"{path}: install names no cell '{spec.get('cell')}'")
        for key in ("firmware", "code", "vars", "descriptor"):
            rel = spec.get(key)
            if rel is not None and (str(rel).startswith("/") or ".." in Path(str(rel)).parts):
                raise OvmfgenError(f"{path}: install {key} must be a relative path inside the root, got '{rel}'")
        if not (spec.get("firmware") or spec.get("code")):
            raise OvmfgenError(f"{path}: install entry for '{spec['cell']}' needs 'firmware' (ELF) or 'code' (flash)")
        installs.append(InstallSpec(**{k: (str(v) if v is not None else None) for k, v in spec.items()}))
    return Matrix(path=path, cells=tuple(cells), repro_rotate=rotate, repro_required=bool(repro.get("required")),
                  install=tuple(installs), description=" ".join(str(top.get("description") or "").split()))


def load_matrix(path: str | Path = DEFAULT_MATRIX) -> Matrix:
    """Read and check a matrix file."""
    p = Path(path)
    shown = display_path(p)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OvmfgenError(f"no such matrix file: {shown}") from None
    except yaml.YAMLError as exc:
        raise OvmfgenError(f"{shown}: invalid YAML: {exc}") from None
    return parse_matrix(data, shown)


def select_cells(matrix: Matrix, match: Sequence[str] = (), exclude: Sequence[str] = (),
                 names: Sequence[str] = ()) -> list[Cell]:
    """The cells to run, in matrix order.

    ``names`` (exact) and ``match`` (substrings) select; without either every non-optional cell is
    selected. ``exclude`` (substrings) then removes. Optional cells run only when selected by name
    or pattern. Unavailable cells (a ``requires`` module missing) are never selected.
    """
    for name in names:
        matrix.cell(name)  # unknown names are errors, not silent no-ops
    out = []
    for cell in matrix.cells:
        if cell.available() is not None:
            continue
        named = cell.name in names or any(m in cell.name for m in match)
        if names or match:
            if not named:
                continue
        elif cell.optional:
            continue
        if any(x in cell.name for x in exclude):
            continue
        out.append(cell)
    return out


def list_text(matrix: Matrix) -> str:
    """What --list prints: one line per cell."""
    return "\n".join(cell.line() for cell in matrix.cells)


def parse_date(text: str | None) -> str:
    """``--date``: YYYY-MM-DD (default: today, local time)."""
    if not text:
        return _dt.date.today().isoformat()
    if not _DATE_RE.match(text):
        raise OvmfgenError(f"bad --date '{text}': expected YYYY-MM-DD")
    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        raise OvmfgenError(f"bad --date '{text}': not a calendar date") from None
    return text


def repro_cell_for(matrix: Matrix, date: str, selected: Sequence[Cell]) -> Cell | None:
    """Tonight's reproducibility cell: the rotation entry for the date's ordinal (selected cells only)."""
    names = [n for n in matrix.repro_rotate if any(c.name == n for c in selected)]
    if not names:
        return None
    return matrix.cell(names[_dt.date.fromisoformat(date).toordinal() % len(names)])


# ---------------------------------------------------------------------------------------------
# One cell (runs in its own process)


def write_public(path: Path, data: bytes) -> None:
    """Atomically write a report file readable by everyone (a web server serving the history)."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)  # dist/ files are replaced, never rewritten in place: a link is a snapshot
    except OSError:
        shutil.copy2(src, dst)


def _step(steps: list[dict], name: str, fn: Callable[[], tuple[bool, str, dict]]) -> bool:
    """Run one step, timing it; an exception is the step's failure, never the night's."""
    t0 = time.monotonic()
    say(f"step {name}")
    try:
        ok, detail, extra = fn()
    except OvmfgenError as exc:
        ok, detail, extra = False, exc.message if not exc.location else str(exc).removeprefix("error: "), {}
    except Exception as exc:  # a bug must fail the cell, not the night
        traceback.print_exc()
        ok, detail, extra = False, f"internal error: {type(exc).__name__}: {exc}", {}
    rec = {"name": name, "status": "passed" if ok else "failed", "seconds": round(time.monotonic() - t0, 1),
           "detail": detail, **extra}
    steps.append(rec)
    say(f"step {name}: {rec['status']} in {rec['seconds']} s - {detail}")
    return ok


def _rel(path: Path, base: Path) -> str:
    return path.resolve().relative_to(base.resolve()).as_posix()


def run_cell(cell: Cell, cell_dir: Path, threads: int | None = None) -> dict:
    """Build, check and boot one cell; everything it writes goes into ``cell_dir``. Returns its record.

    ``cell_dir`` is ``<night>/cells/<name>``: paths in the record are relative to the night.
    """
    from ovmfgen import elf
    from ovmfgen.boot import qemu as boot
    from ovmfgen.build import command as build_cmd
    from ovmfgen.build import layout as build_layout
    from ovmfgen.build import request as build_request

    cell_dir = Path(cell_dir).resolve()
    night = cell_dir.parent.parent
    cell_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    steps: list[dict] = []
    record: dict = {"name": cell.name, "cell": cell.to_json(), "platform": cell.platform, "target": cell.target,
                    "fd_size": cell.fd_size, "features": list(cell.features), "description": cell.description,
                    "artifacts": {}, "boot": {}, "steps": steps}
    built: dict = {}

    def do_build() -> tuple[bool, str, dict]:
        req = build_request.make_request(cell.platform, cell.target, cell.fd_size, cell.defines, cell.features,
                                         jobs=threads, ccache=cell.ccache)
        result = build_cmd.build(req)
        built["result"] = result
        manifest = result.manifest
        art = cell_dir / "artifacts"
        for name in sorted(os.listdir(result.dist)):
            if (result.dist / name).is_file():
                _link_or_copy(result.dist / name, art / name)
                record["artifacts"][name] = _rel(art / name, night)
        record["dist"] = display_path(result.dist)
        record["manifest"] = {k: manifest.get(k) for k in (
            "fd_size", "features", "defines", "version_string", "release_date", "input_hash", "edk2", "build_seconds",
            "stuart_command", "jobs", "ccache")}
        record["sizes"] = {n: o.get("size") for n, o in (manifest.get("outputs") or {}).items()
                           if n != build_layout.LOG_NAME}
        record["fv_usage"] = manifest.get("fv_usage") or {}
        record["fd_size"] = manifest.get("fd_size") or cell.fd_size
        how = "up to date (no-op)" if result.noop else f"built in {result.seconds:.0f} s"
        return True, f"{how}: {display_path(result.dist)}", {"noop": result.noop,
                                                             "build_seconds": manifest.get("build_seconds")}

    if _step(steps, "build", do_build):
        art = cell_dir / "artifacts"
        elf_path = art / build_layout.ELF_NAME
        fd_path = next((art / n for n in record["artifacts"] if n.endswith(".fd")), None)
        if elf_path.is_file():
            def do_check() -> tuple[bool, str, dict]:
                findings = elf.check_elf(elf_path.read_bytes())
                failed = [f for f in findings if not f.ok]
                detail = f"{len(findings) - len(failed)}/{len(findings)} loader rules pass" + (
                    f"; first failure {failed[0].rule}: {failed[0].detail}" if failed else "")
                return not failed, detail, {"rules": len(findings), "failed_rules": [f.rule for f in failed]}

            _step(steps, "check-elf", do_check)
        for kind in cell.boot:
            if kind in ("pvh", "reset"):
                def do_boot(entry: str = kind) -> tuple[bool, str, dict]:
                    if not elf_path.is_file():
                        raise OvmfgenError("the build published no ovmf.elf to boot")
                    kw = {"timeout": cell.timeout} if cell.timeout else {}
                    r = boot.boot_qemu(elf_path, entry, cell_dir, **kw)
                    rec = {"verdict": r.verdict.value, "seconds": round(r.duration or 0, 1),
                           "log": _rel(r.log_path, night) if r.log_path else None, "detail": r.detail}
                    record["boot"][entry] = {**rec, "ok": r.ok}
                    return r.ok, f"{r.verdict.value} in {r.duration or 0:.1f} s - {r.detail}", {"verdict": r.verdict.value}
                _step(steps, f"boot-{kind}", do_boot)
            elif kind == "shell":
                def do_shell() -> tuple[bool, str, dict]:
                    if fd_path is None:
                        raise OvmfgenError("the build published no .fd to boot")
                    kw = {"timeout": cell.timeout} if cell.timeout else {}
                    r = boot.boot_qemu_shell(fd_path, cell_dir, **kw)
                    # The split pflash images are inputs of the boot; keep them as artifacts too.
                    for name in ("OVMF_CODE.fd", "OVMF_VARS.fd"):
                        record["artifacts"][name] = _rel(cell_dir / name, night)
                    record["boot"]["shell"] = {"verdict": r.verdict, "ok": r.ok, "seconds": r.duration,
                                               "log": _rel(r.serial_log, night),
                                               "debug_log": _rel(r.debug_log, night), "detail": r.detail}
                    return r.ok, f"{r.verdict} in {r.duration:.1f} s - {r.detail}", {"verdict": r.verdict}
                _step(steps, "boot-shell", do_shell)
            elif kind == "xen":
                def do_xen() -> tuple[bool, str, dict]:
                    from ovmfgen.boot import xen

                    if not elf_path.is_file():
                        raise OvmfgenError("the build published no ovmf.elf to boot")
                    kw = {"timeout": cell.timeout} if cell.timeout else {}
                    r = xen.boot_xen(elf_path, cell_dir / "xen", **kw)
                    record["boot"]["xen"] = {
                        "verdict": str(r.verdict), "ok": r.ok, "seconds": r.qemu_seconds,
                        "log": _rel(r.serial_log, night) if r.serial_log else None, "detail": r.detail}
                    return r.ok, xen.format_result(r), {"verdict": str(r.verdict)}
                _step(steps, "boot-xen", do_xen)
    failed = [s["name"] for s in steps if s["status"] != "passed"]
    record["status"] = "failed" if failed else "passed"
    record["failed_steps"] = failed
    record["error"] = next((s["detail"] for s in steps if s["status"] != "passed"), None)
    record["seconds"] = round(time.monotonic() - t0, 1)
    record["log"] = _rel(cell_dir / CELL_LOG, night)
    return record


# ---------------------------------------------------------------------------------------------
# Reproducibility: one cell, twice from scratch, in two workspace paths


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
    import struct

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


def compare_build_outputs(a_out: Path, b_out: Path, a_dist: Path, b_dist: Path, limit: int = 20) -> dict:
    """Compare two builds of one variant: the published firmware, and if it differs, where.

    ``*_out`` are EDK2's BUILD_OUTPUT_BASE (``.../<TARGET>_GCC5``), ``*_dist`` the published dirs.
    Returns ``{"identical", "outputs": {name: same?}, "fvs": [...], "modules": [...], "modules_total",
    "modules_differing", "ffs_differing", "files": [...]}``: the firmware volumes (``FV/*.Fv``)
    that differ, the differing EFI images (``<ARCH>/**/OUTPUT/*.efi``, at most ``limit``, each with
    the cause ``_difference_cause`` finds) and the differing FFS files (``FV/Ffs/**.ffs``).
    """
    outputs = {}
    for name in sorted(set(os.listdir(a_dist)) & set(os.listdir(b_dist))):
        if name.endswith((".fd", ".elf")):
            outputs[name] = _same(a_dist / name, b_dist / name)
    identical = bool(outputs) and all(outputs.values())
    result: dict = {"identical": identical, "outputs": outputs, "fvs": [], "modules": [], "modules_total": 0,
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
        cause = _difference_cause(a_efi[rel], b_efi[rel]) if rel in a_efi and rel in b_efi else "missing"
        result["modules"].append({"module": Path(rel).stem, "path": rel, "cause": cause})
    result["files"] = (efis + ffs)[:limit]
    return result


def repro_detail(cmp: Mapping[str, object]) -> str:
    """One line on a comparison that found differences: what, where, and the likely cause."""
    outs = [n for n, same in (cmp.get("outputs") or {}).items() if not same]  # type: ignore[union-attr]
    fvs = ", ".join(str(f).rsplit(".", 1)[0] for f in cmp.get("fvs") or []) or "none"  # type: ignore[union-attr]
    mods = cmp.get("modules") or []
    names = ", ".join(str(m["module"]) for m in mods[:6]) + (", ..." if len(mods) > 6 else "")  # type: ignore[index]
    text = (f"{', '.join(outs) or 'outputs'} differ; FVs {fvs}; {cmp.get('modules_differing')} of "
            f"{cmp.get('modules_total')} EFI modules differ ({names or 'none'})")
    causes = [m["cause"] for m in mods]  # type: ignore[index]
    if causes and all(c == "pe-conversion" for c in causes):
        text += ("; each links to the same ELF code and data: only GenFw's ELF->PE conversion differs (it reserves "
                 "room for a CodeView entry holding the .dll's path, zeroed by --zero but sized by the build path)")
    elif "compiled" in causes:
        text += f"; {causes.count('compiled')} already differ as linked ELF (compiler/linker output)"
    return text


def run_repro(cell: Cell, repro_dir: Path, threads: int | None = None, keep_workspaces: bool = False) -> dict:
    """Build ``cell`` twice with ``--clean`` and no ccache in two workspace paths; compare.

    The workspaces live under ``build/.nightly-repro/`` (same file system as the normal ones) at
    paths of different lengths, and are removed afterwards unless ``keep_workspaces``.
    """
    from ovmfgen.build import command as build_cmd
    from ovmfgen.build import layout as build_layout
    from ovmfgen.build import plan as build_plan
    from ovmfgen.build import request as build_request

    repro_dir = Path(repro_dir).resolve()
    repro_dir.mkdir(parents=True, exist_ok=True)
    root = paths.BUILD_DIR / ".nightly-repro"
    t0 = time.monotonic()
    record: dict = {"cell": cell.name, "status": "failed", "builds": []}
    try:
        outs = []
        for tag in ("a", "second-path"):
            lay = build_layout.Layout(build_root=root / tag / "build", dist_root=root / tag / "dist")
            req = build_request.make_request(cell.platform, cell.target, cell.fd_size, cell.defines, cell.features,
                                             jobs=threads, clean=True, ccache=False)
            say(f"reproducibility: building {cell.name} from scratch in {display_path(lay.build_root)}")
            result = build_cmd.build(req, lay)
            plan = build_plan.plan(req, lay)
            outs.append((plan.output_base, result.dist))
            record["builds"].append({"workspace": display_path(plan.workspace), "seconds": round(result.seconds, 1)})
        cmp = compare_build_outputs(outs[0][0], outs[1][0], outs[0][1], outs[1][1])
        record.update(cmp)
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


# ---------------------------------------------------------------------------------------------
# Running the matrix: one process per cell, at most ``jobs`` at a time


@dataclass
class _Job:
    """A cell (or the reproducibility check) running in its own process."""

    label: str
    argv: list[str]
    out_dir: Path
    proc: Process[str] | None = None
    reader: threading.Thread | None = None
    started: float = 0.0


def _child_argv(kind: str, cell: Cell, out_dir: Path, threads: int | None) -> list[str]:
    argv = [sys.executable, "-m", "ovmfgen.nightly.core", kind, "--spec", json.dumps(cell.to_json(), sort_keys=True),
            "--dir", str(out_dir)]
    if threads:
        argv += ["--threads", str(threads)]
    return argv


def _pump(job: _Job, quiet: bool, lock: threading.Lock) -> None:
    """Copy a child's output to its log (and, unless quiet, to stderr prefixed with the cell)."""
    assert job.proc is not None and job.proc.stdout is not None
    with open(job.out_dir / CELL_LOG, "a", encoding="utf-8", errors="replace") as log:
        for line in job.proc.stdout:
            log.write(line)
            log.flush()
            if not quiet:
                with lock:
                    sys.stderr.write(f"[{job.label}] {line}")
                    sys.stderr.flush()


def _failed_record(job: _Job, why: str) -> dict:
    tail = ""
    try:
        tail = "\n".join((job.out_dir / CELL_LOG).read_text(errors="replace").splitlines()[-5:])
    except OSError:
        pass
    return {"name": job.label, "status": "failed", "error": why + (f"; log tail: {tail}" if tail else ""),
            "steps": [], "failed_steps": ["process"], "seconds": round(time.monotonic() - job.started, 1)}


def run_jobs(jobs: Sequence[_Job], parallel: int, quiet: bool,
             on_done: Callable[[_Job, dict], None] | None = None) -> dict[str, dict]:
    """Run the jobs' processes, ``parallel`` at a time; every job yields a record (a crash too)."""
    pending = list(jobs)
    running: list[_Job] = []
    results: dict[str, dict] = {}
    lock = threading.Lock()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        while pending or running:
            while pending and len(running) < max(1, parallel):
                job = pending.pop(0)
                job.out_dir.mkdir(parents=True, exist_ok=True)
                (job.out_dir / RESULT).unlink(missing_ok=True)
                (job.out_dir / CELL_LOG).write_text("", encoding="utf-8")
                job.started = time.monotonic()
                job.proc = popen(job.argv, cwd=paths.REPO_ROOT, env=env, stdin=DEVNULL,
                                 stdout=PIPE, stderr=STDOUT, errors="replace", bufsize=1)
                job.reader = threading.Thread(target=_pump, args=(job, quiet, lock), daemon=True)
                job.reader.start()
                running.append(job)
            for job in list(running):
                assert job.proc is not None
                if job.proc.poll() is None:
                    continue
                running.remove(job)
                if job.reader is not None:
                    job.reader.join()
                try:
                    record = json.loads((job.out_dir / RESULT).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    record = _failed_record(job, f"the cell process exited with status {job.proc.returncode} "
                                                 f"without a result")
                results[job.label] = record
                if on_done is not None:
                    on_done(job, record)
            time.sleep(0.2)
    except BaseException:
        # SIGINT, not SIGTERM: a cell's build then stops its stuart child and releases the workspace.
        for job in running:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
        for job in running:
            if job.proc is not None:
                if wait(job.proc, 30) is None:
                    stop(job.proc, signals=(signal.SIGKILL,))
        raise
    return results


def status_line(record: Mapping[str, object]) -> str:
    """One line for a finished cell: status, time, and each step's outcome."""
    parts = []
    for step in record.get("steps") or []:  # type: ignore[union-attr]
        mark = "ok" if step["status"] == "passed" else "FAILED"
        extra = " (no-op)" if step.get("noop") else ""
        parts.append(f"{step['name']} {mark}{extra}")
    line = f"{record.get('name')}: {str(record.get('status')).upper()} in {record.get('seconds', 0):.0f} s"
    if parts:
        line += " [" + ", ".join(parts) + "]"
    if record.get("status") != "passed" and record.get("error"):
        line += f" - {str(record['error']).splitlines()[0][:200]}"
    return line


# ---------------------------------------------------------------------------------------------
# Summaries, merge, history


def totals(cells: Sequence[Mapping[str, object]]) -> dict:
    """Counts of a night's cells by status."""
    passed = sum(1 for c in cells if c.get("status") == "passed")
    return {"cells": len(cells), "passed": passed, "failed": len(cells) - passed}


def make_summary(date: str, cells: Sequence[dict], repro: dict | None, matrix: str, jobs: int, seconds: float,
                 repro_required: bool = False) -> dict:
    """The night's summary.json content."""
    edk2 = next((c.get("manifest", {}).get("edk2") for c in cells if c.get("manifest")), None)
    return {
        "schema": SCHEMA,
        "date": date,
        "matrix": matrix,
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "seconds": round(seconds, 1),
        "edk2": edk2,
        "cells": sorted(cells, key=lambda c: str(c.get("name"))),
        "repro": repro,
        "repro_required": repro_required,
        "totals": totals(cells),
    }


def failures(summary: Mapping[str, object]) -> list[str]:
    """Names of what failed in a night: its failed cells, and the reproducibility check when required."""
    out = [str(c.get("name")) for c in summary.get("cells") or [] if c.get("status") != "passed"]  # type: ignore[union-attr]
    repro = summary.get("repro")
    if summary.get("repro_required") and isinstance(repro, dict) and repro.get("status") != "identical":
        out.append(f"reproducibility ({repro.get('cell')})")
    return out


def write_summary(night: Path, summary: Mapping[str, object]) -> Path:
    """Write ``<night>/summary.json`` atomically."""
    path = night / SUMMARY
    write_public(path, (json.dumps(summary, indent=2, sort_keys=False) + "\n").encode())
    return path


def night_dirs(out: Path) -> list[Path]:
    """The nights kept in ``out`` (``YYYY-MM-DD`` dirs holding a summary), oldest first."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and _DATE_RE.match(p.name) and (p / SUMMARY).is_file())


def prune_history(out: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` nights; returns the removed dirs."""
    if keep < 1:
        raise OvmfgenError(f"bad --keep {keep}: keep at least one night")
    nights = night_dirs(out)
    removed = nights[:-keep] if len(nights) > keep else []
    for night in removed:
        shutil.rmtree(night)
    return removed


def read_summaries(out: Path) -> list[dict]:
    """Every kept night's summary, oldest first."""
    out_list = []
    for night in night_dirs(out):
        try:
            out_list.append(json.loads((night / SUMMARY).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            say(f"skipping {display_path(night / SUMMARY)}: {exc}")
    return out_list


def find_summaries(inputs: Sequence[str | Path]) -> list[Path]:
    """summary.json files named by ``inputs``: a file, a night dir, or any dir searched below."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_file() and p.name == SUMMARY:
            found.append(p)
        elif (p / SUMMARY).is_file():
            found.append(p / SUMMARY)
        elif p.is_dir():
            hits = sorted(p.rglob(SUMMARY))
            if not hits:
                raise OvmfgenError(f"no {SUMMARY} under {display_path(p)}")
            found.extend(hits)
        else:
            raise OvmfgenError(f"nothing to merge at {display_path(p)}")
    return found


def merge(inputs: Sequence[str | Path], out: Path, date: str | None = None, keep: int = DEFAULT_KEEP) -> dict:
    """Merge nights (e.g. one per CI job, each with one cell) into ``out/<date>/`` and refresh the report.

    Cells are copied with their directories (logs, artifacts, boot logs); when two inputs have a
    cell of the same name the later input wins. The inputs must agree on the date unless ``date``
    is given.
    """
    from ovmfgen.nightly import report

    summaries = find_summaries(inputs)
    loaded = []
    for path in summaries:
        try:
            loaded.append((path.parent, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise OvmfgenError(f"cannot read {display_path(path)}: {exc}") from None
    dates = sorted({str(s.get("date")) for _, s in loaded})
    if date is None:
        if len(dates) != 1:
            raise OvmfgenError(f"the inputs are from different nights ({', '.join(dates)}): pass --date")
        date = dates[0]
    date = parse_date(date)
    out = Path(out)
    staging = out / f".{date}.merge-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "cells").mkdir(parents=True)
    cells: dict[str, dict] = {}
    repro = None
    jobs = 0
    seconds = 0.0
    matrix = ""
    required = False
    for night, summary in loaded:
        for cell in summary.get("cells") or []:
            name = str(cell.get("name"))
            src = night / "cells" / name
            dst = staging / "cells" / name
            if name in cells:
                say(f"merge: cell {name} appears twice; keeping the one from {display_path(night)}")
                shutil.rmtree(dst, ignore_errors=True)
            if src.is_dir():
                shutil.copytree(src, dst, copy_function=_copy_or_link)
            cells[name] = cell
        if summary.get("repro"):
            repro = summary["repro"]
            if (night / "repro").is_dir():
                shutil.rmtree(staging / "repro", ignore_errors=True)
                shutil.copytree(night / "repro", staging / "repro")
        jobs += int(summary.get("jobs") or 0)
        seconds = max(seconds, float(summary.get("seconds") or 0))
        matrix = matrix or str(summary.get("matrix") or "")
        required = required or bool(summary.get("repro_required"))
    merged = make_summary(date, list(cells.values()), repro, matrix, jobs, seconds, required)
    merged["merged_from"] = len(loaded)
    write_summary(staging, merged)
    replace_dir(staging, out / date)
    prune_history(out, keep)
    report.write_index(out)
    return merged


def _copy_or_link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---------------------------------------------------------------------------------------------
# Install layout for packagers


def firmware_descriptor(kind: str, description: str, paths_abs: Mapping[str, str], cell: Mapping[str, object],
                        edk2_tag: str | None = None) -> dict:
    """A QEMU firmware descriptor (docs/interop/firmware.json in QEMU) for an installed image.

    ``kind`` is ``kernel`` (the PVH ELF: QEMU ``-kernel``; Xen ``xl`` ``type='pvh'`` +
    ``kernel=``) or ``flash`` (OVMF_CODE + OVMF_VARS template). ``interface-types`` is ``uefi``
    in both cases: that is what the guest sees, on Xen and QEMU alike. ``features`` carries
    ``verbose-dynamic`` for DEBUG builds whose log goes to the debug console (port 0x402), which is
    exactly what that feature means; ``tags`` (ignored by management software) say what was built.
    """
    features = dict(f.split("=", 1) for f in cell.get("features") or [] if "=" in str(f))  # type: ignore[union-attr]
    manifest = cell.get("manifest") or {}
    feats = (manifest.get("features") if isinstance(manifest, dict) else None) or features
    target = str(cell.get("target"))
    verbose = target != "RELEASE" and feats.get("debug_output", "debugcon") == "debugcon"
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


def install(summary: Mapping[str, object], night: Path, root: Path, specs: Sequence[InstallSpec]) -> list[Path]:
    """Lay out the passing cells' firmware under ``root`` as packagers install it (see ``InstallSpec``).

    The xen-pvh ELF goes to ``usr/lib/xen/boot/ovmf.bin`` in the shipped nightly.yaml: upstream
    Xen's XENFIRMWAREDIR (``$(libexecdir)/xen/boot``), where Xen's own build installs the OVMF it
    builds (``tools/firmware``: ``ovmf.bin``) and where libxl's OVMF_PATH points unless configured
    ``--with-system-ovmf``. Using Xen's name and place means a Xen built without its own OVMF finds
    ours, and xl PVH configs can say ``kernel='/usr/lib/xen/boot/ovmf.bin'``. Not /usr/share/ovmf:
    that is Debian's ovmf package's (a QEMU-flavoured OVMF.fd), which we must not shadow.
    Descriptors go to ``usr/share/qemu/firmware/`` (QEMU's distro directory for firmware JSON).
    """
    cells = {str(c.get("name")): c for c in summary.get("cells") or []}  # type: ignore[union-attr]
    written: list[Path] = []
    edk2 = summary.get("edk2") if isinstance(summary.get("edk2"), dict) else {}
    for spec in specs:
        cell = cells.get(spec.cell)
        if cell is None:
            say(f"install: cell {spec.cell} was not run tonight; skipped")
            continue
        if cell.get("status") != "passed":
            say(f"install: cell {spec.cell} failed; not installing it")
            continue
        arts = cell.get("artifacts") or {}
        if spec.firmware:
            src = night / arts.get("ovmf.elf", "")
            if not arts.get("ovmf.elf") or not src.is_file():
                raise OvmfgenError(f"install: cell {spec.cell} has no ovmf.elf to install as {spec.firmware}")
            files = {"firmware": (spec.firmware, src)}
            kind = "kernel"
        else:
            code = arts.get("OVMF_CODE.fd")
            vars_ = arts.get("OVMF_VARS.fd")
            if not (code and vars_):
                from ovmfgen.boot.qemu import split_unified_fd

                fd_rel = arts.get("OVMF.fd")
                if not fd_rel:
                    raise OvmfgenError(f"install: cell {spec.cell} has no OVMF.fd to install")
                v, c = split_unified_fd((night / fd_rel).read_bytes())
                tmp = night / "cells" / spec.cell
                (tmp / "OVMF_CODE.fd").write_bytes(c)
                (tmp / "OVMF_VARS.fd").write_bytes(v)
                code, vars_ = f"cells/{spec.cell}/OVMF_CODE.fd", f"cells/{spec.cell}/OVMF_VARS.fd"
            if not spec.vars:
                raise OvmfgenError(f"install: the entry for {spec.cell} needs 'vars' with 'code'")
            files = {"code": (spec.code, night / code), "vars": (spec.vars, night / vars_)}
            kind = "flash"
        abs_paths = {}
        for key, (rel, src) in files.items():
            dst = root / rel  # type: ignore[operator]
            write_public(dst, src.read_bytes())
            written.append(dst)
            abs_paths[key] = "/" + str(rel)
        if spec.descriptor:
            desc = firmware_descriptor(
                kind, f"{cell.get('description') or spec.cell} (ovmfgen nightly {summary.get('date')})",
                abs_paths, cell, (edk2 or {}).get("tag"))
            dst = root / spec.descriptor
            write_public(dst, (json.dumps(desc, indent=4) + "\n").encode())
            written.append(dst)
    for p in written:
        say(f"installed {p}")
    return written


# ---------------------------------------------------------------------------------------------
# Scale-out: CI workflows


EMIT_PATHS = {"github": ".github/workflows/ovmfgen-nightly.yml", "gitlab": ".gitlab/ovmfgen-nightly.yml"}


def _job_id(name: str) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]", "-", name).lower()


class _WorkflowDumper(yaml.SafeDumper):
    """Block style, no anchors/aliases (CI engines differ in support), lists indented under keys.

    Every value is a string; without implicit resolvers ``"120"`` is written plain (an int to the CI
    engine's YAML reader) and ``on`` is not quoted.
    """

    yaml_implicit_resolvers: dict = {}

    def ignore_aliases(self, data: object) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> object:
        return super().increase_indent(flow, False)


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_WorkflowDumper, sort_keys=False, default_flow_style=False, width=1000)


def github_workflow(matrix: Matrix, cells: Sequence[Cell], matrix_path: str = "nightly.yaml") -> str:
    """A GitHub Actions workflow: one job per cell, one for reproducibility, one merging the report."""
    setup = [
        {"uses": "actions/checkout@v4"},
        {"name": "Tools", "run": "apt-get update && apt-get install -y --no-install-recommends "
                                 "python3 python3-venv python3-pip git ca-certificates"},
        {"name": "ovmfgen", "run": "python3 -m venv /opt/venv && /opt/venv/bin/pip install -e . && "
                                   "echo /opt/venv/bin >> \"$GITHUB_PATH\""},
        {"name": "edk2 tree and BaseTools", "uses": "actions/cache@v4",
         "with": {"path": "~/.cache/ovmfgen/edk2", "key": "edk2-${{ hashFiles('ovmfgen/edk2/tree.py', 'ovmfgen/host/setup.py') }}"}},
        {"name": "Setup (edk2, BaseTools, apt packages)", "run": "invoke setup"},
        {"name": "Compiler cache", "uses": "actions/cache@v4",
         "with": {"path": "~/.cache/ovmfgen/ccache", "key": "ccache-${{ github.job }}-${{ github.run_id }}",
                  "restore-keys": "ccache-${{ github.job }}-"}},
    ]
    container = {"image": "debian:bookworm"}
    jobs: dict[str, object] = {
        "date": {"runs-on": "ubuntu-latest", "outputs": {"date": "${{ steps.d.outputs.date }}"},
                 "steps": [{"id": "d", "run": "echo \"date=$(date -u +%F)\" >> \"$GITHUB_OUTPUT\""}]},
    }
    cell_jobs = []
    for cell in cells:
        jid = _job_id(cell.name)
        cell_jobs.append(jid)
        jobs[jid] = {
            "name": cell.name, "needs": "date", "runs-on": "ubuntu-latest", "container": container,
            "timeout-minutes": "120",
            "steps": [*setup,
                      {"name": f"nightly cell {cell.name}",
                       "run": f"invoke nightly --matrix {matrix_path} --cell {cell.name} --repro none --quiet "
                              "--date ${{ needs.date.outputs.date }} --out out"},
                      {"if": "always()", "uses": "actions/upload-artifact@v4",
                       "with": {"name": f"nightly-{cell.name}", "path": "out/"}}],
        }
    if matrix.repro_rotate:
        cell_jobs.append("reproducibility")
        jobs["reproducibility"] = {
            "needs": "date", "runs-on": "ubuntu-latest", "container": container, "timeout-minutes": "180",
            "steps": [*setup[:5],
                      {"name": "build one cell twice from scratch",
                       "run": f"invoke nightly --matrix {matrix_path} --repro-only --quiet "
                              "--date ${{ needs.date.outputs.date }} --out out"},
                      {"if": "always()", "uses": "actions/upload-artifact@v4",
                       "with": {"name": "nightly-reproducibility", "path": "out/"}}],
        }
    jobs["report"] = {
        "needs": ["date", *cell_jobs], "if": "always()", "runs-on": "ubuntu-latest", "container": container,
        "steps": [
            setup[0], setup[1], setup[2],
            {"name": "History", "uses": "actions/cache@v4",
             "with": {"path": "nightly", "key": "nightly-history-${{ github.run_id }}",
                      "restore-keys": "nightly-history-"}},
            {"uses": "actions/download-artifact@v4", "with": {"pattern": "nightly-*", "path": "cells"}},
            {"name": "merge", "run": "invoke nightly --merge cells --out nightly"},
            {"uses": "actions/upload-artifact@v4", "with": {"name": "nightly-report", "path": "nightly/"}},
        ],
    }
    doc = {"name": "ovmfgen nightly", "on": {"schedule": [{"cron": "17 2 * * *"}], "workflow_dispatch": {}},
           "jobs": jobs}
    return ("# Generated by `invoke nightly --emit github` from " + matrix_path + ": one job per matrix cell,\n"
            "# then `invoke nightly --merge` builds the same report as a local run. Regenerate, do not edit.\n"
            + _dump(doc))


def gitlab_pipeline(matrix: Matrix, cells: Sequence[Cell], matrix_path: str = "nightly.yaml") -> str:
    """A GitLab CI pipeline (include it from .gitlab-ci.yml): one job per cell, then the merge."""
    base = {
        "image": "debian:bookworm",
        "before_script": [
            "apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git "
            "ca-certificates",
            "python3 -m venv /opt/venv && /opt/venv/bin/pip install -e . && export PATH=/opt/venv/bin:$PATH",
            "invoke setup",
            # One date for every job of the pipeline, even one that runs past midnight.
            "export NIGHTLY_DATE=${NIGHTLY_DATE:-${CI_PIPELINE_CREATED_AT%%T*}}",
        ],
        "cache": {"key": "ovmfgen-$CI_JOB_NAME", "paths": [".cache-ovmfgen/ccache/", ".cache-ovmfgen/edk2/"]},
        "variables": {"OVMFGEN_CACHE": "$CI_PROJECT_DIR/.cache-ovmfgen"},
        "rules": [{"if": "$CI_PIPELINE_SOURCE == \"schedule\""}, {"if": "$CI_PIPELINE_SOURCE == \"web\""}],
    }
    doc: dict[str, object] = {"stages": ["cells", "report"], ".ovmfgen-nightly": base}
    for cell in cells:
        doc[_job_id(cell.name)] = {
            "extends": ".ovmfgen-nightly", "stage": "cells",
            "script": [f"invoke nightly --matrix {matrix_path} --cell {cell.name} --repro none --quiet "
                       "--date $NIGHTLY_DATE --out out/" + cell.name],
            "artifacts": {"when": "always", "paths": [f"out/{cell.name}/"]},
        }
    if matrix.repro_rotate:
        doc["reproducibility"] = {
            "extends": ".ovmfgen-nightly", "stage": "cells",
            "script": [f"invoke nightly --matrix {matrix_path} --repro-only --quiet --date $NIGHTLY_DATE "
                       "--out out/reproducibility"],
            "artifacts": {"when": "always", "paths": ["out/reproducibility/"]},
        }
    doc["report"] = {
        "extends": ".ovmfgen-nightly", "stage": "report",
        "rules": [{"if": rule["if"], "when": "always"} for rule in base["rules"]],  # type: ignore[index]
        "before_script": base["before_script"][:2],  # type: ignore[index]
        "cache": {"key": "nightly-history", "paths": ["nightly/"]},
        "script": ["invoke nightly --merge out --out nightly"],
        "artifacts": {"when": "always", "paths": ["nightly/"]},
    }
    return ("# Generated by `invoke nightly --emit gitlab` from " + matrix_path + ". Include it from .gitlab-ci.yml\n"
            "# (include: local: .gitlab/ovmfgen-nightly.yml) and run it from a pipeline schedule.\n"
            "# Regenerate, do not edit.\n" + _dump(doc))


def emit(kind: str, matrix: Matrix, cells: Sequence[Cell], dest: Path | None = None) -> Path:
    """Write the CI workflow for ``kind`` (github or gitlab); returns its path."""
    if kind not in EMIT_PATHS:
        raise OvmfgenError(f"bad --emit '{kind}': expected one of {', '.join(EMIT_PATHS)}")
    matrix_path = matrix.path
    text = github_workflow(matrix, cells, matrix_path) if kind == "github" else gitlab_pipeline(matrix, cells,
                                                                                              matrix_path)
    path = dest or paths.REPO_ROOT / EMIT_PATHS[kind]
    atomic_write_bytes(path, text.encode())
    say(f"wrote {display_path(path)} ({len(cells)} cell jobs)")
    return path


# ---------------------------------------------------------------------------------------------
# The command


class NightlyFailed(OvmfgenError):
    """Some cells failed: the exit status is how many (capped)."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.exit_code = max(1, min(count, MAX_EXIT))


@dataclass(frozen=True)
class Options:
    """What ``invoke nightly`` was asked (beyond selection)."""

    out: Path = DEFAULT_OUT
    date: str = ""
    jobs: int = 1
    threads: int | None = None
    quiet: bool = False
    keep: int = DEFAULT_KEEP
    repro: str = "auto"          # auto (the rotation), none, or a cell name
    repro_only: bool = False
    install_root: Path | None = None


def default_jobs() -> int:
    """Cells at once by default: one per two CPUs (an EDK2 build keeps about two busy)."""
    return max(1, (os.cpu_count() or 1) // 2)


def run_night(matrix: Matrix, cells: Sequence[Cell], opts: Options) -> dict:
    """Run ``cells`` (and tonight's reproducibility check) into ``opts.out/<date>/``; refresh the report."""
    from ovmfgen.nightly import report

    date = parse_date(opts.date)
    out = Path(opts.out).resolve()
    jobs = max(1, opts.jobs)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // jobs)
    repro_cell: Cell | None = None
    if opts.repro == "auto":
        repro_cell = repro_cell_for(matrix, date, list(cells) if not opts.repro_only else list(matrix.cells))
    elif opts.repro not in ("none", ""):
        repro_cell = matrix.cell(opts.repro)
    if opts.repro_only:
        cells = []
        if repro_cell is None:
            raise OvmfgenError("--repro-only, but there is no reproducibility cell (rotation empty or --repro none)")
    if not cells and repro_cell is None:
        raise OvmfgenError("no cells selected (see --list)")
    staging = out / f".{date}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "cells").mkdir(parents=True)
    t0 = time.monotonic()
    job_list = [_Job(c.name, _child_argv("cell", c, staging / "cells" / c.name, threads), staging / "cells" / c.name)
                for c in cells]
    if repro_cell is not None:
        job_list.append(_Job("reproducibility", _child_argv("repro", repro_cell, staging / "repro", threads),
                             staging / "repro"))
    what = f"{len(cells)} cell(s)" + (f" + reproducibility of {repro_cell.name}" if repro_cell else "")
    say(f"nightly {date}: {what}, {jobs} at a time, {threads} build thread(s) each; while running, logs are in "
        f"{display_path(staging)}/cells/<cell>/cell.log (then {display_path(out / date)}/)")
    done = [0]

    def on_done(job: _Job, record: dict) -> None:
        done[0] += 1
        if job.label == "reproducibility":
            say(f"[{done[0]}/{len(job_list)}] reproducibility of {record.get('cell')}: "
                f"{record.get('status')} - {record.get('detail', '')}")
        else:
            say(f"[{done[0]}/{len(job_list)}] {status_line(record)}")

    results = run_jobs(job_list, jobs, opts.quiet, on_done)
    repro = results.pop("reproducibility", None)
    if repro is not None and "cell" not in repro:
        repro = {"cell": repro_cell.name if repro_cell else None, "status": "error",
                 "detail": repro.get("error", "the reproducibility process failed"), "log": "repro/" + CELL_LOG}
    summary = make_summary(date, list(results.values()), repro, display_path(matrix.path), jobs,
                           time.monotonic() - t0, matrix.repro_required)
    write_summary(staging, summary)
    replace_dir(staging, out / date)
    removed = prune_history(out, opts.keep)
    index = report.write_index(out)
    if removed:
        say(f"pruned {len(removed)} old night(s): {', '.join(p.name for p in removed)}")
    t = summary["totals"]
    say(f"nightly {date}: {t['passed']}/{t['cells']} cells passed in {summary['seconds']:.0f} s; "
        f"report {display_path(index)}")
    if opts.install_root is not None:
        install(summary, out / date, Path(opts.install_root), matrix.install)
    return summary


def nightly_command(matrix: str | None = None, jobs: int | str | None = None, out: str | None = None,
                    match: Sequence[str] = (), exclude: Sequence[str] = (), cell: Sequence[str] = (),
                    list_cells: bool = False, quiet: bool = False, date: str | None = None, keep: int | str = DEFAULT_KEEP,
                    repro: str = "auto", repro_only: bool = False, install_root: str | None = None,
                    emit_kind: str | None = None, merge_dirs: Sequence[str] = (), threads: int | str | None = None) -> dict | None:
    """``invoke nightly``: run the matrix (or --list, --emit, --merge); raise NightlyFailed on failures."""
    out_dir = Path(out) if out else DEFAULT_OUT
    try:
        keep_n = int(keep)
    except (TypeError, ValueError):
        raise OvmfgenError(f"bad --keep '{keep}': expected a number") from None
    if merge_dirs:
        summary = merge(merge_dirs, out_dir, date, keep_n)
        if install_root:
            m = load_matrix(matrix or DEFAULT_MATRIX)
            install(summary, out_dir / summary["date"], Path(install_root), m.install)
        _print_night(summary)
        _raise_on_failures(summary)
        return summary
    m = load_matrix(matrix or DEFAULT_MATRIX)
    if list_cells:
        print(list_text(m), flush=True)
        return None
    selected = select_cells(m, match, exclude, cell)
    if emit_kind:
        emit(emit_kind, m, [c for c in selected])
        return None
    try:
        n_jobs = int(jobs) if jobs not in (None, "") else default_jobs()
        n_threads = int(threads) if threads not in (None, "") else None
    except (TypeError, ValueError):
        raise OvmfgenError(f"bad --jobs/--threads '{jobs}/{threads}': expected numbers") from None
    if n_jobs < 1 or (n_threads is not None and n_threads < 1):
        raise OvmfgenError("--jobs and --threads must be positive")
    opts = Options(out=out_dir, date=parse_date(date), jobs=n_jobs, threads=n_threads, quiet=quiet, keep=keep_n,
                   repro=repro or "auto", repro_only=repro_only,
                   install_root=Path(install_root) if install_root else None)
    summary = run_night(m, selected, opts)
    _print_night(summary)
    _raise_on_failures(summary)
    return summary


def _print_night(summary: Mapping[str, object]) -> None:
    for rec in summary.get("cells") or []:  # type: ignore[union-attr]
        print(status_line(rec), flush=True)
    repro = summary.get("repro")
    if isinstance(repro, dict):
        print(f"reproducibility ({repro.get('cell')}): {repro.get('status')} - {repro.get('detail', '')}", flush=True)


def _raise_on_failures(summary: Mapping[str, object]) -> None:
    failed = failures(summary)
    if failed:
        n = len(failed)
        raise NightlyFailed(f"{n} of {summary['totals']['cells']} nightly cell(s) failed: {', '.join(failed)}", n)  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# The cell process: python -m ovmfgen.nightly.core cell|repro --spec JSON --dir DIR [--threads N]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a cell's process: run it and write ``<dir>/result.json`` (always)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ovmfgen.nightly.core", description="one nightly cell (internal)")
    parser.add_argument("kind", choices=("cell", "repro"))
    parser.add_argument("--spec", required=True, help="the cell as JSON")
    parser.add_argument("--dir", required=True, help="the cell's directory")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from ovmfgen.ui import setup_logging

    setup_logging()
    cell = Cell.from_json(json.loads(args.spec))
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.kind == "cell":
            record = run_cell(cell, out, args.threads)
        else:
            record = run_repro(cell, out, args.threads)
    except BaseException as exc:  # noqa: BLE001 - the parent must always get a record
        traceback.print_exc()
        record = {"name": cell.name, "cell": cell.name, "status": "failed" if args.kind == "cell" else "error",
                  "error": f"{type(exc).__name__}: {exc}", "detail": f"{type(exc).__name__}: {exc}", "steps": []}
    write_public(out / RESULT, (json.dumps(record, indent=2) + "\n").encode())
    sys.stdout.flush()
    return 0 if record.get("status") in ("passed", "identical", "differs") else 1


if __name__ == "__main__":
    sys.exit(main())
