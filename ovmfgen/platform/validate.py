"""Check a platform against the edk2 tree before any EDK2 tool runs.

Like EDK2's build, validate checks the configuration being built: the ``!if`` branches active under
that build's macros (the DSC's DEFINEs with the build's ``-D`` overriding them, TARGET, ARCH, the
tool chain tag; the FDF's DEFINEs on top for the FDF) and the sections and components of its x86
architectures (``X86_ARCHES``: X64, and IA32 where the DSC's SUPPORTED_ARCHITECTURES lists it, as
for the PEI phase of OvmfPkgIa32X64) or common ones. A branch or an AARCH64 section the build leaves
out is not checked: a missing INF there is no error until a ``--define`` turns it on. For that
configuration, what the YAML shape cannot tell (``load`` checked that) but the tree can:

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
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ovmfgen import elf
from ovmfgen.edk2 import toollib
from ovmfgen.edk2.conventions import ARCH, FD_SIZE_DEFINE, FD_SIZES_KB, fd_size_define, fd_size_kb, toolchain_tag
from ovmfgen.errors import Location, OvmfgenError
from ovmfgen.platform.model import (
    Component, Conditional, Field, Include, Inf, LibraryMapping, Pcd, Platform, Region, RegionPcds, ReservedRegion,
    Section, SetPcd, Statement,
)
from ovmfgen.edk2.toollib import (
    Workspace, conditional_evaluator, dsc_parser, expand_macros, fdf_parser, quiet_edk2toollib,
    edk2_path as make_edk2_path,
)
from ovmfgen.platform.resolve import Resolved


class Configuration:
    """What one build builds: the macros deciding its ``!if`` branches, in the DSC and in the FDF.

    ``build_vars``: what the build passes (TARGET, ARCH, TOOL_CHAIN_TAG and every ``-D``, the FD
    size's among them); ``dsc_defines``: the DSC's DEFINEs as edk2toollib's DscParser leaves them after
    the whole DSC and its ``!include``s under those. As in EDK2's build, the build's win over the
    DSC's and the FDF's DEFINEs; the FDF's over the DSC's.
    """

    def __init__(self, build_vars: dict[str, str], dsc_defines: dict[str, str], fd_size_kb: int,
                 fdf: tuple[Path, object] | None = None) -> None:
        self.build_vars, self.dsc_defines, self.fd_size_kb = build_vars, dsc_defines, fd_size_kb
        supported = dsc_defines.get("SUPPORTED_ARCHITECTURES", ARCH).upper().replace("|", " ").split()
        self.arches = tuple(a for a in X86_ARCHES if a in supported) or (ARCH,)
        self.fdf = fdf  # (the FDF file, edk2toollib's Edk2Path) or None for a platform without one
        self._fdf_macros: dict[int, dict[str, str]] = {}
        self.fdf_error: Exception | None = None  # edk2toollib could not parse the FDF (macros as far as it got)

    @property
    def dsc_macros(self) -> dict[str, str]:
        """The macros in force in the DSC."""
        return {**self.dsc_defines, **self.build_vars}

    def fdf_macros(self, fd_kb: int | None = None) -> dict[str, str]:
        """The macros in force in the FDF, for this build's FD size or (the FD layout check, per size
        the platform publishes) for ``fd_kb``: the FD size's ``-D`` and FD_SIZE_IN_KB are that size's."""
        kb = self.fd_size_kb if fd_kb is None else fd_kb
        if kb not in self._fdf_macros:
            build = {k: v for k, v in self.build_vars.items() if not FD_SIZE_DEFINE.match(k)}
            build.update({fd_size_define(kb // 1024): "TRUE", "FD_SIZE_IN_KB": str(kb)})
            local: dict[str, str] = {}
            if self.fdf is not None:
                fdf_file, edk2_path = self.fdf
                parser = fdf_parser()
                parser.SetEdk2Path(edk2_path)
                parser.SetInputVars({**self.dsc_defines, **build})
                try:
                    parser.ParseFile(str(fdf_file))
                except Exception as exc:  # noqa: BLE001 - edk2toollib raises bare exceptions on bad input
                    self.fdf_error = self.fdf_error or exc
                local = {k: str(v) for k, v in parser.LocalVars.items()}
            self._fdf_macros[kb] = {**self.dsc_defines, **local, **build}
        return self._fdf_macros[kb]

    def statements(self, platform: Platform) -> Iterator[tuple[Section, Statement]]:
        """The DSC's and FDF's statements this build uses: active branches (the one ``active_statements``
        decides with ``conditional_evaluator``), DSC sections of the checked architectures or common,
        into components' ``<LibraryClasses>``/``<Pcds...>`` blocks."""
        for sections, arch_scoped in ((platform.dsc, True), (platform.fdf, False)):
            if not sections:
                continue
            evaluate = conditional_evaluator(self.dsc_macros if arch_scoped else self.fdf_macros())
            for section in sections:
                if arch_scoped and not section_for_arch(section.header, self.arches):
                    continue
                for stmt in _active_deep(section.body, evaluate):
                    yield section, stmt


