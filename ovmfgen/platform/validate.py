"""Check a platform against the edk2 tree before any EDK2 tool runs.

What the YAML shape cannot tell (``load`` checked that) but the tree can:

* every INF and ``!include`` path exists in the workspace (overrides) or the edk2 tree;
* every library class a component needs (per its INF, for its module type, through the library
  instances it pulls in) has a mapping;
* every PCD the platform sets is declared in a DEC of the packages it builds;
* FD regions neither overlap nor run past the FD, and the PVH ELF header region can hold the header.

edk2toollib's parsers do the reading (DscParser for the effective library scopes and component
overrides, InfParser, DecParser, FdfParser for FDF macros); errors point at the YAML statement.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ovmfgen import elf
from ovmfgen.edk2.conventions import ARCH, FD_SIZES_KB, toolchain_tag
from ovmfgen.errors import Location, OvmfgenError
from ovmfgen.platform.model import (
    Component, Conditional, Field, Include, Inf, LibraryMapping, Pcd, Platform, Region, RegionPcds, ReservedRegion,
    Section, SetPcd, Statement, walk,
)
from ovmfgen.edk2.toollib import (
    Workspace, conditional_evaluator, dsc_parser, expand_macros, fdf_parser, quiet_edk2toollib,
    edk2_path as make_edk2_path,
)
from ovmfgen.platform.resolve import Resolved


def _all_statements(sections: tuple[Section, ...]) -> Iterator[tuple[Section, Statement]]:
    for section in sections:
        for stmt in walk(section.body):
            yield section, stmt


def check_paths(platform: Platform, ws: Workspace) -> None:
    """Every INF and include the platform names exists (all ``!if`` branches, not just the active one)."""
    for section, stmt in _all_statements(platform.dsc + platform.fdf):
        if isinstance(stmt, Component):
            path, what = stmt.inf, "component INF"
        elif isinstance(stmt, LibraryMapping):
            path, what = stmt.inf, f"library instance for {stmt.lib_class}"
        elif isinstance(stmt, Inf):
            path, what = stmt.path, "INF"
        elif isinstance(stmt, Include):
            path, what = stmt.path, "include file"
        else:
            continue
        if "$(" in path:
            continue  # macro paths are resolved by EDK2 itself
        if ws.find(path) is None:
            raise OvmfgenError(f"{what} not found in the edk2 tree or overrides: {path}", stmt.loc)


# ---------------------------------------------------------------------------------------------
# Library classes


class Infos:
    """InfParser results, parsed once per path."""

    def __init__(self, ws: Workspace, edk2_path: object) -> None:
        self.ws = ws
        self.edk2_path = edk2_path
        self.cache: dict[str, object] = {}

    def get(self, rel: str) -> object | None:
        if rel in self.cache:
            return self.cache[rel]
        # Function-local: edk2toollib is slow to import; `invoke build`'s no-op path never needs it.
        from edk2toollib.uefi.edk2.parsers.inf_parser import InfParser

        found = self.ws.find(rel)
        info = None
        if found is not None:
            parser = InfParser()
            parser.SetEdk2Path(self.edk2_path)
            parser.SetInputVars({"ARCH": ARCH})
            parser.ParseFile(str(found))
            info = parser
        self.cache[rel] = info
        return info


def _needed_classes(info: object) -> list[str]:
    # [LibraryClasses] plus [LibraryClasses.X64]; other architectures' sections do not apply.
    scoped = getattr(info, "ScopedLibraryDict", {})
    out = []
    for entry in [*scoped.get("common", []), *scoped.get(ARCH.lower(), [])]:
        name = entry.split("|")[0].strip()
        if name:
            out.append(name)
    return out


class MissingLibrary(Exception):
    """A library class with no instance for a component's module type."""

    def __init__(self, lib_class: str, component: str, module_type: str, needed_by: str) -> None:
        super().__init__(lib_class)
        self.lib_class, self.component, self.module_type, self.needed_by = lib_class, component, module_type, needed_by

    def message(self) -> str:
        via = "" if self.needed_by == self.component else f" (needed by {self.needed_by})"
        return f"library class {self.lib_class} has no mapping for {self.component} ({self.module_type}){via}"


