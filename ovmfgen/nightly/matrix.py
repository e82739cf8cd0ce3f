"""nightly.yaml: the matrix of cells (platform, target, FD size, features, boots), its checks and selection."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ovmfgen import paths
from ovmfgen.boot.xen.debian import check_xen
from ovmfgen.boot.xen.guests import parse_guest_spec
from ovmfgen.request import Request, make_request, parse_assignments, parse_fd_size, parse_target
from ovmfgen.edk2.releases import KNOWN_TAGS, UPSTREAM_URL
from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.platform.load import check_feature
from ovmfgen.platform.nodes import load_yaml_nodes, where

DEFAULT_MATRIX = paths.REPO_ROOT / "nightly.yaml"
CHECKOUT_KEYS = ("path", "env", "branch")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]*$")
BOOT_KINDS = ("pvh", "reset", "shell", "xen")
CELL_KEYS = ("name", "platform", "target", "fd_size", "features", "defines", "boot", "description", "optional",
             "requires", "ccache", "timeout", "edk2", "xen_guests", "xen")
TOP_KEYS = ("description", "defaults", "cells", "reproducibility", "install")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Checkout:
    """A cell's edk2 checkout, a tree no release names (edk2 master): ``edk2: {path: DIR}`` or ``edk2: {env: VAR}``.

    The cell sets it up itself (identity from git, BaseTools when its commit moved) and shows, before
    building, what ``invoke diff`` and ``invoke rebase`` make of it. ``branch`` is what the emitted CI
    workflows clone into it (edk2 upstream, with its submodules).
    """

    path: str | None = None      # as written; relative to the matrix file's directory
    env: str | None = None       # the environment variable naming its directory
    branch: str = "master"
    root: str | None = None      # where it was found (set by the nightly before the cell's process starts)

    @property
    def text(self) -> str:
        """How nightly.yaml names it: ``$VAR`` or the path."""
        return f"${self.env}" if self.env else str(self.path)

    def locate(self, base: Path) -> Path:
        """Its directory (absolute; a relative path is taken from ``base``, the matrix file's directory); a
        one-line OvmfgenError when it is not there."""
        if self.env:
            value = os.environ.get(self.env, "")
            if not value:
                raise OvmfgenError(f"edk2 checkout: ${self.env} is not set (point it at an edk2 checkout: "
                                   f"git clone --recurse-submodules {UPSTREAM_URL} DIR)")
            where, root = f"${self.env}={value}", Path(value).expanduser()
        else:
            where, root = str(self.path), base / Path(str(self.path)).expanduser()
        if not root.is_dir():
            raise OvmfgenError(f"edk2 checkout {where}: no such directory")
        if not (root / "OvmfPkg").is_dir():
            raise OvmfgenError(f"edk2 checkout {where}: not an edk2 tree (no OvmfPkg/)")
        return root.resolve()


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
    edk2: str | None = None                    # the edk2 tree's tag (None: the default tree, or the checkout's)
    checkout: Checkout | None = None           # an edk2 checkout the cell builds against instead
    #: boot xen: the guests of its ONE nested Xen boot, MODE-PAYLOAD[-FDSIZE] (default: pvh-shell);
    #: a guest with another FD size boots that size's build of the cell (built in the cell too).
    xen_guests: tuple[str, ...] = ()
    xen: str | None = None                     # boot xen: the Xen version (4.17, 4.20; None: the default)
    # Where each switch is written in nightly.yaml ("feature:NAME"/"define:NAME" -> Location): messages only.
    locations: tuple[tuple[str, Location], ...] = field(default=(), compare=False, repr=False)

    def to_json(self) -> dict:
        """The cell as plain JSON data (what the cell process receives; no locations)."""
        data = asdict(self)
        data.pop("locations")
        return data

    def request(self, fd_size: str | None = None, jobs: int | None = None, clean: bool = False,
                ccache: bool | None = None) -> Request:
        """The build this cell asks for (``fd_size``: another FD size of it; ``ccache``: instead of the cell's)."""
        return make_request(self.platform, self.target, fd_size or self.fd_size, self.defines, self.features,
                            jobs=jobs, clean=clean, ccache=self.ccache if ccache is None else ccache, edk2=self.edk2)

    def location(self, kind: str, name: str) -> Location | None:
        """Where the ``kind`` (feature/define) switch ``name`` is written in nightly.yaml, if it is."""
        return dict(self.locations).get(f"{kind}:{name}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        """The inverse of ``to_json``."""
        kw = dict(data)
        for key in ("features", "defines", "boot", "xen_guests"):
            kw[key] = tuple(kw.get(key) or ())
        if isinstance(kw.get("checkout"), Mapping):
            kw["checkout"] = Checkout(**kw["checkout"])
        return cls(**kw)

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
        if self.checkout is not None:
            flags.append(f"edk2 checkout {self.checkout.text}")
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


class _Fields:
    """A mapping node whose keys are checked against ``allowed``: its value nodes by key, and where they are."""

    def __init__(self, node: Node, what: str, path: str, allowed: Sequence[str]) -> None:
        if not isinstance(node, MappingNode):
            raise OvmfgenError(f"{what} must be a mapping", where(node, path))
        self.node, self.path = node, path
        self.nodes: dict[str, Node] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else str(_value(key, path))
            if name not in allowed:
                raise OvmfgenError(f"unknown key '{name}' in {what} (expected one of: {', '.join(allowed)})",
                                   where(key, path))
            self.nodes[name] = value

    def get(self, key: str, default: object = None) -> object:
        """The key's plain value (what ``yaml.safe_load`` gives), or ``default`` when the key is absent."""
        return _value(self.nodes[key], self.path) if key in self.nodes else default

    def loc(self, key: str) -> Location:
        """Where the key's value is; the mapping itself when the key is absent."""
        return where(self.nodes.get(key, self.node), self.path)


def _value(node: Node, path: str) -> object:
    """What ``yaml.safe_load`` makes of ``node``; a value its tag rejects (``!!int abc``) is a located error."""
    try:
        return SafeConstructor().construct_document(node)
    except Exception as exc:  # PyYAML's constructors fail on bad tagged text in many ways (AttributeError too)
        mark = getattr(exc, "problem_mark", None)
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else where(node, path)
        reason = getattr(exc, "problem", None) or str(exc)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise OvmfgenError(f"cannot read this value as {tag}: {reason}", loc) from None


@contextmanager
def _located(loc: Location) -> Iterator[None]:
    """Give an unlocated OvmfgenError (from a parser shared with the command line) this location."""
    try:
        yield
    except OvmfgenError as exc:
        if exc.location is not None:
            raise
        raise OvmfgenError(exc.message, loc) from None


def _optional_fields(parent: _Fields, key: str, what: str, allowed: Sequence[str]) -> _Fields | None:
    """The mapping under ``key`` (None when absent or empty)."""
    if parent.get(key) is None:
        return None
    return _Fields(parent.nodes[key], what, parent.path, allowed)


def _str_items(fields: _Fields, key: str, what: str) -> list[tuple[str, Location]]:
    """A scalar or a list of scalars under ``key``, each as text with its location."""
    node = fields.nodes.get(key)
    if node is None:
        return []
    items = node.value if isinstance(node, SequenceNode) else [node]
    out = []
    for item in items:
        value = _value(item, fields.path) if isinstance(item, ScalarNode) else None
        if value is None and isinstance(node, ScalarNode):
            return []
        if not isinstance(value, (str, int, float)):
            raise OvmfgenError(f"{what} must be a list of text", where(item, fields.path))
        out.append((str(value), where(item, fields.path)))
    return out


def _cell_name(platform: str, target: str, fd_size: str | None, features: Sequence[str],
               edk2: str | None = None) -> str:
    parts = [platform, target]
    if fd_size:
        parts.append(fd_size)
    parts += [f.split("=", 1)[-1] for f in features]
    if edk2:
        parts.append(edk2)
    return re.sub(r"[^A-Za-z0-9._-]", "", "-".join(parts))


def _parse_cell(raw: Node, defaults: _Fields | None, path: str, seen: set[str]) -> Cell:
    item = _Fields(raw, "a cell", path, CELL_KEYS)
    if defaults is not None:
        item.nodes = {**defaults.nodes, **item.nodes}  # a value from defaults is located there
    if "platform" not in item.nodes:
        raise OvmfgenError("missing 'platform'", where(raw, path))
    platform = str(item.get("platform"))
    with _located(item.loc("target")):
        target = parse_target(str(item.get("target", "DEBUG")))
    raw_size = item.get("fd_size")
    with _located(item.loc("fd_size")):
        size = parse_fd_size(None if raw_size is None else str(raw_size))
    lists = {}
    locations: list[tuple[str, Location]] = []
    for key, what in (("features", "feature"), ("defines", "define")):
        lists[key] = _str_items(item, key, key)
        for text, loc in lists[key]:
            with _located(loc):
                for sname, svalue in parse_assignments([text], what).items():
                    if what == "feature":
                        check_feature(sname, svalue, "feature", loc)
                    locations.append((f"{what}:{sname}", loc))
    features = tuple(text for text, _ in lists["features"])
    defines = tuple(text for text, _ in lists["defines"])
    fd_size = f"{size}M" if size else None
    checkout = None
    if isinstance(item.nodes.get("edk2"), MappingNode):
        checkout, loc = _checkout(item)
        edk2 = None
        locations.append(("edk2:checkout", loc))
    else:
        edk2 = item.get("edk2")
        if edk2 is not None and not isinstance(edk2, str):
            raise OvmfgenError(f"edk2 must be a release tag or a checkout ({{path: DIR}} or {{env: VAR}}), got "
                               f"{_kind(edk2)}", item.loc("edk2"))
        if edk2 is not None and edk2 not in KNOWN_TAGS:
            raise OvmfgenError(f"edk2 '{edk2}' is not a known tag (known: {', '.join(KNOWN_TAGS)}), nor a checkout "
                               "({path: DIR} or {env: VAR})", item.loc("edk2"))
    name = str(item.get("name") or _cell_name(platform, target, fd_size, features,
                                                f"edk2-{checkout.branch}" if checkout else edk2))
    if not _NAME_RE.match(name):
        raise OvmfgenError("a cell name is letters, digits, '.', '_' and '-'", item.loc("name"))
    if name in seen:
        raise OvmfgenError(f"two cells are called '{name}'", item.loc("name"))
    seen.add(name)
    boot = _str_items(item, "boot", "boot")
    for b, loc in boot:
        if b not in BOOT_KINDS:
            raise OvmfgenError(f"boot '{b}' is not one of: {', '.join(BOOT_KINDS)}", loc)
    if target == "RELEASE" and any(b in ("pvh", "reset") for b, _ in boot):
        raise OvmfgenError("a RELEASE build prints no DEBUG log, so a pvh/reset boot cannot be judged",
                           item.loc("boot"))
    timeout = _seconds(item.get("timeout"), item.loc("timeout"))
    xen_guests = _xen_guests(item, [b for b, _ in boot])
    xen_version = item.get("xen")
    if xen_version is not None:
        if "xen" not in [b for b, _ in boot]:
            raise OvmfgenError("xen needs 'xen' in the cell's boot list", item.loc("xen"))
        with _located(item.loc("xen")):
            xen_version = check_xen(str(xen_version)).series
    return Cell(
        name=name, platform=platform, target=target, fd_size=fd_size, features=features, defines=defines,
        boot=tuple(b for b, _ in boot), description=" ".join(str(item.get("description") or "").split()),
        optional=bool(item.get("optional", False)),
        requires=str(item.get("requires")) if item.get("requires") else None,
        ccache=bool(item.get("ccache", True)),
        timeout=timeout, locations=tuple(locations),
        edk2=edk2, checkout=checkout,
        xen_guests=xen_guests,
        xen=xen_version,
    )


def _checkout(item: _Fields) -> tuple[Checkout, Location]:
    """The cell's ``edk2: {path: DIR}`` / ``{env: VAR}`` (and ``branch``), checked; with where it is named."""
    fields = _Fields(item.nodes["edk2"], "an edk2 checkout", item.path, CHECKOUT_KEYS)
    given = [k for k in ("path", "env") if k in fields.nodes]
    if not given:
        raise OvmfgenError("an edk2 checkout needs 'path' (its directory) or 'env' (a variable naming it)",
                           fields.loc("edk2"))
    if len(given) > 1:
        raise OvmfgenError("an edk2 checkout takes 'path' or 'env', not both", fields.loc(given[1]))
    key = given[0]
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise OvmfgenError(f"edk2 {key} must be {'a directory' if key == 'path' else 'a variable name'}, got "
                           f"{_kind(value)}", fields.loc(key))
    if key == "env" and not _ENV_NAME_RE.match(value):
        raise OvmfgenError(f"edk2 env '{value}' is not an environment variable name (letters, digits, '_')",
                           fields.loc(key))
    branch = fields.get("branch", "master")
    if not isinstance(branch, str) or not _BRANCH_RE.match(branch) or ".." in branch:
        raise OvmfgenError(f"edk2 branch '{branch}' is not a branch or tag name", fields.loc("branch"))
    return Checkout(path=value if key == "path" else None, env=value if key == "env" else None,
                    branch=branch), fields.loc(key)


def _kind(value: object) -> str:
    """What a YAML value is, in a message."""
    if isinstance(value, str):
        return "empty text" if not value.strip() else f"'{value}'"
    return {list: "a list", dict: "a mapping", bool: "a boolean", type(None): "nothing"}.get(type(value), f"'{value}'")


def _xen_guests(item: _Fields, boot: Sequence[str]) -> tuple[str, ...]:
    """The cell's ``xen_guests``, each checked (``boot.xen.guests.parse_guest_spec``), in order."""
    specs = _str_items(item, "xen_guests", "xen_guests")
    if specs and "xen" not in boot:
        raise OvmfgenError("xen_guests needs 'xen' in the cell's boot list", item.loc("xen_guests"))
    out: list[str] = []
    for text, loc in specs:
        with _located(loc):
            spec = parse_guest_spec(text)
        if spec.text in out:
            raise OvmfgenError(f"guest '{spec.text}' is listed twice", loc)
        out.append(spec.text)
    return tuple(out)


def _seconds(value: object, loc: Location) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or isinstance(value, bool):
        raise OvmfgenError(f"timeout must be a positive number of seconds, got '{value}'", loc)
    return seconds


def _parse_install(raw: Node, path: str, seen: set[str]) -> InstallSpec:
    spec = _Fields(raw, "an install entry", path, ("cell", "firmware", "code", "vars", "descriptor"))
    if spec.get("cell") not in seen:
        raise OvmfgenError(f"install names no cell '{spec.get('cell')}'", spec.loc("cell"))
    for key in ("firmware", "code", "vars", "descriptor"):
        rel = spec.get(key)
        if rel is not None and (str(rel).startswith("/") or ".." in Path(str(rel)).parts):
            raise OvmfgenError(f"install {key} must be a relative path inside the root, got '{rel}'", spec.loc(key))
    if not (spec.get("firmware") or spec.get("code")):
        raise OvmfgenError(f"install entry for '{spec.get('cell')}' needs 'firmware' (ELF) or 'code' (flash)",
                           where(raw, path))
    text = {key: (None if spec.get(key) is None else str(spec.get(key))) for key in spec.nodes}
    return InstallSpec(cell=str(spec.get("cell")), firmware=text.get("firmware"), code=text.get("code"),
                       vars=text.get("vars"), descriptor=text.get("descriptor"))


def parse_matrix(root: Node, path: str = "nightly.yaml") -> Matrix:
    """Check and convert nightly.yaml's nodes (see the file itself for the format); errors are located."""
    top = _Fields(root, "the matrix", path, TOP_KEYS)
    defaults = _optional_fields(top, "defaults", "defaults", CELL_KEYS)
    raw_cells = top.nodes.get("cells")
    if not isinstance(raw_cells, SequenceNode) or not raw_cells.value:
        raise OvmfgenError("'cells' must be a non-empty list", top.loc("cells"))
    seen: set[str] = set()
    cells = [_parse_cell(raw, defaults, path, seen) for raw in raw_cells.value]
    repro = _optional_fields(top, "reproducibility", "reproducibility", ("rotate", "required"))
    rotate: list[tuple[str, Location]] = []
    if repro is not None:
        rotate = _str_items(repro, "rotate", "reproducibility.rotate")
    for name, loc in rotate:
        if name not in seen:
            raise OvmfgenError(f"reproducibility.rotate names no cell '{name}'", loc)
        if next(c for c in cells if c.name == name).checkout is not None:
            raise OvmfgenError(f"reproducibility.rotate: cell '{name}' builds against an edk2 checkout, which "
                               "moves from night to night", loc)
    raw_install = top.nodes.get("install")
    installs = []
    if raw_install is not None and top.get("install") is not None:
        if not isinstance(raw_install, SequenceNode):
            raise OvmfgenError("install must be a list of entries", top.loc("install"))
        installs = [_parse_install(raw, path, seen) for raw in raw_install.value]
    return Matrix(path=path, cells=tuple(cells), repro_rotate=tuple(name for name, _ in rotate),
                  repro_required=bool(repro.get("required")) if repro is not None else False,
                  install=tuple(installs), description=" ".join(str(top.get("description") or "").split()))


def load_matrix(path: str | Path = DEFAULT_MATRIX) -> Matrix:
    """Read and check a matrix file (through the located YAML reader every YAML file goes through)."""
    p = Path(path)
    return parse_matrix(load_yaml_nodes(p, "matrix file"), display_path(p))


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


def on_tree(cells: Sequence[Cell], edk2: str | None) -> list[Cell]:
    """``cells`` moved to the edk2 tree ``edk2`` (``invoke nightly --edk2 TAG``; None: as they are).

    A cell of another tree is renamed ``<name>-<tag>`` so that its history never mixes with the
    original cell's; a cell that already names the same build as another (the matrix's own cell on
    that tree) is kept once.
    """
    if not edk2:
        return list(cells)
    if edk2 not in KNOWN_TAGS:
        raise OvmfgenError(f"--edk2 '{edk2}' is not a known tag (known: {', '.join(KNOWN_TAGS)})")
    out: dict[str, Cell] = {}
    for cell in cells:
        # A cell of a checkout names its tree itself.
        moved = cell if cell.edk2 == edk2 or cell.checkout else replace(cell, edk2=edk2, name=f"{cell.name}-{edk2}")
        out.setdefault(moved.name, moved)
    return list(out.values())
