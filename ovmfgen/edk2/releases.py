"""The edk2 releases ovmfgen knows (tag, commit, release date, the tarball that carries each), and where
any edk2 tree stands among them.

The releases are data: ``releases.yaml`` beside this module (package data), one entry per release, read
with located errors (``releases.yaml:12:5: error: ...``) like every file ovmfgen reads. A tree of a known
release is a named, verified input: its tarball (in ``$OVMFGEN_EDK2_TARBALLS``, or for the default
release Debian's source package) must match the sha256 pinned there.

Any other tree is a checkout named by ``git describe --tags`` (``edk2-stable202605-3-g1a2b3c4d5e6f``):
``Position`` orders every such name against the releases, by the release it descends from and how many
commits past it (a commit after edk2-stable202605 comes after it and before the next release).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.platform.nodes import load_yaml_nodes, where
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

UPSTREAM_URL = "https://github.com/tianocore/edk2.git"
#: The shipped list of releases (package data).
RELEASES_FILE = Path(__file__).with_name("releases.yaml")


@dataclass(frozen=True)
class DebianSource:
    """Where Debian ships a release: its source package, upstream version and suite."""

    package: str
    upstream_version: str
    suite: str


@dataclass(frozen=True)
class Release:
    """One edk2 release: what it is (tag, commit, date) and the tarball that carries it."""

    tag: str
    commit: str
    # The tag's date, YYYY-MM-DD: the SMBIOS release date the firmware carries.
    release_date: str
    # The tarball's file name (looked for in $OVMFGEN_EDK2_TARBALLS), sha256, size and top directory.
    tarball: str
    sha256: str
    size: int
    topdir: str
    # Set when Debian's source package of this release can be fetched through apt (its orig tarball is
    # ``tarball``); None when only a local tarball or a checkout can provide the tree.
    debian: DebianSource | None = None


# --- where a tree stands ------------------------------------------------------------------------------

# edk2-stableYYYYMM, optionally `git describe`'s -N-gHASH past it (and -dirty).
_NAME_RE = re.compile(r"^edk2-stable(\d{6})(?:-(\d+)-g([0-9a-f]{4,40}))?(-dirty)?$")


@dataclass(frozen=True, order=True)
class Position:
    """Where a tree stands among releases: the release it is or descends from (its date number,
    ``edk2-stable202605`` -> 202605) and how many commits past that release's tag (0: the release)."""

    release: int
    distance: int = 0
    name: str = field(default="", compare=False)

    @property
    def release_tag(self) -> str:
        """The tag of the release this tree is or descends from."""
        return f"edk2-stable{self.release}"

    @property
    def is_release(self) -> bool:
        """True for a release itself, False for a checkout past one."""
        return self.distance == 0


def position(name: str) -> Position | None:
    """The position of the tree named ``name``: a release tag (``edk2-stable202605``) or ``git describe``
    past one (``edk2-stable202605-3-gabc1234``, ``...-dirty``); None for any other name."""
    m = _NAME_RE.match(name or "")
    if not m:
        return None
    number = int(m.group(1))
    if not 1 <= number % 100 <= 12:
        return None
    return Position(number, int(m.group(2) or 0), name)