NO_MAPPING = "(no mapping)"


def component_libraries(dsc_parser: object, infos: Infos, component: tuple,
                        lenient: bool = False) -> tuple[str, dict[str, str]]:
    """(module type, {library class: instance INF}) for one DscParser component, resolved transitively.

    EDK2's precedence: the component's own <LibraryClasses>, then [LibraryClasses.ARCH.MODULE_TYPE],
    [LibraryClasses.common.MODULE_TYPE], [LibraryClasses.ARCH], [LibraryClasses]. Raises MissingLibrary,
    unless ``lenient`` (the semantic diff), which records NO_MAPPING for the class and goes on.
    """
    scoped: dict[str, list[str]] = getattr(dsc_parser, "ScopedLibraryDict", {})
    inf_rel, _arch, overrides = component[0], component[1], component[2]
    info = infos.get(inf_rel)
    if info is None:
        return "", {}
    module_type = str(getattr(info, "Dict", {}).get("MODULE_TYPE", "")).upper()

    def lookup(lib_class: str) -> str | None:
        lc = lib_class.lower()
        if lc in overrides and isinstance(overrides[lc], str):
            return overrides[lc]
        mt = module_type.lower()
        for scope in (f"{ARCH.lower()}.{mt}", f"common.{mt}", ARCH.lower(), "common"):
            entries = scoped.get(f"{scope}.{lc}")
            if entries:
                return entries[-1]
        return None

    todo: list[tuple[str, str]] = [(c, inf_rel) for c in _needed_classes(info)]
    for null_lib in overrides.get("NULL", []) or []:
        todo.extend((c, null_lib) for c in _needed_classes(infos.get(null_lib) or object()))
    resolved: dict[str, str] = {}
    while todo:
        lib_class, needed_by = todo.pop()
        if lib_class in resolved:
            continue
        instance = lookup(lib_class)
        if instance is None:
            if lenient:
                resolved[lib_class] = NO_MAPPING
                continue
            raise MissingLibrary(lib_class, inf_rel, module_type, needed_by)
        resolved[lib_class] = instance
        inst_info = infos.get(instance)
        if inst_info is not None:
            todo.extend((c, instance) for c in _needed_classes(inst_info))
    return module_type, dict(sorted(resolved.items()))


def check_libraries(platform: Platform, dsc_parser: object, infos: Infos) -> None:
    """Every library class needed, transitively, by each component has a mapping for its module type."""
    comp_locs = {stmt.inf: stmt.loc for _, stmt in _all_statements(platform.dsc) if isinstance(stmt, Component)}
    for comp in getattr(dsc_parser, "Components", []):
        try:
            _, resolved = component_libraries(dsc_parser, infos, comp)
        except MissingLibrary as missing:
            raise OvmfgenError(missing.message(), comp_locs.get(comp[0])) from None
        for lib_class, instance in resolved.items():
            if infos.get(instance) is None:
                raise OvmfgenError(f"library instance not found for {lib_class}: {instance}", comp_locs.get(comp[0]))


# ---------------------------------------------------------------------------------------------
# PCDs


def check_pcds(platform: Platform, infos: Infos, edk2_path: object) -> None:
    """Every PCD the platform sets (any section, any branch) is declared in a DEC of its packages."""
    # Function-local: edk2toollib is slow to import; `invoke build`'s no-op path never needs it.
    from edk2toollib.uefi.edk2.parsers.dec_parser import DecParser

    packages: set[str] = set()
    for info in infos.cache.values():
        if info is not None:
            packages.update(getattr(info, "PackagesUsed", []))
    declared: set[str] = set()
    for dec in sorted(packages):
        found = infos.ws.find(dec)
        if found is None:
            continue
        parser = DecParser()
        parser.SetEdk2Path(edk2_path)
        parser.ParseFile(str(found))
        for entry in parser.Pcds:
            declared.add(f"{entry.token_space_name}.{entry.name}")
    for _, stmt in _all_statements(platform.dsc + platform.fdf):
        names: list[str] = []
        if isinstance(stmt, Pcd):
            names = [stmt.name]
        elif isinstance(stmt, SetPcd):
            names = [stmt.name]
        elif isinstance(stmt, RegionPcds):
            names = [stmt.base, stmt.size]
        for name in names:
            # A structured PCD's field (Guid.PcdName.Field, Guid.PcdName[0]) belongs to Guid.PcdName.
            if ".".join(name.split("[")[0].split(".")[:2]) not in declared:
                raise OvmfgenError(f"PCD {name} is not declared in any DEC of the platform's packages "
                                   f"({', '.join(sorted(packages)) or 'none'})", stmt.loc)


