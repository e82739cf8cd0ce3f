"""``invoke import``: turn an existing edk2 platform (.dsc + .fdf) into a platform YAML.

The YAML mirrors the files' structure statement for statement (the inverse of ``load``), so
``render(load(import(X)))`` is equivalent to X. A person then refactors the result: shared
fragments, ``when:`` feature blocks, deltas with reasons.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ovmfgen.edk2.tree import locate, tree_dir
from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.fsutil import write_if_changed
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.load import HEADER_FIELDS, load_platform
from ovmfgen.platform.model import (
    Block, BuildOption, Comment, Component, Conditional, Define, ErrorDirective, Field, Include, Inf,
    LibraryMapping, Pcd, Raw, Region, RegionContent, RegionPcds, ReservedRegion, Section, SetPcd, Statement,
)
from ovmfgen.platform.syntax import parse_dsc, parse_fdf
from ovmfgen.ui import say

_FIELD_SECTIONS = ("Defines", "FD", "FV", "Capsule", "OptionRom")


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line text as literal blocks, lists indented under their key.

    ovmfgen reads every scalar as text, so the dumper need not quote ``TRUE`` or ``0x10`` to stop
    them being read as bool/int: without implicit resolvers it only quotes what YAML syntax needs.
    """

    yaml_implicit_resolvers: dict = {}

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


class _LocStr(str):
    """A YAML scalar that came from one DSC/FDF statement (``loc``): load errors on it are reported there."""

    loc: Location | None = None


class _LocDict(dict):
    """A YAML mapping that came from one DSC/FDF statement or section (``loc``)."""

    loc: Location | None = None


def _located(item: Any, loc: Location | None) -> Any:
    if loc is None:
        return item
    if isinstance(item, str):
        item = _LocStr(item)
    elif isinstance(item, dict):
        item = _LocDict(item)
    else:
        return item
    item.loc = loc
    return item


_Dumper.add_representer(_LocStr, _str_representer)
_Dumper.add_representer(_LocDict, lambda dumper, data: dumper.represent_dict(data))