X86_ARCHES = ("IA32", ARCH)
"""The architectures validate checks, of those a DSC supports: ovmfgen's platforms are x86 PC firmware."""


def section_for_arch(header: str, arches: tuple[str, ...] = (ARCH,)) -> bool:
    """Whether a DSC section header (``Components.X64, Components.AARCH64``, ``PcdsFixedAtBuild``,
    ``LibraryClasses.common.PEIM``) applies to one of ``arches``: a scope of it is unscoped, common or
    one of them."""
    for part in header.split(","):
        words = part.strip().split(".")
        if len(words) < 2 or words[1].strip().upper() in ("COMMON", *arches):
            return True
    return False


def _active_deep(body: tuple[Statement, ...], evaluate: object) -> Iterator[Statement]:
    for stmt in active_statements(body, evaluate):
        yield stmt
        if isinstance(stmt, Component):
            for sub in stmt.subsections:
                yield from _active_deep(sub.body, evaluate)


def check_paths(platform: Platform, ws: Workspace, config: Configuration) -> None:
    """Every INF and include the build at hand uses exists."""
    for section, stmt in config.statements(platform):
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


def _needed_classes(info: object, arch: str = ARCH) -> list[str]:
    # [LibraryClasses] plus [LibraryClasses.<arch>]; other architectures' sections do not apply.
    scoped = getattr(info, "ScopedLibraryDict", {})
    out = []
    for entry in [*scoped.get("common", []), *scoped.get(arch.lower(), [])]:
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
                        lenient: bool = False, arch: str = ARCH) -> tuple[str, dict[str, str]]:
    """(module type, {library class: instance INF}) for one DscParser component built for ``arch``,
    resolved transitively.

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
        for scope in (f"{arch.lower()}.{mt}", f"common.{mt}", arch.lower(), "common"):
            entries = scoped.get(f"{scope}.{lc}")
            if entries:
                return entries[-1]
        return None

    todo: list[tuple[str, str]] = [(c, inf_rel) for c in _needed_classes(info, arch)]
    for null_lib in overrides.get("NULL", []) or []:
        todo.extend((c, null_lib) for c in _needed_classes(infos.get(null_lib) or object(), arch))
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
            todo.extend((c, instance) for c in _needed_classes(inst_info, arch))
    return module_type, dict(sorted(resolved.items()))


def arch_components(dsc_parser: object, arches: tuple[str, ...]) -> list[tuple]:
    """The DscParser's components of ``arches`` (it lists a component once per architecture of its
    section; [Components] once per SUPPORTED_ARCHITECTURES entry)."""
    return [comp for comp in getattr(dsc_parser, "Components", []) if str(comp[1]).upper() in arches]


def check_libraries(platform: Platform, dsc_parser: object, infos: Infos, config: Configuration) -> None:
    """Every library class needed, transitively, by each component built has a mapping for its module type."""
    comp_locs = {stmt.inf: stmt.loc for _, stmt in config.statements(platform) if isinstance(stmt, Component)}
    for comp in arch_components(dsc_parser, config.arches):
        # A component an `!include`d file adds has no statement of its own: the platform file then.
        loc = comp_locs.get(comp[0]) or platform.loc
        try:
            _, resolved = component_libraries(dsc_parser, infos, comp, arch=str(comp[1]).upper())
        except MissingLibrary as missing:
            raise OvmfgenError(missing.message(), loc) from None
        for lib_class, instance in resolved.items():
            if infos.get(instance) is None:
                raise OvmfgenError(f"library instance not found for {lib_class}: {instance}", loc)


# ---------------------------------------------------------------------------------------------
# PCDs


def check_pcds(platform: Platform, infos: Infos, edk2_path: object, config: Configuration) -> None:
    """Every PCD the build at hand sets is declared in a DEC of the packages its modules use."""
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
    for _, stmt in config.statements(platform):
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


def check_fd_layout(platform: Platform, config: Configuration) -> None:
    """FD regions inside the FD and not overlapping; the ELF header region large enough, per FD size the
    platform publishes (each size's active branches)."""
    fd_section = next((s for s in platform.fdf if s.header == f"FD.{platform.fd_name}"), None)
    if fd_section is None:
        raise OvmfgenError(f"the FDF has no [FD.{platform.fd_name}] section to publish", platform.loc)
    header_len = len(elf.pvh_header(2 * 1024 * 1024))
    sizes = [kb for kb, _ in platform.elf.header_region] if platform.elf else [int(platform.feature("fd_size")) * 1024]
    for fd_kb in sizes or FD_SIZES_KB:
        macros = config.fdf_macros(fd_kb)
        evaluate = conditional_evaluator(macros)
        size_text = next((expand_macros(s.value, macros) for s in active_statements(fd_section.body, evaluate)
                          if isinstance(s, Field) and s.name.lower() == "size"), None)
        # `Size = 0x700000 | gPkgTokenSpaceGuid.PcdFdSize` also sets that PCD: the number is before the bar.
        fd_size = _int(size_text.split("|")[0]) if size_text else None
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


def build_vars(r: Resolved) -> dict[str, str]:
    """The macros the build of ``r`` passes to EDK2: TARGET, ARCH, TOOL_CHAIN_TAG and ``r.defines``."""
    return {"TARGET": r.request.target, "ARCH": ARCH, "TOOL_CHAIN_TAG": toolchain_tag(r.tree.root), **r.defines}


def configuration(r: Resolved, ws_root: Path, edk2_path: object, dsc: object) -> Configuration:
    """The configuration of the build of ``r``, from ``dsc`` (a DscParser that parsed its DSC with
    ``build_vars(r)`` as input vars winning over the DSC's DEFINEs)."""
    defines = {k: str(v) for k, v in getattr(dsc, "LocalVars", {}).items() if re.fullmatch(r"\w+", k)}
    fdf = (ws_root / r.platform.fdf_path, edk2_path) if r.platform.fdf else None
    return Configuration(dict(dsc.InputVars), defines, fd_size_kb(r.fd_size), fdf)  # type: ignore[attr-defined]


def _cache_key(r: Resolved) -> str:
    """What a validation result depends on: the rendered files, what the overrides make, the tree, the
    build's macros (target and ``-D``: they decide the branches checked), this checker."""
    h = hashlib.sha256()
    for name, value in sorted(build_vars(r).items()):
        h.update(name.encode() + b"=" + value.encode() + b"\0")
    for name, data in r.rendered.files().items():
        h.update(name.encode() + b"\0" + data + b"\0")
    for rel, data in r.override_files.items():
        h.update(rel.encode() + b"\0" + data + b"\0")
    h.update(r.tree.digest.encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(toollib.__file__).read_bytes())  # its parser fixes decide what is active
    return h.hexdigest()


def _marker_prefix(r: Resolved) -> str:
    # One marker per platform, release, variant and target, so that checking one configuration keeps
    # the others'.
    platform = r.platform
    base = f"{platform.name}-{platform.edk2}-" if platform.edk2 else f"{platform.name}-"
    return f"{base}{r.suffix or 'default'}.{r.request.target}-"


def validate(r: Resolved, use_cache: bool = True) -> None:
    """Check the resolved platform's rendered files and overrides against its edk2 tree; the first
    problem raises ``OvmfgenError`` located in the YAML.

    A passing result is remembered (``layout.validated_dir``) under a key over everything the checks
    read, so unchanged platforms re-check fast; any change to YAML, overrides, tree or checker re-runs it.
    """
    platform, edk2_root = r.platform, r.tree.root
    marker = None
    if use_cache:
        marker = r.layout.validated_dir / f"{_marker_prefix(r)}{_cache_key(r)}"
        if marker.is_file():
            return
    quiet_edk2toollib()
    with tempfile.TemporaryDirectory(prefix="ovmfgen-validate-") as tmp:
        ws_root = prepare_workspace(r, Path(tmp))
        ws = Workspace((ws_root, edk2_root))
        edk2_path = make_edk2_path(ws_root, [edk2_root])
        dsc = dsc_parser(input_vars_win=True)
        dsc.SetEdk2Path(edk2_path)
        dsc.SetInputVars(build_vars(r))
        try:
            dsc.ParseFile(platform.dsc_path)
        except Exception as exc:  # noqa: BLE001 - edk2toollib raises bare exceptions on bad input
            # A missing `!include` is the usual cause: say which statement, with the macros so far.
            check_paths(platform, ws, configuration(r, ws_root, edk2_path, dsc))
            raise OvmfgenError(f"edk2toollib cannot parse the rendered DSC: {exc}", platform.loc) from None
        config = configuration(r, ws_root, edk2_path, dsc)
        check_paths(platform, ws, config)
        if config.fdf_error is not None:
            raise OvmfgenError(f"edk2toollib cannot parse the rendered FDF: {config.fdf_error}", platform.loc)
        infos = Infos(ws, edk2_path)
        check_libraries(platform, dsc, infos, config)
        check_pcds(platform, infos, edk2_path, config)
        if platform.fdf:
            check_fd_layout(platform, config)
    if marker is not None:
        # Old markers of this platform are stale now; keep just the current one.
        for old in marker.parent.glob(f"{_marker_prefix(r)}*") if marker.parent.is_dir() else ():
            old.unlink(missing_ok=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