# ---------------------------------------------------------------------------------------------
# FD layout


def _fdf_macros(fdf_rel: str, ws_root: Path, edk2_path: object, fd_size_kb: int) -> dict[str, str]:
    parser = fdf_parser()
    parser.SetEdk2Path(edk2_path)
    parser.SetInputVars({"FD_SIZE_IN_KB": str(fd_size_kb), "ARCH": ARCH, "TARGET": "DEBUG"})
    parser.ParseFile(str(ws_root / fdf_rel))
    return {**parser.LocalVars, **parser.InputVars}


def active_statements(body: tuple[Statement, ...], evaluate: object) -> Iterator[Statement]:
    """Statements of ``body`` in force for the macros ``evaluate`` knows (``!if`` decided)."""
    for stmt in body:
        if isinstance(stmt, Conditional):
            chosen = stmt.orelse or ()
            for br in stmt.branches:
                if evaluate(br.directive, br.expr):  # type: ignore[operator]
                    chosen = br.body
                    break
            yield from active_statements(chosen, evaluate)
        else:
            yield stmt


def _int(text: str) -> int | None:
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def check_fd_layout(platform: Platform, ws_root: Path, edk2_path: object) -> None:
    """FD regions inside the FD and not overlapping; the ELF header region large enough, per FD size."""
    fd_section = next((s for s in platform.fdf if s.header == f"FD.{platform.fd_name}"), None)
    if fd_section is None:
        raise OvmfgenError(f"the FDF has no [FD.{platform.fd_name}] section to publish", platform.loc)
    header_len = len(elf.pvh_header(2 * 1024 * 1024))
    sizes = [kb for kb, _ in platform.elf.header_region] if platform.elf else [int(platform.feature("fd_size")) * 1024]
    for fd_kb in sizes or FD_SIZES_KB:
        macros = _fdf_macros(platform.fdf_path, ws_root, edk2_path, fd_kb)
        evaluate = conditional_evaluator(macros)
        size_text = next((expand_macros(s.value, macros) for s in active_statements(fd_section.body, evaluate)
                          if isinstance(s, Field) and s.name.lower() == "size"), None)
        fd_size = _int(size_text) if size_text else None
        if fd_size is None:
            raise OvmfgenError(f"[FD.{platform.fd_name}] Size does not evaluate to a number for a {fd_kb} KiB FD "
                               f"(got '{size_text}')", fd_section.loc)
        regions: list[tuple[int, int, Location | None, bool]] = []
        for stmt in active_statements(fd_section.body, evaluate):
            if isinstance(stmt, Region):
                off, size = _int(expand_macros(stmt.offset, macros)), _int(expand_macros(stmt.size, macros))
                if off is None or size is None:
                    raise OvmfgenError(f"FD region {stmt.offset}|{stmt.size} does not evaluate to numbers for a "
                                       f"{fd_kb} KiB FD", stmt.loc)
                regions.append((off, size, stmt.loc, False))
            elif isinstance(stmt, ReservedRegion) and regions:
                off, size, loc, _ = regions[-1]
                regions[-1] = (off, size, loc, True)
        for off, size, loc, _ in regions:
            if off + size > fd_size:
                raise OvmfgenError(f"FD region 0x{off:x}|0x{size:x} ends at 0x{off + size:x}, past the end of the "
                                   f"{fd_kb} KiB FD (0x{fd_size:x})", loc)
        ordered = sorted(regions, key=lambda r: r[0])
        for (a_off, a_size, _, _), (b_off, b_size, b_loc, _) in zip(ordered, ordered[1:]):
            if b_off < a_off + a_size:
                raise OvmfgenError(f"FD region 0x{b_off:x}|0x{b_size:x} overlaps region 0x{a_off:x}|0x{a_size:x} "
                                   f"for a {fd_kb} KiB FD", b_loc)
        if platform.elf is not None:
            reserved = [(off, size, loc) for off, size, loc, res in regions if res]
            want = platform.elf.reserved_for(fd_kb)
            if not reserved or reserved[0][0] != 0:
                raise OvmfgenError(f"no region at FD offset 0 is reserved for the PVH ELF header for a {fd_kb} KiB FD "
                                   "(mark it with 'reserved: PVH ELF header')", fd_section.loc)
            _, rsize, rloc = reserved[0]
            if rsize < header_len:
                raise OvmfgenError(f"the ELF header region (0x{rsize:x} bytes) cannot hold the PVH ELF header "
                                   f"({header_len} bytes) for a {fd_kb} KiB FD", rloc)
            if want is not None and want != rsize:
                raise OvmfgenError(f"elf.header_region says 0x{want:x} for a {fd_kb} KiB FD but the reserved region is "
                                   f"0x{rsize:x}", rloc)