def dump_yaml(data: Any) -> str:
    """YAML text for ``data`` in ovmfgen's style (insertion order kept, wide lines)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120,
                     allow_unicode=True)


def yaml_items(body: tuple[Statement, ...], kind: str) -> list[Any]:
    """The YAML items (plain data for ``dump_yaml``) of statements in a ``kind`` section (rebase writes them)."""
    return _items(body, kind)


def _items(body: tuple[Statement, ...], kind: str, inc: Any = None) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(body):
        stmt = body[i]
        if isinstance(stmt, Region):
            item: dict[str, Any] = {"region": f"{stmt.offset}|{stmt.size}"}
            i += 1
            # The PCD pair and content lines that directly follow a region belong to it.
            while i < len(body) and isinstance(body[i], (RegionPcds, RegionContent, ReservedRegion)):
                nxt = body[i]
                if isinstance(nxt, RegionPcds) and "pcds" not in item:
                    item["pcds"] = f"{nxt.base}|{nxt.size}"
                elif isinstance(nxt, ReservedRegion) and "reserved" not in item:
                    item["reserved"] = nxt.purpose
                elif isinstance(nxt, RegionContent) and nxt.kind in ("FV", "DATA", "FILE") \
                        and not any(k in item for k in ("fv", "data", "file")):
                    item[nxt.kind.lower()] = nxt.value
                else:
                    break
                i += 1
            out.append(_located(item, stmt.loc))
            continue
        out.append(_located(_item(stmt, kind, inc), stmt.loc))
        i += 1
    return out


def _item(stmt: Statement, kind: str, inc: Any = None) -> Any:
    if isinstance(stmt, Comment):
        return {"comment": stmt.text}
    if isinstance(stmt, Include):
        return {"include": inc(stmt.path) if inc else stmt.path}
    if isinstance(stmt, Define):
        return {"define": f"{stmt.name} = {stmt.value}"}
    if isinstance(stmt, Field):
        if kind in _FIELD_SECTIONS:
            return {stmt.name: stmt.value}
        return {"field": f"{stmt.name} = {stmt.value}"}
    if isinstance(stmt, SetPcd):
        return {"set": f"{stmt.name} = {stmt.value}"}
    if isinstance(stmt, ErrorDirective):
        return {"error": stmt.message}
    if isinstance(stmt, LibraryMapping):
        return {stmt.lib_class: stmt.inf}
    if isinstance(stmt, Pcd):
        return {stmt.name: "|".join([stmt.value, *stmt.extra])}
    if isinstance(stmt, BuildOption):
        return {f"{stmt.key} ==" if stmt.replace else stmt.key: stmt.value}
    if isinstance(stmt, Component):
        if not stmt.subsections:
            return stmt.inf
        item: dict[str, Any] = {"inf": stmt.inf}
        for sub in stmt.subsections:
            if sub.kind in item:
                raise OvmfgenError(f"component {stmt.inf} has two <{sub.kind}> blocks; merge them first", stmt.loc)
            item[sub.kind] = _items(sub.body, sub.kind, inc)
        return item
    if isinstance(stmt, Conditional):
        first = stmt.branches[0]
        cond: dict[str, Any] = {first.directive: first.expr, "then": _items(first.body, kind, inc)}
        if len(stmt.branches) > 1:
            cond["elif"] = [{"if": br.expr, "then": _items(br.body, kind, inc)} for br in stmt.branches[1:]]
        if stmt.orelse is not None:
            cond["else"] = _items(stmt.orelse, kind, inc)
        return cond
    if isinstance(stmt, RegionPcds):
        return {"pcds": f"{stmt.base}|{stmt.size}"}
    if isinstance(stmt, RegionContent):
        if stmt.kind in ("FV", "DATA", "FILE"):
            return {stmt.kind.lower(): stmt.value}
        return {"raw": f"{stmt.kind} = {stmt.value}"}
    if isinstance(stmt, ReservedRegion):
        return {"reserved": stmt.purpose}
    if isinstance(stmt, Inf):
        return {"INF": f"{stmt.options} {stmt.path}".strip()}
    if isinstance(stmt, Block):
        return {"block": stmt.text}
    if isinstance(stmt, Raw):
        return {"raw": stmt.text}
    raise TypeError(f"cannot import {type(stmt).__name__}")  # pragma: no cover - every kind is handled


def _sections(sections: tuple[Section, ...], inc: Any = None) -> list[dict[str, Any]]:
    return [_located({s.header: _items(s.body, s.kind, inc)}, s.loc) for s in sections]


_PLATFORM_KEY = {field: key for key, field in HEADER_FIELDS.items()}


def _include_fixer(roots: tuple[Path, ...], rel: str) -> Any:
    """Includes written relative to the including file become workspace-relative.

    EDK2 looks for an ``!include`` in the workspace and the packages path (``roots``), then beside the
    including file; the generated files live in another directory (the build workspace), so
    ``CloudHvDefines.fdf.inc`` must become ``OvmfPkg/CloudHv/CloudHvDefines.fdf.inc``.
    """
    base = Path(rel).parent

    def found(path: str) -> bool:
        return any((root / path).is_file() for root in roots)

    def fix(path: str) -> str:
        if not roots or "$(" in path or found(path):
            return path
        beside = (base / path).as_posix()
        return beside if found(beside) else path

    return fix


def platform_document(dsc_text: str, fdf_text: str, dsc_rel: str, fdf_rel: str, description: str = "",
                      roots: tuple[Path, ...] = (), dsc_shown: str | None = None,
                      fdf_shown: str | None = None) -> tuple[str, list[tuple[int, int, Location]]]:
    """The platform YAML for DSC/FDF text, and where its items came from: (first line, last line,
    DSC/FDF location) of every YAML item made from a statement or section.

    ``*_rel``: the files' paths in their workspace; ``roots``: the workspace and packages path
    ``!include`` resolves in; ``*_shown``: the paths errors name (default: ``*_rel``).
    """
    dsc_shown, fdf_shown = dsc_shown or dsc_rel, fdf_shown or fdf_rel
    dsc = parse_dsc(dsc_text, dsc_shown)
    fdf = parse_fdf(fdf_text, fdf_shown)
    if not dsc or dsc[0].header != "Defines":
        raise OvmfgenError("the DSC does not start with a [Defines] section",
                           dsc[0].loc if dsc else Location(dsc_shown, 1, 1))
    files = dsc_rel.removesuffix(".dsc")
    platform: dict[str, Any] = {"files": files}
    fields: dict[str, str] = {}
    rest: list[Statement] = []
    lifting = True
    for stmt in dsc[0].body:
        # Header fields lead [Defines]; they become `platform:` keys. FLASH_DEFINITION is derived.
        if lifting and isinstance(stmt, Field):
            if stmt.name == "FLASH_DEFINITION":
                if stmt.value != f"{files}.fdf":
                    raise OvmfgenError(f"FLASH_DEFINITION {stmt.value} is not {files}.fdf; import the DSC with its "
                                       f"own FDF", stmt.loc)
            elif stmt.name in _PLATFORM_KEY:
                key = _PLATFORM_KEY[stmt.name]
                platform[key] = [_located(v, stmt.loc) for v in stmt.value.split("|")] \
                    if key in ("supported_architectures", "build_targets") else _located(stmt.value, stmt.loc)
            else:
                fields[stmt.name] = _located(stmt.value, stmt.loc)
            continue
        if not isinstance(stmt, Comment):
            lifting = False
        rest.append(stmt)
    if fields:
        platform["fields"] = fields
    doc: dict[str, Any] = {}
    doc["description"] = description or f"Imported from {dsc_rel} and {fdf_rel}."
    doc["platform"] = _located(platform, dsc[0].loc)
    doc["upstream"] = {"dsc": dsc_rel, "fdf": fdf_rel}
    fd_sections = [s for s in fdf if s.kind == "FD"]
    if fd_sections and not any(s.header == "FD.OVMF" for s in fd_sections):
        # The FD the build publishes: OVMF unless the FDF has none of that name (CloudHv, Microvm, ...).
        doc["publish"] = _located({"fd": fd_sections[0].header.partition(".")[2]}, fd_sections[0].loc)
    dsc_inc, fdf_inc = _include_fixer(roots, dsc_rel), _include_fixer(roots, fdf_rel)
    doc["dsc"] = [_located({"Defines": _items(tuple(rest), "Defines", dsc_inc)}, dsc[0].loc),
                  *_sections(dsc[1:], dsc_inc)]
    doc["fdf"] = _sections(fdf, fdf_inc)
    header = (f"# Imported by ovmfgen from {dsc_rel} and {fdf_rel}.\n"
              "# Statement for statement the upstream platform; refactor freely (fragments, features, deltas).\n")
    text = header + dump_yaml(doc)
    return text, _origins(doc, text)


def platform_yaml(dsc_text: str, fdf_text: str, dsc_rel: str, fdf_rel: str, description: str = "",
                  tree: Path | None = None) -> str:
    """The platform YAML for DSC/FDF text (``*_rel``: their paths relative to the edk2 tree ``tree``)."""
    return platform_document(dsc_text, fdf_text, dsc_rel, fdf_rel, description,
                             (tree,) if tree is not None else ())[0]


def _origins(doc: Any, text: str) -> list[tuple[int, int, Location]]:
    """(first line, last line, location) of every located item of ``doc`` in its dumped ``text``."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    out: list[tuple[int, int, Location]] = []

    def walk(data: Any, node: Any) -> None:
        loc = getattr(data, "loc", None)
        if loc is not None:
            out.append((node.start_mark.line + 1, node.end_mark.line + 1, loc))
        if isinstance(data, dict):
            for (_, value), (_, vnode) in zip(data.items(), node.value):
                walk(value, vnode)
        elif isinstance(data, list):
            for value, vnode in zip(data, node.value):
                walk(value, vnode)

    walk(doc, node)
    return out


