"""The platform model: frozen dataclasses, no I/O.

A platform is an EDK2 DSC and FDF held as data: ordered sections of statements, where a statement
is a library mapping, a PCD, a component, an ``!include``, a conditional block, ... . Keeping the
upstream file's shape (instead of a fully resolved set) is what lets the rendered XenOvmf.dsc read
like an upstream file, keep its ``!if`` blocks for build-time ``-D`` switches, and round-trip an
imported upstream platform.

Every node carries the ``Location`` of the YAML (or DSC/FDF) text it came from, excluded from
equality so that two models compare by content.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ovmfgen.errors import Location


def _loc() -> Location | None:
    return field(default=None, compare=False, kw_only=True, repr=False)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Statements (shared by DSC and FDF bodies)


@dataclass(frozen=True)
class Comment:
    """A ``# text`` line (kept so generated files read like upstream ones)."""

    text: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Include:
    """``!include path`` (resolved by EDK2 against the workspace and PACKAGES_PATH)."""

    path: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Define:
    """``DEFINE NAME = VALUE`` (a macro; in [Defines] these are the build-time ``-D`` defaults)."""

    name: str
    value: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Field:
    """``NAME = VALUE``: a [Defines] header field, an FD token or an FV attribute."""

    name: str
    value: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class SetPcd:
    """FDF ``SET pcd = value``."""

    name: str
    value: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class ErrorDirective:
    """``!error message``."""

    message: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class LibraryMapping:
    """``LibClass|Path/To/Instance.inf`` (``NULL`` for a library linked into one component)."""

    lib_class: str
    inf: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Pcd:
    """``TokenSpace.PcdName|value[|extra...]`` in a Pcds* section."""

    name: str
    value: str
    extra: tuple[str, ...] = ()
    loc: Location | None = _loc()


@dataclass(frozen=True)
class BuildOption:
    """``[FAMILY:]TARGET_TAG_ARCH_TOOL_FLAGS = value`` (``==`` replaces instead of appending)."""

    key: str
    value: str
    replace: bool = False
    loc: Location | None = _loc()


@dataclass(frozen=True)
class SubSection:
    """A ``<LibraryClasses>``/``<PcdsFixedAtBuild>``/``<BuildOptions>`` block inside a component."""

    kind: str
    body: tuple[Statement, ...]
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Component:
    """A module in [Components], optionally with per-component overrides."""

    inf: str
    subsections: tuple[SubSection, ...] = ()
    loc: Location | None = _loc()

    def libraries(self) -> Iterator[LibraryMapping]:
        """The per-component library class overrides (unconditional ones)."""
        for sub in self.subsections:
            if sub.kind == "LibraryClasses":
                for stmt in sub.body:
                    if isinstance(stmt, LibraryMapping):
                        yield stmt


@dataclass(frozen=True)
class Branch:
    """One arm of a conditional: ``!if``/``!ifdef``/``!ifndef``/``!elseif`` with its expression."""

    directive: str
    expr: str
    body: tuple[Statement, ...]
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Conditional:
    """``!if ... [!elseif ...] [!else ...] !endif``: kept in the output, evaluated by EDK2."""

    branches: tuple[Branch, ...]
    orelse: tuple[Statement, ...] | None = None
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Region:
    """FD region start ``offset|size``; the PCD pair and content that follow belong to it."""

    offset: str
    size: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class RegionPcds:
    """FD region ``BasePcd|SizePcd`` line."""

    base: str
    size: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class RegionContent:
    """FD region content: ``FV = NAME``, ``DATA = { ... }``, ``FILE = path``, ``CAPSULE = ...``."""

    kind: str
    value: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class ReservedRegion:
    """Marks the region just started as reserved for a post-processor (rendered as a comment).

    xen-pvh leaves the ELF header region erased; ovmfgen's ELF step writes the header there.
    """

    purpose: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Inf:
    """FDF ``INF [options] path``."""

    path: str
    options: str = ""
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Block:
    """A multi-line FDF construct kept verbatim (``FILE ... { }``, ``APRIORI ... { }``, rule bodies)."""

    text: str
    loc: Location | None = _loc()


@dataclass(frozen=True)
class Raw:
    """A line of a section this model does not interpret, kept verbatim."""

    text: str
    loc: Location | None = _loc()


Statement = Union[
    Comment, Include, Define, Field, SetPcd, ErrorDirective, LibraryMapping, Pcd, BuildOption,
    Component, Conditional, Region, RegionPcds, RegionContent, ReservedRegion, Inf, Block, Raw,
]