# ---------------------------------------------------------------------------------------------


def prepare_workspace(r: Resolved, root: Path) -> Path:
    """Lay out a checking workspace at ``root``: the rendered files under their package dir plus the
    files the overrides make (as ``r`` applied them once)."""
    for rel, data in {**r.rendered_files, **r.override_files}.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def _cache_key(r: Resolved) -> str:
    """What a validation result depends on: the rendered files, what the overrides make, the tree, this checker."""
    h = hashlib.sha256()
    for name, data in r.rendered.files().items():
        h.update(name.encode() + b"\0" + data + b"\0")
    for rel, data in r.override_files.items():
        h.update(rel.encode() + b"\0" + data + b"\0")
    h.update(r.tree.digest.encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _marker_prefix(platform: Platform) -> str:
    # One marker per platform and release, so that checking against one tree keeps the other's.
    return f"{platform.name}-{platform.edk2}-" if platform.edk2 else f"{platform.name}-"


def validate(r: Resolved, use_cache: bool = True) -> None:
    """Check the resolved platform's rendered files and overrides against its edk2 tree; the first
    problem raises ``OvmfgenError`` located in the YAML.

    A passing result is remembered (``layout.validated_dir``) under a key over everything the checks
    read, so unchanged platforms re-check fast; any change to YAML, overrides, tree or checker re-runs it.
    """
    platform, edk2_root = r.platform, r.tree.root
    marker = None
    if use_cache:
        marker = r.layout.validated_dir / f"{_marker_prefix(platform)}{_cache_key(r)}"
        if marker.is_file():
            return
    quiet_edk2toollib()
    with tempfile.TemporaryDirectory(prefix="ovmfgen-validate-") as tmp:
        ws_root = prepare_workspace(r, Path(tmp))
        ws = Workspace((ws_root, edk2_root))
        check_paths(platform, ws)
        edk2_path = make_edk2_path(ws_root, [edk2_root])
        dsc = dsc_parser()
        dsc.SetEdk2Path(edk2_path)
        dsc.SetInputVars({"TARGET": "DEBUG", "ARCH": ARCH, "TOOL_CHAIN_TAG": toolchain_tag(edk2_root)})
        try:
            dsc.ParseFile(platform.dsc_path)
        except Exception as exc:  # noqa: BLE001 - edk2toollib raises bare exceptions on bad input
            raise OvmfgenError(f"edk2toollib cannot parse the rendered DSC: {exc}", platform.loc) from None
        infos = Infos(ws, edk2_path)
        check_libraries(platform, dsc, infos)
        check_pcds(platform, infos, edk2_path)
        if platform.fdf:
            check_fd_layout(platform, ws_root, edk2_path)
    if marker is not None:
        # Old markers of this platform are stale now; keep just the current one.
        for old in marker.parent.glob(f"{_marker_prefix(platform)}*") if marker.parent.is_dir() else ():
            old.unlink(missing_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
