"""``invoke import``: turn an existing edk2 platform (.dsc + .fdf) into a platform YAML.

The YAML mirrors the files' structure statement for statement (the inverse of ``load``), so
``render(load(import(X)))`` is equivalent to X. A person then refactors the result: shared
fragments, ``when:`` feature blocks, deltas with reasons.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ovmfgen.edk2.tree import locate
from ovmfgen.errors import OvmfgenError, display_path
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
            out.append(item)
            continue
        out.append(_item(stmt, kind, inc))
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
    return [{s.header: _items(s.body, s.kind, inc)} for s in sections]


_PLATFORM_KEY = {field: key for key, field in HEADER_FIELDS.items()}


def _include_fixer(tree: Path | None, rel: str) -> Any:
    """Includes written relative to the including file become workspace-relative.

    EDK2 also looks beside the including file; the generated files live in another directory
    (the build workspace), so ``CloudHvDefines.fdf.inc`` must become ``OvmfPkg/CloudHv/CloudHvDefines.fdf.inc``.
    """
    base = Path(rel).parent

    def fix(path: str) -> str:
        if tree is None or "$(" in path or (tree / path).is_file():
            return path
        beside = base / path
        return beside.as_posix() if (tree / beside).is_file() else path

    return fix


def platform_yaml(dsc_text: str, fdf_text: str, dsc_rel: str, fdf_rel: str, description: str = "",
                  tree: Path | None = None) -> str:
    """The platform YAML for DSC/FDF text (``*_rel``: their paths relative to the edk2 tree ``tree``)."""
    dsc = parse_dsc(dsc_text, dsc_rel)
    fdf = parse_fdf(fdf_text, fdf_rel)
    if not dsc or dsc[0].header != "Defines":
        raise OvmfgenError("the DSC does not start with a [Defines] section", dsc[0].loc if dsc else None)
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
                platform[key] = stmt.value.split("|") if key in ("supported_architectures", "build_targets") \
                    else stmt.value
            else:
                fields[stmt.name] = stmt.value
            continue
        if not isinstance(stmt, Comment):
            lifting = False
        rest.append(stmt)
    if fields:
        platform["fields"] = fields
    doc: dict[str, Any] = {}
    doc["description"] = description or f"Imported from {dsc_rel} and {fdf_rel}."
    doc["platform"] = platform
    doc["upstream"] = {"dsc": dsc_rel, "fdf": fdf_rel}
    dsc_inc, fdf_inc = _include_fixer(tree, dsc_rel), _include_fixer(tree, fdf_rel)
    doc["dsc"] = [{"Defines": _items(tuple(rest), "Defines", dsc_inc)}, *_sections(dsc[1:], dsc_inc)]
    doc["fdf"] = _sections(fdf, fdf_inc)
    header = (f"# Imported by ovmfgen from {dsc_rel} and {fdf_rel}.\n"
              "# Statement for statement the upstream platform; refactor freely (fragments, features, deltas).\n")
    return header + dump_yaml(doc)


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


def import_command(dsc: str, fdf: str, output: str) -> None:
    """``invoke import``: write platforms YAML for an upstream DSC/FDF pair (atomically)."""
    dsc_path, dsc_rel = _resolve_input(dsc)
    fdf_path, fdf_rel = _resolve_input(fdf)
    text = platform_yaml(dsc_path.read_text(encoding="utf-8", errors="replace"),
                         fdf_path.read_text(encoding="utf-8", errors="replace"), dsc_rel, fdf_rel,
                         tree=locate_tree())
    out = Path(output)
    if out.suffix != ".yaml":
        raise OvmfgenError(f"output must be a .yaml file: {output}")
    # Prove the result loads before it replaces anything.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / out.name
        probe.write_text(text, encoding="utf-8")
        load_platform(probe, platforms_dir=out.parent.resolve())
    write_if_changed(out, text.encode("utf-8"))
    say(f"wrote {display_path(out)}")