def path_safe(name: str) -> str:
    """A tree name as one path component: anything but letters, digits, '.', '_', '+' and '-' becomes
    '_' (a describe string never has a slash, but a stated name might)."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    return "_" + safe if safe.startswith(".") or not safe else safe


# --- the releases file --------------------------------------------------------------------------------

_RELEASE_KEYS = ("tag", "commit", "date", "tarball", "debian", "default")
_TARBALL_KEYS = ("name", "sha256", "size", "topdir")
_DEBIAN_KEYS = ("package", "upstream_version", "suite")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


@dataclass(frozen=True)
class Known:
    """The releases of one releases file, oldest first, and which is the default tree."""

    releases: dict[str, Release]
    default: str


def _kind(node: Node) -> str:
    return {MappingNode: "a mapping", SequenceNode: "a list", ScalarNode: "text"}.get(type(node), "a node")


def _mapping(node: Node, shown: str, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
    if not isinstance(node, MappingNode):
        raise OvmfgenError(f"{what} must be a mapping, got {_kind(node)}", where(node, shown))
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode) or key.value not in allowed:
            raise OvmfgenError(f"unknown key '{getattr(key, 'value', '?')}' in {what} (expected one of: "
                               f"{', '.join(allowed)})", where(key, shown))
        out[key.value] = (key, value)
    return out


def _text(node: Node, shown: str, what: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
    if not isinstance(node, ScalarNode) or node.tag.startswith("!") or not node.value.strip():
        got = "empty text" if isinstance(node, ScalarNode) and not node.value.strip() else _kind(node)
        raise OvmfgenError(f"{what} must be {hint or 'text'}, got {got}", where(node, shown))
    value = node.value.strip()
    if pattern is not None and not pattern.match(value):
        raise OvmfgenError(f"{what} '{value}' is not {hint}", where(node, shown))
    return value


def _required(keys: dict[str, tuple[Node, Node]], names: tuple[str, ...], node: Node, shown: str,
              what: str) -> None:
    missing = [n for n in names if n not in keys]
    if missing:
        raise OvmfgenError(f"{what}: missing '{missing[0]}'", where(node, shown))


def _release(node: Node, shown: str) -> tuple[Release, bool]:
    keys = _mapping(node, shown, "release", _RELEASE_KEYS)
    _required(keys, ("tag", "commit", "date", "tarball"), node, shown, "release")
    tag_node = keys["tag"][1]
    tag = _text(tag_node, shown, "release tag")
    pos = position(tag)
    if pos is None or not pos.is_release:
        raise OvmfgenError(f"release tag '{tag}' is not edk2-stableYYYYMM", where(tag_node, shown))
    commit = _text(keys["commit"][1], shown, "release commit", _HEX40, "40 lower-case hex digits")
    date = _text(keys["date"][1], shown, "release date", _DATE, "a date YYYY-MM-DD")
    tnode = keys["tarball"][1]
    tkeys = _mapping(tnode, shown, "release tarball", _TARBALL_KEYS)
    _required(tkeys, _TARBALL_KEYS, tnode, shown, "release tarball")
    name = _text(tkeys["name"][1], shown, "tarball name", _FILE_NAME, "a file name")
    sha256 = _text(tkeys["sha256"][1], shown, "tarball sha256", _HEX64, "64 lower-case hex digits")
    size_text = _text(tkeys["size"][1], shown, "tarball size", re.compile(r"^[1-9]\d*$"), "a size in bytes")
    topdir = _text(tkeys["topdir"][1], shown, "tarball topdir", _FILE_NAME, "a directory name")
    debian = None
    if "debian" in keys:
        dnode = keys["debian"][1]
        dkeys = _mapping(dnode, shown, "release debian", _DEBIAN_KEYS)
        _required(dkeys, _DEBIAN_KEYS, dnode, shown, "release debian")
        debian = DebianSource(*(_text(dkeys[k][1], shown, f"debian {k}") for k in _DEBIAN_KEYS))
    default = False
    if "default" in keys:
        flag = _text(keys["default"][1], shown, "release default").lower()
        if flag not in ("true", "false"):
            raise OvmfgenError(f"release default: expected true or false, got '{flag}'",
                               where(keys["default"][1], shown))
        default = flag == "true"
    return Release(tag=tag, commit=commit, release_date=date, tarball=name, sha256=sha256, size=int(size_text),
                   topdir=topdir, debian=debian), default


def load_releases(path: Path) -> Known:
    """Read a releases file (``releases.yaml``): every problem is one located OvmfgenError."""
    root = load_yaml_nodes(path, "releases file")
    shown = display_path(path)
    keys = _mapping(root, shown, "releases file", ("releases",))
    if "releases" not in keys:
        raise OvmfgenError("releases file: missing 'releases'", Location(shown, 1, 1))
    lnode = keys["releases"][1]
    if not isinstance(lnode, SequenceNode) or not lnode.value:
        raise OvmfgenError(f"releases must be a non-empty list, got {_kind(lnode)}", where(lnode, shown))
    found: dict[str, Release] = {}
    defaults: list[str] = []
    previous: Release | None = None
    for item in lnode.value:
        rel, default = _release(item, shown)
        if rel.tag in found:
            raise OvmfgenError(f"release {rel.tag} is listed twice", where(item, shown))
        if previous is not None and (position(rel.tag), rel.release_date) <= (position(previous.tag),
                                                                               previous.release_date):
            raise OvmfgenError(f"release {rel.tag} must come after {previous.tag} (list them oldest first, "
                               f"each dated after the one before)", where(item, shown))
        found[rel.tag] = previous = rel
        if default:
            defaults.append(rel.tag)
    if len(defaults) != 1:
        raise OvmfgenError(f"exactly one release must be 'default: true' (found {len(defaults)})",
                           where(lnode, shown))
    return Known(found, defaults[0])


@functools.lru_cache(maxsize=None)
def known() -> Known:
    """The shipped releases (read once per process)."""
    return load_releases(RELEASES_FILE)


def __getattr__(name: str) -> object:
    # The module's table, read from releases.yaml on first use:
    #   RELEASES: tag -> Release, oldest first; KNOWN_TAGS: every known tag, oldest first;
    #   DEFAULT_TAG: the tree every stage uses without --edk2; NEWEST_TAG: the newest (invoke patch's).
    if name == "RELEASES":
        return known().releases
    if name == "KNOWN_TAGS":
        return tuple(known().releases)
    if name == "DEFAULT_TAG":
        return known().default
    if name == "NEWEST_TAG":
        return tuple(known().releases)[-1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def release(tag: str) -> Release:
    """The known release ``tag``; a one-line OvmfgenError naming the known tags otherwise."""
    try:
        return known().releases[tag]
    except KeyError:
        raise OvmfgenError(f"unknown edk2 tag '{tag}' (known: {', '.join(known().releases)})") from None


def by_commit(commit: str | None) -> Release | None:
    """The known release whose tag points at ``commit``, if any."""
    for r in known().releases.values():
        if commit and r.commit == commit:
            return r
    return None


def path_part(tag: str | None) -> str:
    """The directory naming a tree in dist/ and build/: "" for the default tree (its paths stay as they
    were before there were several trees), else the tree's name made one safe path component."""
    return "" if tag in (None, "", known().default) else path_safe(str(tag))


def setup_hint(tag: str | None) -> str:
    """How to set up the tree of ``tag`` (the default tree needs no ``--edk2``)."""
    if tag is None or tag == known().default:
        return "run `invoke setup`"
    if tag not in known().releases:
        return f"run `OVMFGEN_EDK2=/path/to/checkout invoke setup` ({tag} is no known release)"
    return f"run `invoke setup --edk2 {tag}`"