def _origin(origins: list[tuple[int, int, Location]], line: int) -> Location | None:
    """The DSC/FDF location of the innermost item spanning YAML line ``line``."""
    best: tuple[int, int, Location] | None = None
    for first, last, loc in origins:
        # A block item ends where the next begins: its last line is exclusive unless it is one line.
        if first <= line and (line < last or line == first):
            if best is None or first >= best[0]:
                best = (first, last, loc)
    return best[2] if best else None


def _resolve_input(path: str, edk2: str | None = None) -> tuple[Path, str]:
    """An input path and its path relative to the edk2 tree ``edk2`` (a tag; None: the default tree):
    ``edk2/...`` maps to that tree."""
    tree = locate(edk2).root
    p = Path(path)
    candidates = [p]
    if p.parts and p.parts[0] == "edk2":
        candidates.append(tree.joinpath(*p.parts[1:]))
    candidates.append(tree / p)
    for cand in candidates:
        if cand.is_file():
            try:
                return cand, cand.resolve().relative_to(tree.resolve()).as_posix()
            except ValueError:
                pass
            try:
                return cand, cand.resolve().relative_to((REPO_ROOT / "edk2").resolve()).as_posix()
            except ValueError:
                raise OvmfgenError(f"{path} is not inside the edk2 tree ({tree})") from None
    raise OvmfgenError(f"no such file: {path}")