@dataclass(frozen=True)
class Section:
    """``[Header]`` and its statements, e.g. ``LibraryClasses.common.SEC`` or ``FV.DXEFV``."""

    header: str
    body: tuple[Statement, ...]
    loc: Location | None = _loc()

    @property
    def kind(self) -> str:
        """The section type: the first dotted word of the first header, e.g. ``LibraryClasses``."""
        return self.header.split(",")[0].strip().split(".")[0]


# ---------------------------------------------------------------------------------------------
# The platform


@dataclass(frozen=True)
class Delta:
    """A deliberate difference from the upstream platform, with the reason it exists."""

    kind: str          # e.g. "define", "component", "library", "pcd", "fv", "fd-region"
    subject: str       # what differs, in the diff's own words (e.g. "PLATFORM_NAME")
    reason: str
    loc: Location | None = _loc()
    # The release its ``edk2:`` condition names, when this tree is a later one (a fix carried forward).
    carried: str = ""


@dataclass(frozen=True)
class Upstream:
    """The upstream platform this one is derived from (for ``invoke diff``)."""

    dsc: str
    fdf: str


@dataclass(frozen=True)
class ElfSpec:
    """How the built FD becomes a PVH ELF: load address and the reserved header region per FD size."""

    base: int
    header_region: tuple[tuple[int, int], ...]   # (fd size in KiB, reserved bytes at offset 0)

    def reserved_for(self, fd_size_kb: int) -> int | None:
        """Bytes reserved for the header at FD offset 0 for an FD of ``fd_size_kb`` KiB."""
        return dict(self.header_region).get(fd_size_kb)


@dataclass(frozen=True)
class Override:
    """A file in overrides/<platform>/ that replaces edk2's file at the same relative path, or (``patch``)
    a unified diff there that changes the tree's files it names (platform/overrides.py applies them)."""

    path: str            # the path it shadows in the edk2 tree; with ``patch``, the diff's own file name
    # One copy per edk2 tree, in overrides/<platform>/<tree tag>/<path>: a whole-file replacement must
    # start from each tree's own file, or it would silently revert that tree's other changes to it.
    per_tree: bool = False
    # The commit that sends the change upstream (``invoke patch``): edk2's subject and body.
    commit_subject: str = ""
    commit_body: str = ""
    patch: bool = False
    loc: Location | None = _loc()
    # The release its ``edk2:`` condition names, when this tree is a later one: the entry is a fix of that
    # release's upstream, applied while its patch applies (platform/overrides.py says when it no longer does).
    carried: str = ""

    def source(self, tag: str | None) -> str:
        """The file's path relative to overrides/<platform>/ for the edk2 tree tagged ``tag``."""
        return f"{tag}/{self.path}" if self.per_tree and tag else self.path


@dataclass(frozen=True)
class Whole:
    """A feature whose value is a whole number from ``low`` to ``high`` (``why`` says where the bounds come from)."""

    default: int
    low: int
    high: int
    why: str

    def normal(self, value: str) -> str | None:
        """``value`` in canonical form (decimal, no leading zeros), or None when it is not in range."""
        if not value.isascii() or not value.isdigit() or not self.low <= int(value) <= self.high:
            return None
        return str(int(value))

    def __str__(self) -> str:
        return f"a whole number from {self.low} to {self.high}: {self.why}"


FEATURES: dict[str, tuple[str, ...] | Whole] = {
    # feature -> allowed values (the first is the default), or the range of a numeric one
    "timer": ("lapic", "acpi"),
    "debug_output": ("debugcon", "hypervisor-console"),
    "network": ("true", "false"),
    "shell": ("true", "false"),
    "fd_size": ("2", "1", "4"),
    # "off" or the name of a key set of the platform's ``secure_boot.key_sets`` (open: checked on load)
    "secure_boot": ("off",),
    # PcdCpuMaxLogicalProcessorNumber: MpInitLib's room for processors (AP stacks, CPU data).
    "max_cpus": Whole(128, 1, 128, "Xen gives PVH and HVM guests at most HVM_MAX_VCPUS = 128 vCPUs"),
    "tpm": ("off", "tpm2"),
}
"""Feature switches that read like the seed; ``when:`` blocks select on them at render time."""
#: Features whose values the platform file names (besides the listed ones): checked when it is loaded.
OPEN_FEATURES = frozenset({"secure_boot"})
#: An open feature's value (a key set name): what ``--feature secure_boot=NAME`` may say.
OPEN_VALUE_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Cert:
    """A certificate a key set enrolls: a file beside the platform, or one that virt-firmware ships."""

    spec: str            # as the platform file writes it (``keys/ovmfgen-test/db.pem``, ``ms-uefi-2023``)
    path: Path           # the certificate file (PEM or DER)
    owner: str           # the owner GUID of its signature list entry
    sha256: str = ""     # its fingerprint: sha256 of its DER (read and checked on load)
    subject: str = ""    # its subject (RFC 4514)
    loc: Location | None = _loc()


