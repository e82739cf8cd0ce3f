"""What a DSC/FDF pair builds, and the semantic difference between two of them.

Text diffs of a generated DSC against upstream's drown in layout; this compares what EDK2 would
build. edk2toollib's DscParser/FdfParser resolve ``!if``/``!include`` for a set of ``-D`` defines;
from their results we take the defines, components and their overrides, the library instance each
component resolves to (transitively), PCD values, build options, FV contents and the FD layout
(FD regions, which FdfParser skips, are read from the FDF's structure and evaluated the same way).

The comparison runs for several define sets (default, each FD size, the packager switches), so
``!if`` blocks are compared in each direction they can go.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.edk2.conventions import ARCH, toolchain_tag
from ovmfgen.edk2.toollib import (
    Workspace, conditional_evaluator, dsc_parser, expand_macros, fdf_parser, quiet_edk2toollib,
    edk2_path as make_edk2_path,
)
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.importer import _resolve_input
from ovmfgen.platform.model import Include, Platform, Region, RegionContent, RegionPcds, ReservedRegion, Statement
from ovmfgen.platform.overrides import override_sources
from ovmfgen.platform import resolve as platform_resolve
from ovmfgen.platform.resolve import Resolved
from ovmfgen.platform.syntax import parse_fdf
from ovmfgen.request import make_request
from ovmfgen.platform.validate import Infos, active_statements, component_libraries, prepare_workspace, validate
from ovmfgen.ui import say

CONFIGURATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("FD_SIZE_1MB", "TRUE"),),
    (("FD_SIZE_4MB", "TRUE"),),
    (("DEBUG_ON_HYPERVISOR_CONSOLE", "TRUE"),),
    (("NETWORK_TLS_ENABLE", "TRUE"),),
    (("SOURCE_DEBUG_ENABLE", "TRUE"),),
    (("SMM_REQUIRE", "TRUE"),),
)
"""-D define sets the comparison runs under (the empty set is the default build)."""

GROUPS = ("define", "component", "library", "pcd", "build-option", "fv", "fd", "fd-region", "file")
_GROUP_TITLES = {
    "define": "Defines", "component": "Components", "library": "Library resolution", "pcd": "PCDs",
    "build-option": "Build options", "fv": "FV contents", "fd": "FD", "fd-region": "FD layout",
    "file": "Files (overrides/)",
}


@dataclass(frozen=True)
class View:
    """What one DSC/FDF pair builds under one define set (plain, comparable data)."""

    defines: Mapping[str, str]
    build_options: Mapping[str, str]
    components: Mapping[str, str]             # inf -> its override block, canonical text
    libraries: Mapping[str, str]              # "inf: Class" -> instance
    pcds: Mapping[str, str]
    fvs: Mapping[str, tuple[str, ...]]        # FV name -> INFs and FILE GUIDs in order
    fd_tokens: Mapping[str, str]              # "FD.NAME.Token" -> value
    fd_regions: Mapping[str, str]             # "FD.NAME offset|size" -> content


@dataclass(frozen=True, order=True)
class Difference:
    """One semantic difference: its group (a delta kind), subject, and both sides."""

    kind: str
    subject: str
    ours: str
    theirs: str

    def line(self) -> str:
        """One readable line."""
        return f"{self.subject}: {self.theirs or '(absent)'} -> {self.ours or '(absent)'}"


# Keys DscParser puts in LocalVars that are really [BuildOptions] entries.
def _is_build_option(key: str) -> bool:
    return ":" in key or key.endswith("_FLAGS") or key.startswith("*_") or key.count("_*_") > 0


# Defines that name the files themselves; they differ whenever the paths do.
_PATH_DEFINES = {"WORKSPACE", "PACKAGES_PATH"}


def _fd_regions(fdf_text: str, fdf_rel: str, ws: Workspace, macros: Mapping[str, str]) -> dict[str, str]:
    """Regions of every FD section: "FD.NAME offset|size" -> content, for the macros in force."""
    evaluate = conditional_evaluator(dict(macros))
    out: dict[str, str] = {}
    for section in parse_fdf(fdf_text, fdf_rel):
        if section.kind != "FD":
            continue
        current: str | None = None
        for stmt in _expand_includes(active_statements(section.body, evaluate), ws, evaluate, Path(fdf_rel).parent):
            if isinstance(stmt, Region):
                off, size = expand_macros(stmt.offset, dict(macros)), expand_macros(stmt.size, dict(macros))
                current = f"{section.header} {_num(off)}|{_num(size)}"
                out[current] = "(erased)"
            elif current is not None and isinstance(stmt, RegionPcds):
                out[current] = _join(out[current], f"PCDs {stmt.base}|{stmt.size}")
            elif current is not None and isinstance(stmt, RegionContent):
                value = " ".join(stmt.value.split()) if stmt.kind != "DATA" else _data_digest(stmt.value)
                out[current] = _join(out[current], f"{stmt.kind} = {value}")
            elif current is not None and isinstance(stmt, ReservedRegion):
                out[current] = _join(out[current], f"reserved: {stmt.purpose}")
    return out


def _join(old: str, new: str) -> str:
    return new if old == "(erased)" else f"{old}; {new}"


def _num(text: str) -> str:
    try:
        return f"0x{int(text, 0):x}"
    except ValueError:
        return text


def _data_digest(text: str) -> str:
    """DATA blocks compared by their bytes (comments and layout ignored)."""
    import hashlib
    import re

    body = "\n".join(line.split("#")[0] for line in text.splitlines())
    values = re.findall(r"0x[0-9A-Fa-f]+|\b\d+\b", body)
    data = bytes(int(v, 0) & 0xFF for v in values)
    return f"DATA[{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}]"


def _expand_includes(stmts: Iterator[Statement], ws: Workspace, evaluate: object, base: Path) -> Iterator[Statement]:
    """``!include`` inside an FD section expanded (EDK2 also looks beside the including file)."""
    for stmt in stmts:
        if isinstance(stmt, Include):
            found = ws.find(stmt.path) or ws.find((base / stmt.path).as_posix())
            if found is None:
                continue
            inner = parse_fdf("[FD.INCLUDED]\n" + found.read_text(encoding="utf-8", errors="replace"), stmt.path)
            for sec in inner:
                yield from _expand_includes(active_statements(sec.body, evaluate), ws, evaluate, Path(stmt.path).parent)
        else:
            yield stmt


def resolve(dsc_rel: str, fdf_rel: str, ws: Workspace, defines: Mapping[str, str]) -> View:
    """The ``View`` of a DSC/FDF pair (paths relative to ``ws``) under ``defines``."""
    quiet_edk2toollib()
    edk2_path = make_edk2_path(ws.roots[0], list(ws.roots[1:]))
    # The edk2 tree is the last root: its tool chain tag is what `build` would be given.
    base_vars = {"TARGET": "DEBUG", "ARCH": ARCH, "TOOL_CHAIN_TAG": toolchain_tag(ws.roots[-1]), **defines}
    dsc = dsc_parser()
    dsc.SetEdk2Path(edk2_path)
    dsc.SetInputVars(dict(base_vars))
    dsc_file = ws.find(dsc_rel)
    if dsc_file is None:
        raise OvmfgenError(f"no such DSC: {dsc_rel}")
    dsc.ParseFile(str(dsc_file))
    local = {k: str(v) for k, v in dsc.LocalVars.items()}
    define_vals = {k: v for k, v in local.items() if not _is_build_option(k) and k not in _PATH_DEFINES}
    build_opts = {k: v for k, v in local.items() if _is_build_option(k)}
    components: dict[str, str] = {}
    for inf, _arch, overrides in dsc.Components:
        parts = [f"{k}|{v}" for k, v in sorted(overrides.items()) if k != "NULL" and isinstance(v, str)]
        parts += [f"NULL|{v}" for v in sorted(overrides.get("NULL", []) or [])]
        components[inf] = ", ".join(parts) or "(no overrides)"
    infos = Infos(ws, edk2_path)
    libraries: dict[str, str] = {}
    for comp in dsc.Components:
        _, resolved = component_libraries(dsc, infos, comp, lenient=True)
        for cls, inst in resolved.items():
            libraries[f"{comp[0]}: {cls}"] = inst
    pcds = {k: " ".join(str(v).split()) for k, v in dsc.PcdValueDict.items()}

    fdf_file = ws.find(fdf_rel)
    fvs: dict[str, tuple[str, ...]] = {}
    fd_tokens: dict[str, str] = {}
    fd_regions: dict[str, str] = {}
    if fdf_file is not None:
        fdf = fdf_parser()
        fdf.SetEdk2Path(edk2_path)
        fdf.SetInputVars({**base_vars, **define_vals})
        fdf.ParseFile(str(fdf_file))
        for name, fv in fdf.FVs.items():
            fvs[name] = (*fv.get("Infs", []), *(f"FILE {g}" for g in fv.get("Files", {})))
        for name, fd in fdf.FDs.items():
            for key, value in fd.get("Dict", {}).items():
                fd_tokens[f"FD.{name}.{key}"] = str(value)
        macros = {**base_vars, **define_vals, **{k: str(v) for k, v in fdf.LocalVars.items()}}
        fd_regions = _fd_regions(fdf_file.read_text(encoding="utf-8", errors="replace"), fdf_rel, ws, macros)
    return View(define_vals, build_opts, components, libraries, pcds, fvs, fd_tokens, fd_regions)


def compare(ours: View, theirs: View) -> list[Difference]:
    """The differences between two views, sorted by group and subject."""
    out: list[Difference] = []

    def cmp(kind: str, a: Mapping[str, object], b: Mapping[str, object]) -> None:
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            if va != vb:
                fmt = (lambda v: "" if v is None else (", ".join(v) if isinstance(v, tuple) else str(v)))
                out.append(Difference(kind, key, fmt(va), fmt(vb)))

    cmp("define", ours.defines, theirs.defines)
    cmp("component", ours.components, theirs.components)
    cmp("library", ours.libraries, theirs.libraries)
    cmp("pcd", ours.pcds, theirs.pcds)
    cmp("build-option", ours.build_options, theirs.build_options)
    for name in sorted(set(ours.fvs) | set(theirs.fvs)):
        a, b = ours.fvs.get(name, ()), theirs.fvs.get(name, ())
        if a != b:
            for item in sorted(set(a) ^ set(b)):
                out.append(Difference("fv", f"FV.{name}: {item}", item if item in a else "", item if item in b else ""))
            if set(a) == set(b):
                out.append(Difference("fv", f"FV.{name}: order", ", ".join(a), ", ".join(b)))
    cmp("fd", ours.fd_tokens, theirs.fd_tokens)
    cmp("fd-region", ours.fd_regions, theirs.fd_regions)
    return sorted(set(out), key=lambda d: (GROUPS.index(d.kind), d.subject))


def diff_files(ours: tuple[Workspace, str, str], theirs: tuple[Workspace, str, str],
               configurations: tuple[tuple[tuple[str, str], ...], ...] = CONFIGURATIONS) -> dict[str, list[Difference]]:
    """Differences per configuration label ("default", "FD_SIZE_4MB=TRUE", ...)."""
    result: dict[str, list[Difference]] = {}
    for config in configurations:
        label = ", ".join(f"{k}={v}" for k, v in config) or "default"
        defines = dict(config)
        result[label] = compare(resolve(ours[1], ours[2], ours[0], defines),
                                resolve(theirs[1], theirs[2], theirs[0], defines))
    return result


def _delta_matches(delta_kind: str, delta_subject: str, diff: Difference) -> bool:
    return delta_kind == diff.kind and (diff.subject == delta_subject or delta_subject in diff.subject
                                       or delta_subject in diff.ours or delta_subject in diff.theirs)


def override_differences(r: Resolved) -> list[Difference]:
    """One ``file`` difference per file the overrides change whose bytes differ from the edk2 tree's file
    at its path (named by the override files or patches that changed it)."""
    platform, edk2_root = r.platform, r.tree.root
    sources = override_sources(r.steps)
    out = []
    for rel, ours in r.override_files.items():
        upstream = edk2_root / rel
        theirs = upstream.read_bytes() if upstream.is_file() else None
        if ours != theirs:
            out.append(Difference("file", rel, " + ".join(f"overrides/{platform.name}/{s}" for s in sources[rel]),
                                  "edk2" if theirs is not None else ""))
    return out


def diff_platform(r: Resolved, against_dsc: Path, against_fdf: Path
                  ) -> tuple[dict[str, list[Difference]], list[Difference], list[str]]:
    """(differences per configuration, unexplained ones, listed deltas never observed) of the resolved
    platform (its render, the files its overrides make) against ``against_dsc``/``against_fdf``."""
    platform, edk2_root = r.platform, r.tree.root
    with tempfile.TemporaryDirectory(prefix="ovmfgen-diff-") as tmp:
        ws_root = prepare_workspace(r, Path(tmp))
        ours_ws = Workspace((ws_root, edk2_root))
        theirs_ws = Workspace((against_dsc.parent, edk2_root))
        # Upstream files are resolved in the edk2 tree by their tree-relative path when they live there.
        try:
            dsc_rel = against_dsc.resolve().relative_to(edk2_root.resolve()).as_posix()
            fdf_rel = against_fdf.resolve().relative_to(edk2_root.resolve()).as_posix()
            theirs_ws = Workspace((edk2_root,))
        except ValueError:
            dsc_rel, fdf_rel = against_dsc.name, against_fdf.name
        per_config = diff_files((ours_ws, platform.dsc_path, platform.fdf_path), (theirs_ws, dsc_rel, fdf_rel))
        files = override_differences(r)
    for diffs in per_config.values():
        # An override replaces the file in every configuration.
        diffs.extend(files)
    unexplained: list[Difference] = []
    seen_deltas: set[int] = set()
    for diffs in per_config.values():
        for d in diffs:
            hits = [i for i, delta in enumerate(platform.deltas) if _delta_matches(delta.kind, delta.subject, d)]
            if hits:
                seen_deltas.update(hits)
            elif d not in unexplained:
                unexplained.append(d)
    stale = [f"{delta.kind} {delta.subject}" for i, delta in enumerate(platform.deltas)
             if i not in seen_deltas and not delta.carried]
    # A delta carried from the release it was written for (its fix left out, or upstream now the same):
    # one note, not a stale delta.
    for i, delta in enumerate(platform.deltas):
        if i not in seen_deltas and delta.carried:
            say(f"{delta.loc or platform.name}: note: delta {delta.kind} {delta.subject}, written for "
                f"{delta.carried}, is no longer observed on {r.tree.tag}: upstream now does the same; end its "
                f"'edk2:' at {delta.carried}", prefix=False)
    return per_config, unexplained, stale


def _summarise_libraries(diffs: list[Difference], all_diffs: dict[Difference, list[str]],
                         unexplained: list[Difference], lines: list[str], n_configs: int) -> list[Difference]:
    """Library lines that would repeat, said once; returns the differences still to print one by one.

    A component present on one side only resolves every class on that side: one line for it. A class
    that changed the same way in many components (a new class, an instance replaced) is one line
    with the count, which is what changed upstream ("library classes per module type").
    """
    only_one_side: dict[str, list[Difference]] = {}
    for d in diffs:
        component, _, _cls = d.subject.partition(": ")
        only_one_side.setdefault(component, []).append(d)
    rest: list[Difference] = []
    for component, group in sorted(only_one_side.items()):
        mark = "!" if any(d in unexplained for d in group) else " "
        if all(not d.ours for d in group) and len(group) > 3:
            lines.append(f" {mark} {component}: {len(group)} library classes resolved upstream only "
                         "(component absent here)")
        elif all(not d.theirs for d in group) and len(group) > 3:
            lines.append(f" {mark} {component}: {len(group)} library classes resolved here only "
                         "(component absent upstream)")
        else:
            rest.extend(group)
    same: dict[tuple[str, str, str, tuple[str, ...], bool], list[Difference]] = {}
    for d in rest:
        _component, _, cls = d.subject.partition(": ")
        same.setdefault((cls, d.theirs, d.ours, tuple(all_diffs[d]), d in unexplained), []).append(d)
    out: list[Difference] = []
    for (cls, theirs, ours, configs, bad), group in sorted(same.items(), key=lambda kv: kv[0][:3]):
        if len(group) <= 3:
            out.extend(group)
            continue
        where = "" if len(configs) == n_configs else f"   [{'; '.join(configs)}]"
        lines.append(f" {'!' if bad else ' '} {cls}: {theirs or '(absent)'} -> {ours or '(absent)'}   "
                     f"(in {len(group)} components){where}")
    return out


def format_report(platform: Platform, per_config: dict[str, list[Difference]], unexplained: list[Difference],
                  stale: list[str]) -> str:
    """The grouped, readable report ``invoke diff`` prints."""
    lines: list[str] = []
    all_diffs: dict[Difference, list[str]] = {}
    for label, diffs in per_config.items():
        for d in diffs:
            all_diffs.setdefault(d, []).append(label)
    for group in GROUPS:
        group_diffs = [d for d in all_diffs if d.kind == group]
        if not group_diffs:
            continue
        lines.append(f"{_GROUP_TITLES[group]}:")
        if group == "library":
            group_diffs = _summarise_libraries(group_diffs, all_diffs, unexplained, lines, len(per_config))
        for d in sorted(group_diffs, key=lambda x: x.subject):
            configs = all_diffs[d]
            where = "" if len(configs) == len(per_config) else f"   [{'; '.join(configs)}]"
            mark = "!" if d in unexplained else " "
            lines.append(f" {mark} {d.line()}{where}")
            # Every delta that explains it (a file two overrides change has a reason for each change).
            if d not in unexplained:
                lines.extend(f"      delta: {r}" for r in dict.fromkeys(
                    dl.reason for dl in platform.deltas if _delta_matches(dl.kind, dl.subject, d)))
    if not lines:
        lines.append("no semantic differences")
    if unexplained:
        lines.append(f"{len(unexplained)} unexplained difference(s) (marked !): list them under deltas: with a reason, "
                     "or fix the platform")
    for s in stale:
        lines.append(f"listed delta never observed: {s}")
    return "\n".join(lines)


def diff_command(platform_name: str, against: str | None = None, fdf: str | None = None,
                 edk2: str | None = None) -> None:
    """``invoke diff``: print the semantic differences; exit 1 on an unexplained one (or a stale delta).

    Compares against ``against`` (a DSC; its FDF beside it or ``fdf``), by default the platform's
    upstream (``upstream: dsc/fdf``) in the tree of ``edk2`` (a tag; None: the default tree). It never
    refuses for a platform that does not validate against that tree: the differences come first (what
    upstream changed), the validation error after them, and the exit status is 1.
    """
    r = platform_resolve.resolve(make_request(platform_name, edk2=edk2))
    tree, platform = r.tree, r.platform
    try:
        validate(r)
        invalid = None
    except OvmfgenError as exc:
        invalid = exc
    if against is None:
        if platform.upstream is None:
            raise OvmfgenError(f"{platform.source} has no 'upstream:' (dsc, fdf); pass --against")
        dsc_path, fdf_path = tree.root / platform.upstream.dsc, tree.root / platform.upstream.fdf
        shown = f"{platform.upstream.dsc} of {tree.tag}"
        for path in (dsc_path, fdf_path):
            if not path.is_file():
                raise OvmfgenError(f"upstream file {path.relative_to(tree.root)} is not in the edk2 tree {tree.tag}",
                                   platform.loc)
    else:
        dsc_path, _ = _resolve_input(against, tree.tag)
        fdf_path, _ = _resolve_input(fdf, tree.tag) if fdf else (dsc_path.with_suffix(".fdf"), "")
        shown = against
        if not fdf_path.is_file():
            raise OvmfgenError(f"no FDF beside {against}; pass --fdf")
    per_config, unexplained, stale = diff_platform(r, dsc_path, fdf_path)
    print(format_report(platform, per_config, unexplained, stale), flush=True)
    if invalid is not None:
        print(f"{platform.name} does not validate against {tree.tag}:", flush=True)
        raise invalid
    if unexplained or stale:
        raise OvmfgenError(f"{platform.name} differs from {shown} beyond its listed deltas")
