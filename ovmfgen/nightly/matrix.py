"""nightly.yaml: the matrix of cells (platform, target, FD size, features, boots), its checks and selection."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ovmfgen import paths
from ovmfgen.build.request import parse_assignments, parse_fd_size, parse_target
from ovmfgen.edk2.releases import KNOWN_TAGS
from ovmfgen.errors import OvmfgenError, display_path

DEFAULT_MATRIX = paths.REPO_ROOT / "nightly.yaml"
BOOT_KINDS = ("pvh", "reset", "shell", "xen")
CELL_KEYS = ("name", "platform", "target", "fd_size", "features", "defines", "boot", "description", "optional",
             "requires", "ccache", "timeout", "edk2")
TOP_KEYS = ("description", "defaults", "cells", "reproducibility", "install")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    edk2: str | None = None                    # the edk2 tree's tag (None: the default tree)

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


def _cell_name(platform: str, target: str, fd_size: str | None, features: Sequence[str],
               edk2: str | None = None) -> str:
    parts = [platform, target]
    if fd_size:
        parts.append(fd_size)
    parts += [f.split("=", 1)[-1] for f in features]
    if edk2:
        parts.append(edk2)
    return re.sub(r"[^A-Za-z0-9._-]", "", "-".join(parts))


def parse_matrix(data: object, path: str = "nightly.yaml") -> Matrix:
    """Check and convert nightly.yaml's data (see the file itself for the format)."""
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
        edk2 = item.get("edk2")
        if edk2 is not None and (not isinstance(edk2, str) or edk2 not in KNOWN_TAGS):
            raise OvmfgenError(f"{where}: edk2 '{edk2}' is not a known tag (known: {', '.join(KNOWN_TAGS)})")
        name = str(item.get("name") or _cell_name(platform, target, fd_size, features, edk2))
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
            edk2=edk2,
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


def repro_cell_for(matrix: Matrix, date: str, selected: Sequence[Cell]) -> Cell | None:
    """Tonight's reproducibility cell: the rotation entry for the date's ordinal (selected cells only)."""
    names = [n for n in matrix.repro_rotate if any(c.name == n for c in selected)]
    if not names:
        return None
    return matrix.cell(names[_dt.date.fromisoformat(date).toordinal() % len(names)])