@dataclass(frozen=True)
class KeySet:
    """What a Secure Boot image enrolls: one PK, KEKs, db certificates, and a dbx (None: an empty one)."""

    name: str
    description: str
    pk: Cert
    kek: tuple[Cert, ...]
    db: tuple[Cert, ...]
    dbx: Path | None
    loc: Location | None = _loc()


@dataclass(frozen=True)
class SecureBoot:
    """Secure Boot of a build (feature ``secure_boot``): the key set, where its store sits in the FD."""

    key_set: KeySet
    store_offset: int    # FD offset of the pre-enrolled variable store (after the PVH ELF header page)
    store_size: int      # bytes from there that the store may use (the rest of the old VarStore region)


def feature_default(name: str) -> str:
    """The value feature ``name`` has when nothing sets it."""
    spec = FEATURES[name]
    return str(spec.default) if isinstance(spec, Whole) else spec[0]


def feature_value(name: str, value: str) -> str | None:
    """``value`` as feature ``name`` holds it (a number in canonical form), or None when ``name`` does not take it."""
    spec = FEATURES[name]
    if isinstance(spec, Whole):
        return spec.normal(value)
    if name in OPEN_FEATURES:
        return value if OPEN_VALUE_RE.match(value) else None
    return value if value in spec else None


@dataclass(frozen=True)
class Platform:
    """A platform description, checked for shape (``validate`` checks it against the edk2 tree)."""

    name: str                       # platforms/NAME.yaml
    source: str                     # repo-relative YAML path
    dsc_name: str                   # base name of the generated .dsc/.fdf, e.g. XenOvmf
    package_dir: str                # where the generated files live, e.g. OvmfPkg
    description: str
    features: tuple[tuple[str, str], ...]   # in effect: the YAML's values with any overrides applied
    dsc: tuple[Section, ...]
    fdf: tuple[Section, ...]
    deltas: tuple[Delta, ...] = ()
    upstream: Upstream | None = None
    elf: ElfSpec | None = None
    overrides: tuple[Override, ...] = ()
    fd_name: str = "OVMF"           # the FD the build publishes
    copyright: tuple[str, ...] = () # copyright lines carried into the generated files' header
    default_features: tuple[tuple[str, str], ...] = ()  # as the YAML sets them, before overrides
    features_read: tuple[str, ...] = ()  # the features a when: block or ${var} of this load consulted
    edk2: str = ""                  # tag of the edk2 tree it was loaded for (decided its release conditions)
    secure_boot: SecureBoot | None = None   # feature secure_boot on: its key set and store
    key_sets: tuple[str, ...] = ()          # the key sets feature secure_boot may name
    loc: Location | None = _loc()

    @property
    def dsc_path(self) -> str:
        """Workspace-relative path of the generated DSC (e.g. ``OvmfPkg/XenOvmf.dsc``)."""
        return f"{self.package_dir}/{self.dsc_name}.dsc"

    @property
    def fdf_path(self) -> str:
        """Workspace-relative path of the generated FDF."""
        return f"{self.package_dir}/{self.dsc_name}.fdf"

    def feature_values(self) -> dict[str, str]:
        """What each feature that a -D stands for takes on this platform (for the line refusing the -D)."""
        sets = ", ".join(self.key_sets)
        return {"secure_boot": f"'off' or a key set: {sets}" if sets else "this platform has no Secure Boot",
                "tpm": " or ".join(f"'{v}'" for v in FEATURES["tpm"]) if "tpm" in self.features_read
                else "this platform has no TPM"}

    def feature(self, name: str) -> str:
        """The value of feature ``name`` (its default when the platform does not set it)."""
        return dict(self.features).get(name, feature_default(name))

    def header_field(self, name: str) -> str | None:
        """A [Defines] header field of the DSC (``PLATFORM_NAME``, ``OUTPUT_DIRECTORY``, ...)."""
        for stmt in walk(self.dsc[0].body) if self.dsc else ():
            if isinstance(stmt, Field) and stmt.name == name:
                return stmt.value
        return None


def walk(body: tuple[Statement, ...]) -> Iterator[Statement]:
    """All statements in ``body``, depth first, through every conditional branch and component."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, Conditional):
            for br in stmt.branches:
                yield from walk(br.body)
            if stmt.orelse is not None:
                yield from walk(stmt.orelse)
        elif isinstance(stmt, Component):
            for sub in stmt.subsections:
                yield from walk(sub.body)