def locate_tree(edk2: str | None = None) -> Path:
    """The edk2 tree imports are resolved against (``edk2``: a tag; None: the default tree)."""
    return locate(edk2).root


def _default_tree() -> Path | None:
    """The default edk2 tree's root when there is one, BaseTools built or not (import needs neither)."""
    try:
        return locate().root
    except OvmfgenError:
        pass
    override = os.environ.get("OVMFGEN_EDK2")
    candidates = [Path(override).expanduser()] if override else []
    try:
        candidates.append(tree_dir() / "tree")
    except OvmfgenError:
        pass
    return next((c for c in candidates if (c / "OvmfPkg").is_dir()), None)


def _packages_path() -> tuple[Path, ...]:
    """``$PACKAGES_PATH`` (edk2's own variable): more roots ``!include`` and INF paths resolve in."""
    return tuple(Path(p).expanduser() for p in os.environ.get("PACKAGES_PATH", "").split(os.pathsep) if p)


def _find_input(path: str, what: str, tree: Path | None) -> Path:
    """The file ``path`` names: as given, else (``edk2/...`` or relative) in the default edk2 tree."""
    p = Path(path)
    candidates = [p]
    if tree is not None:
        if p.parts and p.parts[0] == "edk2":
            candidates.append(tree.joinpath(*p.parts[1:]))
        candidates.append(tree / p)
    for cand in candidates:
        if cand.is_file():
            return cand
    raise OvmfgenError(f"no such {what}: {path}")


def workspace_of(path: Path, roots: tuple[Path, ...] = ()) -> Path:
    """The workspace a DSC lives in: the first of ``roots`` holding it, else the directory above its
    package (the nearest directory up holding a .dec), else the directory above its own."""
    real = path.resolve()
    for root in roots:
        if real.is_relative_to(root.resolve()):
            return root.resolve()
    for directory in real.parents:
        if directory.parent != directory and any(directory.glob("*.dec")):
            return directory.parent
    return real.parent.parent


def _read(path: Path, shown: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OvmfgenError(f"cannot read {shown}: {exc.strerror}") from None
    return data.decode("utf-8", errors="replace")


def import_command(dsc: str, fdf: str, output: str) -> None:
    """``invoke import``: write platform YAML for a DSC/FDF pair anywhere (atomically).

    The DSC's workspace is the default edk2 tree or one of ``$PACKAGES_PATH`` when it lies there, else
    the directory above its package. Only parsing happens: no tree needs to be set up, no BaseTools
    built. Every error names the DSC or FDF line it comes from.
    """
    out = Path(output)
    if out.suffix != ".yaml":
        raise OvmfgenError(f"output must be a .yaml file: {output}")
    tree = _default_tree()
    dsc_path, fdf_path = _find_input(dsc, "DSC", tree), _find_input(fdf, "FDF", tree)
    packages = _packages_path()
    ws = workspace_of(dsc_path, (*packages, *((tree,) if tree else ())))
    rels = []
    for path, given in ((dsc_path, dsc), (fdf_path, fdf)):
        try:
            rels.append(path.resolve().relative_to(ws).as_posix())
        except ValueError:
            raise OvmfgenError(f"{given} is not in the workspace of {dsc} ({ws})") from None
    roots = tuple(dict.fromkeys((ws, *packages, *((tree,) if tree else ()))))
    text, origins = platform_document(_read(dsc_path, dsc), _read(fdf_path, fdf), rels[0], rels[1],
                                      roots=roots, dsc_shown=dsc, fdf_shown=fdf)
    # Prove the result loads before it replaces anything; what it refuses is reported at the DSC/FDF line.
    with tempfile.TemporaryDirectory(prefix="ovmfgen-import-") as tmp:
        probe = Path(tmp) / out.name
        probe.write_text(text, encoding="utf-8")
        try:
            load_platform(probe, platforms_dir=out.parent.resolve())
        except OvmfgenError as exc:
            loc = exc.location
            if loc is None or Path(loc.path).resolve() != probe.resolve():
                raise
            raise OvmfgenError(exc.message, _origin(origins, loc.line) or Location(dsc, 1, 1)) from None
    write_if_changed(out, text.encode("utf-8"))
    say(f"wrote {display_path(out)}")
