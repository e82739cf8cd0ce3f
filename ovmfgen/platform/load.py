"""Load ``platforms/NAME.yaml`` into the model, with a source location on every node.

The YAML is read as a node graph (``yaml.compose``) rather than constructed, so that

* every scalar stays text exactly as written (``0x8000004F`` is not turned into an int,
  ``TRUE`` not into a bool) and the shape checks below say what they expected;
* every error points at ``platforms/x.yaml:LINE:COL``;
* duplicate keys are errors instead of silently taking the last value.

Three conveniences are resolved here, so later stages see one plain platform:
``extends:`` (inherit another platform file), ``- use: NAME`` (splice a shared fragment from
``platforms/common/*.yaml``), feature switches (``when:`` blocks and ``${var}`` values) and release
conditions (``when: {edk2: ">= edk2-stable202605"}``, decided by the tag of the tree loaded for).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.platform.nodes import load_yaml_nodes
from ovmfgen.platform.reads import BadFeatureValue
from ovmfgen.platform.model import (
    FEATURES, OPEN_FEATURES, OPEN_VALUE_RE, Block, Cert, KeySet, SecureBoot, Branch, BuildOption, Comment, Component, Conditional, Define, Delta, ElfSpec,
    ErrorDirective, Field, Inf, Include, LibraryMapping, Override, Pcd, Platform, Raw, Region,
    RegionContent, RegionPcds, ReservedRegion, Section, SetPcd, Statement, SubSection, Upstream,
)
from ovmfgen.platform.model import Whole, feature_default, feature_value
from ovmfgen.edk2.releases import DEFAULT_TAG
from ovmfgen.paths import PLATFORMS_DIR
from ovmfgen.platform.release import ConditionError, parse_condition
from ovmfgen.platform.syntax import split_pcd_value

TOP_KEYS = ("extends", "description", "copyright", "platform", "features", "upstream", "deltas", "elf", "overrides",
            "publish", "fragments", "secure_boot", "dsc", "fdf")
PLATFORM_KEYS = ("files", "name", "guid", "version", "dsc_specification", "output_directory",
                 "supported_architectures", "build_targets", "skuid_identifier", "fields")
HEADER_FIELDS = {
    # platform: key -> DSC [Defines] header field, in upstream's order
    "name": "PLATFORM_NAME",
    "guid": "PLATFORM_GUID",
    "version": "PLATFORM_VERSION",
    "dsc_specification": "DSC_SPECIFICATION",
    "output_directory": "OUTPUT_DIRECTORY",
    "supported_architectures": "SUPPORTED_ARCHITECTURES",
    "build_targets": "BUILD_TARGETS",
    "skuid_identifier": "SKUID_IDENTIFIER",
}
DELTA_KINDS = ("define", "library", "component", "pcd", "build-option", "fv", "fd", "fd-region", "file")
DIRECTIVE_KEYS = ("comment", "include", "define", "field", "set", "error", "raw", "block", "if", "ifdef",
                  "ifndef", "when", "use", "region", "pcds", "fv", "data", "file", "reserved", "INF")
WHEN_KEYS = (*FEATURES, "edk2")
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_HEX_RE = re.compile(r"^(0x[0-9A-Fa-f]+|\d+)$")


def _where(node: Node, path: str) -> Location:
    mark = node.start_mark
    return Location(path, mark.line + 1, mark.column + 1)


@dataclass(frozen=True)
class _Doc:
    """One YAML file: its composed root and the path shown in messages."""

    root: MappingNode
    path: str


class _Ctx:
    """State while turning one platform's nodes into the model."""

    def __init__(self, platform_name: str, fragments: dict[str, tuple[Node, str]], variables: dict[str, str],
                 features: dict[str, str], edk2: str) -> None:
        self.platform_name = platform_name
        self.fragments = fragments
        self.variables = variables
        self.features = features
        self.edk2 = edk2
        self.using: list[str] = []
        self.features_read: set[str] = set()    # features a when: or ${var} consulted (Platform.features_read)


# ---------------------------------------------------------------------------------------------
# Reading files and checking shapes


def read_yaml(path: Path) -> _Doc:
    """Compose ``path`` into nodes, reporting YAML syntax errors and duplicate keys with locations."""
    return _Doc(load_yaml_nodes(path, "platform file"), display_path(path))


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"'{node.value}'" if node.value != "" else "an empty value"


def _mapping(node: Node, path: str, what: str, allowed: tuple[str, ...] | None = None) -> dict[str, tuple[Node, Node]]:
    """A mapping node as {key: (key_node, value_node)}, rejecting unknown keys when ``allowed`` is given."""
    if not isinstance(node, MappingNode):
        raise OvmfgenError(f"{what} must be a mapping, got {_kind(node)}", _where(node, path))
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            raise OvmfgenError(f"{what}: keys must be plain text", _where(key, path))
        if allowed is not None and key.value not in allowed:
            raise OvmfgenError(f"unknown key '{key.value}' in {what} (expected one of: {', '.join(allowed)})",
                               _where(key, path))
        out[key.value] = (key, value)
    return out


def _seq(node: Node, path: str, what: str) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise OvmfgenError(f"{what} must be a list, got {_kind(node)}", _where(node, path))
    return list(node.value)


def _text(node: Node, path: str, what: str, allow_empty: bool = False) -> str:
    if not isinstance(node, ScalarNode):
        raise OvmfgenError(f"{what} must be text, got {_kind(node)}", _where(node, path))
    if node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool",
                        "tag:yaml.org,2002:float", "tag:yaml.org,2002:null") and node.tag.startswith("!"):
        raise OvmfgenError(f"{what}: YAML tags are not supported ({node.tag})", _where(node, path))
    if not node.value.strip() and not allow_empty:
        raise OvmfgenError(f"{what} must not be empty", _where(node, path))
    return node.value


def _int(node: Node, path: str, what: str) -> int:
    text = _text(node, path, what).strip()
    if not _HEX_RE.match(text):
        raise OvmfgenError(f"{what}: expected an integer (decimal or 0x hex), got '{text}'", _where(node, path))
    return int(text, 0)


def _single(node: Node, path: str, what: str) -> tuple[Node, Node]:
    """A one-key mapping item (``- Key: value``) as (key node, value node)."""
    if not isinstance(node, MappingNode) or not node.value:
        raise OvmfgenError(f"{what} must be a one-key mapping, got {_kind(node)}", _where(node, path))
    return node.value[0]


# ---------------------------------------------------------------------------------------------
# Fragments, extends, features


def load_fragments(common_dir: Path) -> dict[str, tuple[Node, str]]:
    """All named fragments of ``platforms/common/*.yaml`` (names are global; duplicates are errors)."""
    out: dict[str, tuple[Node, str]] = {}
    if not common_dir.is_dir():
        return out
    for path in sorted(common_dir.glob("*.yaml")):
        doc = read_yaml(path)
        top = _mapping(doc.root, doc.path, "a fragment file", ("description", "fragments"))
        if "fragments" not in top:
            continue
        for name, (knode, vnode) in _mapping(top["fragments"][1], doc.path, "fragments").items():
            if name in out:
                raise OvmfgenError(f"fragment '{name}' is already defined in {out[name][1]}", _where(knode, doc.path))
            out[name] = (vnode, doc.path)
    return out


def _resolve_extends(doc: _Doc, platforms_dir: Path, chain: tuple[str, ...]) -> dict[str, tuple[Node, str]]:
    """Top-level keys of ``doc`` merged over those of the platform it extends (child wins per key;
    ``platform``/``features``/``elf``/``upstream`` merge key by key; ``deltas``/``overrides`` concatenate)."""
    top = _mapping(doc.root, doc.path, "the platform file", TOP_KEYS)
    own = {k: (v, doc.path) for k, (_, v) in top.items()}
    if "extends" not in top:
        return own
    knode, vnode = top["extends"]
    parent_name = _text(vnode, doc.path, "extends").strip()
    parent_path = platforms_dir / (parent_name if parent_name.endswith(".yaml") else parent_name + ".yaml")
    shown = display_path(parent_path)
    if shown in chain:
        cycle = " -> ".join([*chain, shown])
        raise OvmfgenError(f"extends cycle: {cycle}", _where(vnode, doc.path))
    if not parent_path.is_file():
        raise OvmfgenError(f"extends target not found: {shown}", _where(vnode, doc.path))
    parent = _resolve_extends(read_yaml(parent_path), platforms_dir, (*chain, shown))
    merged = dict(parent)
    for key, (node, path) in own.items():
        if key == "extends":
            continue
        if key in ("platform", "features", "elf", "upstream") and key in parent:
            merged[key] = (_merge_mappings(parent[key][0], node), path)
        elif key in ("deltas", "overrides") and key in parent:
            merged[key] = (_concat_seqs(parent[key][0], node), path)
        else:
            merged[key] = (node, path)
    return merged


def _merge_mappings(base: Node, over: Node) -> Node:
    if not isinstance(base, MappingNode) or not isinstance(over, MappingNode):
        return over
    keys = {k.value: i for i, (k, _) in enumerate(base.value) if isinstance(k, ScalarNode)}
    items = list(base.value)
    for k, v in over.value:
        if isinstance(k, ScalarNode) and k.value in keys:
            items[keys[k.value]] = (k, v)
        else:
            items.append((k, v))
    return MappingNode(base.tag, items, over.start_mark, over.end_mark)


def _concat_seqs(base: Node, over: Node) -> Node:
    if not isinstance(base, SequenceNode) or not isinstance(over, SequenceNode):
        return over
    return SequenceNode(base.tag, [*base.value, *over.value], over.start_mark, over.end_mark)


# Each ``${var}`` and the feature it comes from.
VARIABLE_FEATURES = {"fd_size_kb": "fd_size", "fd_size": "fd_size", "network": "network", "shell": "shell",
                     "timer": "timer", "debug_output": "debug_output", "sb_store_offset": "secure_boot",
                     "max_cpus": "max_cpus"}


def feature_variables(features: dict[str, str]) -> dict[str, str]:
    """The ``${var}`` values a platform's features provide to its DSC/FDF text."""
    fd_kb = {"1": "1024", "2": "2048", "4": "4096"}[features["fd_size"]]
    return {
        "fd_size_kb": fd_kb,
        "fd_size": features["fd_size"],
        "network": "TRUE" if features["network"] == "true" else "FALSE",
        "shell": "TRUE" if features["shell"] == "true" else "FALSE",
        "timer": features["timer"],
        "debug_output": features["debug_output"],
        "max_cpus": features["max_cpus"],
    }


def check_feature(name: str, value: str, flag: str = "--feature", loc: Location | None = None) -> None:
    """Raise one line for a feature override that names no feature, or a value the feature does not take."""
    if name not in FEATURES:
        raise OvmfgenError(f"{flag} {name}={value}: no such feature (features: {', '.join(sorted(FEATURES))})", loc)
    if feature_value(name, value) is None:
        raise OvmfgenError(f"{flag} {name}={value}: '{value}' is not a value of feature {name} "
                           f"({_shown(name)})", loc)


def _shown(name: str, as_written: bool = True) -> str:
    """The values feature ``name`` takes, as error messages say them ("one of: a, b", or a number's range);
    ``as_written``: FD sizes as the features mapping writes them (``2M``), else as ``when:`` does (``2``)."""
    spec = FEATURES[name]
    if isinstance(spec, Whole):
        return str(spec)
    if name in OPEN_FEATURES:
        return "'off' or the name of one of the platform's key sets: lower-case letters, digits, '-'"
    return "one of: " + ", ".join([f"{v}M" for v in sorted(spec)] if name == "fd_size" and as_written else spec)


def _features(node: Node | None, path: str) -> dict[str, str]:
    values = {name: feature_default(name) for name in FEATURES}
    if node is None:
        return values
    for name, (knode, vnode) in _mapping(node, path, "features", tuple(FEATURES)).items():
        value = _text(vnode, path, f"feature '{name}'").strip().lower()
        if name == "fd_size":
            value = value.upper().removesuffix("M").removesuffix("MIB").removesuffix("MB").lower()
        normal = feature_value(name, value)
        if normal is None:
            raise OvmfgenError(f"feature '{name}': '{vnode.value}' is not {_shown(name)}",
                               _where(vnode, path))
        values[name] = normal
    return values


def _subst(text: str, node: Node, path: str, ctx: _Ctx) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        if name not in ctx.variables:
            raise OvmfgenError(f"unknown variable '${{{name}}}' (expected one of: {', '.join(sorted(ctx.variables))})",
                               _where(node, path))
        if name in VARIABLE_FEATURES:
            ctx.features_read.add(VARIABLE_FEATURES[name])
        return ctx.variables[name]

    return _VAR_RE.sub(repl, text)


# ---------------------------------------------------------------------------------------------
# Statements


def _value(node: Node, path: str, what: str, ctx: _Ctx, allow_empty: bool = False) -> str:
    return _subst(_text(node, path, what, allow_empty=allow_empty), node, path, ctx).strip()


def _split_assign(text: str, node: Node, path: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise OvmfgenError(f"{what}: expected 'NAME = VALUE', got '{text}'", _where(node, path))
    return name.strip(), value.strip()


def _body(node: Node, path: str, ctx: _Ctx, kind: str, what: str) -> tuple[Statement, ...]:
    out: list[Statement] = []
    for item in _seq(node, path, what):
        out.extend(_statement(item, path, ctx, kind))
    return tuple(out)


def _statement(node: Node, path: str, ctx: _Ctx, kind: str) -> Iterator[Statement]:
    """One body item -> statements (``when``/``use`` can yield zero or many)."""
    loc = _where(node, path)
    if isinstance(node, ScalarNode):
        text = _value(node, path, "statement", ctx)
        if kind == "Components":
            yield Component(text, loc=loc)
            return
        raise OvmfgenError(f"a bare value is only allowed in Components sections (in [{kind}] write "
                           f"'- Name: value' or a directive)", loc)
    if not isinstance(node, MappingNode) or not node.value:
        raise OvmfgenError(f"statement must be a mapping or text, got {_kind(node)}", loc)
    keys = _mapping(node, path, "statement")
    first = next(iter(keys))
    if first in ("if", "ifdef", "ifndef"):
        yield _conditional(node, path, ctx, kind)
        return
    if first == "when":
        yield from _when(node, path, ctx, kind)
        return
    if first == "use":
        yield from _use(node, path, ctx, kind)
        return
    if first == "region" or (kind == "FD" and first in ("pcds", "fv", "data", "file", "reserved")):
        yield from _region(node, path, ctx)
        return
    if first == "inf" and kind == "Components":
        yield _component(node, path, ctx)
        return
    if len(keys) != 1:
        extra = list(keys)[1]
        raise OvmfgenError(f"unexpected key '{extra}' after '{first}' (one statement per list item)",
                           _where(keys[extra][0], path))
    knode, vnode = keys[first]
    if first == "comment":
        yield Comment(_value(vnode, path, "comment", ctx, allow_empty=True), loc=loc)
    elif first == "include":
        yield Include(_value(vnode, path, "include", ctx), loc=loc)
    elif first == "define":
        yield Define(*_split_assign(_value(vnode, path, "define", ctx), vnode, path, "define"), loc=loc)
    elif first == "field":
        yield Field(*_split_assign(_value(vnode, path, "field", ctx), vnode, path, "field"), loc=loc)
    elif first == "set":
        yield SetPcd(*_split_assign(_value(vnode, path, "set", ctx), vnode, path, "set"), loc=loc)
    elif first == "error":
        yield ErrorDirective(_value(vnode, path, "error", ctx), loc=loc)
    elif first == "raw":
        yield Raw(_value(vnode, path, "raw", ctx), loc=loc)
    elif first == "block":
        yield Block(_subst(_text(vnode, path, "block"), vnode, path, ctx).strip("\n"), loc=loc)
    elif first == "INF":
        words = _value(vnode, path, "INF", ctx).split()
        yield Inf(words[-1], " ".join(words[:-1]), loc=loc)
    else:
        yield _entry(first, knode, vnode, path, ctx, kind, loc)


def _entry(key: str, knode: Node, vnode: Node, path: str, ctx: _Ctx, kind: str, loc: Location) -> Statement:
    """``- Key: value`` read by the section's grammar."""
    value = _value(vnode, path, f"'{key}'", ctx, allow_empty=True)
    if kind == "LibraryClasses":
        if not re.match(r"^\w+$", key):
            raise OvmfgenError(f"'{key}' is not a library class name", _where(knode, path))
        if not value:
            raise OvmfgenError(f"library class '{key}' needs an INF path", _where(vnode, path))
        return LibraryMapping(key, value, loc=loc)
    if kind.startswith("Pcds"):
        # A structured PCD's field is written TokenSpaceGuid.PcdName.Field (or .Field[0], [0].Field).
        if not re.match(r"^\w+\.\w+(?:\.\w+|\[\w+\])*$", key):
            raise OvmfgenError(f"'{key}' is not a PCD name (expected TokenSpaceGuid.PcdName)", _where(knode, path))
        parts = split_pcd_value(value)
        return Pcd(key, parts[0], tuple(parts[1:]), loc=loc)
    if kind == "BuildOptions":
        if key.endswith("=="):
            return BuildOption(key[:-2].strip(), value, replace=True, loc=loc)
        return BuildOption(key, value, loc=loc)
    if kind in ("Defines", "FV", "FD", "Capsule", "OptionRom") or kind.startswith("Defines"):
        return Field(key, value, loc=loc)
    expected = ", ".join(k for k in DIRECTIVE_KEYS if k not in ("region", "pcds", "fv", "data", "file", "reserved"))
    raise OvmfgenError(f"unknown key '{key}' in [{kind}] (expected one of: {expected})", _where(knode, path))


def _conditional(node: Node, path: str, ctx: _Ctx, kind: str) -> Conditional:
    keys = _mapping(node, path, "conditional")
    first = next(iter(keys))
    allowed = (first, "then", "elif", "else")
    for key, (knode, _) in keys.items():
        if key not in allowed:
            raise OvmfgenError(f"unknown key '{key}' in {first} block (expected one of: {', '.join(allowed)})",
                               _where(knode, path))
    if "then" not in keys:
        raise OvmfgenError(f"'{first}' needs a 'then:' list", _where(node, path))
    branches = [Branch(first, _value(keys[first][1], path, first, ctx), _body(keys["then"][1], path, ctx, kind, "then"),
                       loc=_where(node, path))]
    if "elif" in keys:
        for item in _seq(keys["elif"][1], path, "elif"):
            sub = _mapping(item, path, "elif item", ("if", "then"))
            if "if" not in sub or "then" not in sub:
                raise OvmfgenError("each elif item needs 'if:' and 'then:'", _where(item, path))
            branches.append(Branch("elseif", _value(sub["if"][1], path, "if", ctx),
                                   _body(sub["then"][1], path, ctx, kind, "then"), loc=_where(item, path)))
    orelse = _body(keys["else"][1], path, ctx, kind, "else") if "else" in keys else None
    return Conditional(tuple(branches), orelse, loc=_where(node, path))


def _release_holds(node: Node, path: str, ctx: _Ctx, what: str) -> bool:
    """Whether an entry's ``edk2: COND`` holds for the tree this load is for (a located error if malformed)."""
    try:
        return parse_condition(_text(node, path, what)).holds(ctx.edk2)
    except ConditionError as exc:
        raise OvmfgenError(str(exc), _where(node, path)) from None


def _entry_release(node: Node, path: str, ctx: _Ctx, what: str) -> tuple[bool, str]:
    """An override's or delta's ``edk2: COND`` for this tree: (in force, the release it is carried from).

    A condition naming one release (``edk2: edk2-stable202605``) marks a fix of that release's upstream:
    on a later tree the entry stays, carried (``"edk2-stable202605"``), and applies while its patch does.
    """
    try:
        cond = parse_condition(_text(node, path, what))
        carried = cond.carried(ctx.edk2)
        return (carried is not None or cond.holds(ctx.edk2)), carried or ""
    except ConditionError as exc:
        raise OvmfgenError(str(exc), _where(node, path)) from None


def _decide(node: Node, path: str, ctx: _Ctx) -> bool:
    """Whether a ``when:`` mapping holds for this load (features and the edk2 release)."""
    cond = _mapping(node, path, "when", WHEN_KEYS)
    match = True
    for name, (knode, vnode) in cond.items():
        if name == "edk2":
            try:
                match = parse_condition(_text(vnode, path, "when edk2")).holds(ctx.edk2) and match
            except ConditionError as exc:
                raise OvmfgenError(str(exc), _where(vnode, path)) from None
            continue
        wanted = [_text(v, path, f"when {name}").strip().lower() for v in
                  (_seq(vnode, path, f"when {name}") if isinstance(vnode, SequenceNode) else [vnode])]
        normal = [feature_value(name, w) for w in wanted]
        for w, n in zip(wanted, normal):
            if n is None:
                raise OvmfgenError(f"when: '{w}' is not a value of feature '{name}' (expected "
                                   f"{_shown(name, as_written=False)})", _where(vnode, path))
        ctx.features_read.add(name)
        match = match and ctx.features[name] in normal
    return match


def _when(node: Node, path: str, ctx: _Ctx, kind: str) -> Iterator[Statement]:
    """``when: {feature: value}`` and ``when: {edk2: ">= TAG"}`` are decided now, from the platform's
    features and the tag of the edk2 tree it is loaded for (all conditions must hold)."""
    keys = _mapping(node, path, "when block", ("when", "then", "else"))
    if "then" not in keys:
        raise OvmfgenError("'when' needs a 'then:' list", _where(node, path))
    match = _decide(keys["when"][1], path, ctx)
    # Both arms are converted so that mistakes in the unused one are still reported.
    then = _body(keys["then"][1], path, ctx, kind, "then")
    orelse = _body(keys["else"][1], path, ctx, kind, "else") if "else" in keys else ()
    yield from then if match else orelse


def _use(node: Node, path: str, ctx: _Ctx, kind: str) -> Iterator[Statement]:
    keys = _mapping(node, path, "use", ("use",))
    vnode = keys["use"][1]
    name = _text(vnode, path, "use").strip()
    if name not in ctx.fragments:
        known = ", ".join(sorted(ctx.fragments)) or "none defined"
        raise OvmfgenError(f"unknown fragment '{name}' (known: {known})", _where(vnode, path))
    if name in ctx.using:
        raise OvmfgenError(f"fragment cycle: {' -> '.join([*ctx.using, name])}", _where(vnode, path))
    frag, frag_path = ctx.fragments[name]
    ctx.using.append(name)
    try:
        yield from _body(frag, frag_path, ctx, kind, f"fragment '{name}'")
    finally:
        ctx.using.pop()


def _region(node: Node, path: str, ctx: _Ctx) -> Iterator[Statement]:
    keys = _mapping(node, path, "FD region", ("region", "pcds", "fv", "data", "file", "reserved", "comment"))
    loc = _where(node, path)
    if "comment" in keys:
        yield Comment(_value(keys["comment"][1], path, "comment", ctx, allow_empty=True), loc=loc)
    if "region" in keys:
        vnode = keys["region"][1]
        offset, sep, size = _value(vnode, path, "region", ctx).partition("|")
        if not sep:
            raise OvmfgenError(f"region: expected 'OFFSET|SIZE', got '{vnode.value}'", _where(vnode, path))
        for part in (offset.strip(), size.strip()):
            if not (_HEX_RE.match(part) or re.match(r"^\$\(\w+\)$", part)):
                raise OvmfgenError(f"region: '{part}' is not a number or $(MACRO)", _where(vnode, path))
        yield Region(offset.strip(), size.strip(), loc=loc)
    if "reserved" in keys:
        yield ReservedRegion(_value(keys["reserved"][1], path, "reserved", ctx), loc=loc)
    if "pcds" in keys:
        vnode = keys["pcds"][1]
        base, sep, size = _value(vnode, path, "pcds", ctx).partition("|")
        if not sep:
            raise OvmfgenError(f"pcds: expected 'BasePcd|SizePcd', got '{vnode.value}'", _where(vnode, path))
        yield RegionPcds(base.strip(), size.strip(), loc=loc)
    for key in ("fv", "data", "file"):
        if key in keys:
            vnode = keys[key][1]
            text = _subst(_text(vnode, path, key), vnode, path, ctx).strip("\n").rstrip()
            yield RegionContent(key.upper(), text.strip() if key != "data" else text, loc=loc)


_SUBSECTION_KINDS = ("LibraryClasses", "PcdsFixedAtBuild", "PcdsFeatureFlag", "PcdsPatchableInModule",
                     "PcdsDynamic", "PcdsDynamicEx", "BuildOptions", "Defines")


def _component(node: Node, path: str, ctx: _Ctx) -> Component:
    keys = _mapping(node, path, "component", ("inf", *_SUBSECTION_KINDS))
    inf = _value(keys["inf"][1], path, "inf", ctx)
    subs = []
    for key, (knode, vnode) in keys.items():
        if key == "inf":
            continue
        subs.append(SubSection(key, _body(vnode, path, ctx, key, key), loc=_where(knode, path)))
    return Component(inf, tuple(subs), loc=_where(node, path))


def _sections(node: Node, path: str, ctx: _Ctx, what: str) -> tuple[Section, ...]:
    out: list[Section] = []
    for item in _seq(node, path, what):
        if isinstance(item, MappingNode) and item.value and isinstance(item.value[0][0], ScalarNode) \
                and item.value[0][0].value == "use":
            keys = _mapping(item, path, "use", ("use",))
            name = _text(keys["use"][1], path, "use").strip()
            if name not in ctx.fragments:
                raise OvmfgenError(f"unknown fragment '{name}' (known: {', '.join(sorted(ctx.fragments))})",
                                   _where(keys["use"][1], path))
            frag, frag_path = ctx.fragments[name]
            out.extend(_sections(frag, frag_path, ctx, f"fragment '{name}'"))
            continue
        if isinstance(item, MappingNode) and item.value and isinstance(item.value[0][0], ScalarNode) \
                and item.value[0][0].value == "when":
            # Whole sections that exist for some releases or features only (same rules as in a body).
            out.extend(_when_sections(item, path, ctx, what))
            continue
        knode, vnode = _single(item, path, f"{what} section")
        if len(item.value) != 1:
            raise OvmfgenError(f"one section per list item (found '{item.value[1][0].value}' after "
                               f"'{knode.value}')", _where(item.value[1][0], path))
        header = _text(knode, path, "section header").strip()
        if not re.match(r"^[A-Za-z][\w.$()\- ,]*$", header):
            raise OvmfgenError(f"'{header}' is not a section header", _where(knode, path))
        kind = header.split(",")[0].strip().split(".")[0]
        body = () if isinstance(vnode, ScalarNode) and vnode.value == "" else _body(vnode, path, ctx, kind, header)
        out.append(Section(", ".join(h.strip() for h in header.split(",")), body, loc=_where(knode, path)))
    return tuple(out)


def _when_sections(node: Node, path: str, ctx: _Ctx, what: str) -> tuple[Section, ...]:
    keys = _mapping(node, path, "when block", ("when", "then", "else"))
    if "then" not in keys:
        raise OvmfgenError("'when' needs a 'then:' list", _where(node, path))
    match = _decide(keys["when"][1], path, ctx)
    then = _sections(keys["then"][1], path, ctx, what)
    orelse = _sections(keys["else"][1], path, ctx, what) if "else" in keys else ()
    return then if match else orelse


# ---------------------------------------------------------------------------------------------
# The platform


def load_platform(name_or_path: str | Path, platforms_dir: Path = PLATFORMS_DIR,
                  feature_overrides: Mapping[str, str] | None = None, edk2: str | None = None) -> Platform:
    """Load a platform by name (``xen-pvh`` -> platforms/xen-pvh.yaml) or path, checked for shape.

    ``feature_overrides`` replaces feature values (e.g. ``{"debug_output": "hypervisor-console"}``
    from the command line) before ``when:`` blocks are decided. ``edk2`` is the tag of the tree the
    platform is loaded for (``Edk2Tree.tag``; None: the default tree's), which decides
    ``when: {edk2: ...}`` blocks.

    The steps, each a function below: find the file; read it and what it ``extends:``; gather the
    fragments ``use:`` may splice; decide the features (the YAML's, then the overrides), which fixes
    what every ``when:``/``${var}`` reads; then each top-level key, in the order the model needs them.
    """
    edk2 = edk2 or DEFAULT_TAG
    path = _platform_path(name_or_path, platforms_dir)
    doc = read_yaml(path)
    top = _resolve_extends(doc, path.parent, (doc.path,))

    def get(key: str) -> tuple[Node, str] | tuple[None, str]:
        return top.get(key, (None, doc.path))

    fnode, fpath = get("features")
    features = _features(fnode, fpath)
    default_features = tuple(sorted(features.items()))
    for fname, fvalue in (feature_overrides or {}).items():
        check_feature(fname, fvalue)
        features[fname] = feature_value(fname, fvalue) or fvalue
    section = _secure_boot_section(get("secure_boot"))
    secure_boot = _secure_boot(section, features, feature_overrides or {}, (fnode, fpath), path.parent)
    variables = feature_variables(features)
    elf_spec = _elf(get("elf"), secure_boot)
    if secure_boot is not None and elf_spec is not None and elf_spec.base != SECURE_BOOT_PVH_BASE:
        raise OvmfgenError(f"feature secure_boot: elf.base is 0x{elf_spec.base:x}, but the firmware looks for its "
                           f"keys at 0x{SECURE_BOOT_PVH_BASE:x} in a PVH guest (the load address Xen uses)",
                           Location(doc.path, 1, 1))
    if section is not None:
        variables["sb_store_offset"] = f"0x{section.offset:x}"
    ctx = _Ctx(path.stem, _fragments(path, get("fragments")), variables, features, edk2)
    if get("secure_boot")[0] is not None:
        ctx.features_read.add("secure_boot")

    files, header = _platform_header(get("platform"), doc.path, ctx)
    package_dir, _, dsc_name = files.rpartition("/")
    dsc = _dsc(get("dsc"), doc.path, header, ctx)
    fnode_, fpath_ = get("fdf")
    fdf = _sections(fnode_, fpath_, ctx, "fdf") if fnode_ is not None else ()
    return Platform(
        name=path.stem, source=doc.path, dsc_name=dsc_name, package_dir=package_dir,
        description=_description(get("description")),
        features=tuple(sorted(features.items())), dsc=dsc, fdf=fdf, deltas=_deltas(get("deltas"), ctx),
        upstream=_upstream(get("upstream")), elf=elf_spec,
        overrides=_overrides(get("overrides"), ctx),
        fd_name=_fd_name(get("publish")), copyright=_copyright(get("copyright")),
        default_features=default_features, features_read=tuple(sorted(ctx.features_read)), edk2=edk2,
        secure_boot=secure_boot, key_sets=tuple(sorted(section.sets)) if section else (),
        loc=Location(doc.path, 1, 1),
    )


# --- load_platform's steps --------------------------------------------------------------------------


def _platform_path(name_or_path: str | Path, platforms_dir: Path) -> Path:
    """A path ending in .yaml as given; a name looked up in ``platforms_dir`` (one line naming the known ones)."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = platforms_dir / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in platforms_dir.glob("*.yaml"))) or "none"
            raise OvmfgenError(f"unknown platform '{name_or_path}' (known: {known})")
    return path


def _fragments(path: Path, declared: tuple[Node | None, str]) -> dict[str, tuple[Node, str]]:
    """The fragments ``use:`` may splice: platforms/common/, the platform's own common/ (a platform kept
    elsewhere, as tests do), then its ``fragments:`` key; a name defined twice is an error at the second."""
    fragments = load_fragments(PLATFORMS_DIR / "common")
    if (path.parent / "common").resolve() != (PLATFORMS_DIR / "common").resolve():
        for fname, value in load_fragments(path.parent / "common").items():
            if fname in fragments:
                raise OvmfgenError(f"fragment '{fname}' is already defined in {fragments[fname][1]}")
            fragments[fname] = value
    fnode, fpath = declared
    if fnode is not None:
        for fname, (knode, vnode) in _mapping(fnode, fpath, "fragments").items():
            if fname in fragments:
                raise OvmfgenError(f"fragment '{fname}' is already defined in {fragments[fname][1]}",
                                   _where(knode, fpath))
            fragments[fname] = (vnode, fpath)
    return fragments


def _platform_header(node: tuple[Node | None, str], doc_path: str, ctx: _Ctx) -> tuple[str, list[Statement]]:
    """``platform:`` -> (its ``files`` path, the [Defines] fields it makes: name, guid, the other header
    fields, ``fields:``, and FLASH_DEFINITION)."""
    pnode, ppath = node
    if pnode is None:
        raise OvmfgenError("missing 'platform:' (name, guid, files, ...)", Location(doc_path, 1, 1))
    pkeys = _mapping(pnode, ppath, "platform", PLATFORM_KEYS)
    for required in ("files", "name", "guid"):
        if required not in pkeys:
            raise OvmfgenError(f"platform: missing '{required}'", _where(pnode, ppath))
    files = _value(pkeys["files"][1], ppath, "platform.files", ctx)
    if files.startswith("/") or ".." in files.split("/") or not re.match(r"^[\w./-]+$", files):
        raise OvmfgenError(f"platform.files must be a relative path like OvmfPkg/XenOvmf, got '{files}'",
                           _where(pkeys["files"][1], ppath))
    header: list[Statement] = []
    for key, field_name in HEADER_FIELDS.items():
        if key not in pkeys:
            continue
        knode, vnode = pkeys[key]
        if isinstance(vnode, SequenceNode):
            value = "|".join(_value(v, ppath, f"platform.{key}", ctx) for v in vnode.value)
        else:
            value = _value(vnode, ppath, f"platform.{key}", ctx)
        if key == "guid" and not re.match(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$", value):
            raise OvmfgenError(f"platform.guid: '{value}' is not a GUID", _where(vnode, ppath))
        header.append(Field(field_name, value, loc=_where(knode, ppath)))
    if "fields" in pkeys:
        for key, (knode, vnode) in _mapping(pkeys["fields"][1], ppath, "platform.fields").items():
            header.append(Field(key, _value(vnode, ppath, f"platform.fields.{key}", ctx), loc=_where(knode, ppath)))
    header.append(Field("FLASH_DEFINITION", f"{files}.fdf", loc=_where(pkeys["files"][0], ppath)))
    return files, header


def _dsc(node: tuple[Node | None, str], doc_path: str, header: list[Statement], ctx: _Ctx) -> tuple[Section, ...]:
    """``dsc:`` -> its sections, the first one [Defines] with the platform header's fields in front."""
    dnode, dpath = node
    if dnode is None:
        raise OvmfgenError("missing 'dsc:' sections", Location(doc_path, 1, 1))
    dsc = _sections(dnode, dpath, ctx, "dsc")
    if not dsc or dsc[0].header != "Defines":
        where = dsc[0].loc if dsc else _where(dnode, dpath)
        raise OvmfgenError("the first dsc section must be 'Defines'", where)
    return (Section("Defines", (*header, *dsc[0].body), loc=dsc[0].loc), *dsc[1:])


def _deltas(node: tuple[Node | None, str], ctx: _Ctx) -> tuple[Delta, ...]:
    """``deltas:`` -> the differences from upstream in force for this tree (kind, subject, reason)."""
    dnode2, dpath2 = node
    deltas = []
    if dnode2 is not None:
        for item in _seq(dnode2, dpath2, "deltas"):
            keys = _mapping(item, dpath2, "delta", ("kind", "subject", "reason", "edk2"))
            for req in ("kind", "subject", "reason"):
                if req not in keys:
                    raise OvmfgenError(f"delta: missing '{req}'", _where(item, dpath2))
            # {edk2: COND}: a difference only some releases have (a release-only override's file).
            carried = ""
            if "edk2" in keys:
                in_force, carried = _entry_release(keys["edk2"][1], dpath2, ctx, "delta edk2")
                if not in_force:
                    continue
            kind = _text(keys["kind"][1], dpath2, "delta kind").strip()
            if kind not in DELTA_KINDS:
                raise OvmfgenError(f"delta kind '{kind}' is not one of: {', '.join(DELTA_KINDS)}",
                                   _where(keys["kind"][1], dpath2))
            deltas.append(Delta(kind, _text(keys["subject"][1], dpath2, "delta subject").strip(),
                                " ".join(_text(keys["reason"][1], dpath2, "delta reason").split()),
                                loc=_where(item, dpath2), carried=carried))
    return tuple(deltas)


def _upstream(node: tuple[Node | None, str]) -> Upstream | None:
    """``upstream:`` -> the DSC/FDF in the tree the platform is compared with (``invoke diff``, rebase)."""
    unode, upath = node
    if unode is None:
        return None
    ukeys = _mapping(unode, upath, "upstream", ("dsc", "fdf"))
    if "dsc" not in ukeys or "fdf" not in ukeys:
        raise OvmfgenError("upstream: needs 'dsc' and 'fdf'", _where(unode, upath))
    return Upstream(_text(ukeys["dsc"][1], upath, "upstream.dsc").strip(),
                    _text(ukeys["fdf"][1], upath, "upstream.fdf").strip())


def _elf(node: tuple[Node | None, str], secure_boot: SecureBoot | None = None) -> ElfSpec | None:
    """``elf:`` -> the PVH ELF's load address and the header region each FD size reserves at offset 0
    (with Secure Boot, the 4 MiB FD's header region ends where the pre-enrolled variable store begins)."""
    enode, epath = node
    if enode is None:
        return None
    ekeys = _mapping(enode, epath, "elf", ("base", "header_region"))
    base = _int(ekeys["base"][1], epath, "elf.base") if "base" in ekeys else 0x100000
    regions: list[tuple[int, int]] = []
    if "header_region" in ekeys:
        for size, (knode, vnode) in _mapping(ekeys["header_region"][1], epath, "elf.header_region").items():
            mib = size.upper().removesuffix("M").removesuffix("MB").removesuffix("MIB")
            if mib not in ("1", "2", "4"):
                raise OvmfgenError(f"elf.header_region: FD size '{size}' is not one of 1M, 2M, 4M",
                                   _where(knode, epath))
            regions.append((int(mib) * 1024, _int(vnode, epath, f"elf.header_region.{size}")))
    if secure_boot is not None:
        regions = [(kb, secure_boot.store_offset if kb == SECURE_BOOT_FD_KB else n) for kb, n in regions]
    return ElfSpec(base, tuple(sorted(regions)))


def _overrides(node: tuple[Node | None, str], ctx: _Ctx) -> tuple[Override, ...]:
    """``overrides:`` -> the entries in force for this tree, in order (platform/overrides.py applies them)."""
    onode, opath = node
    if onode is None:
        return ()
    out = []
    for item in _seq(onode, opath, "overrides"):
        if not isinstance(item, MappingNode):
            out.append(Override(_text(item, opath, "override path").strip(), loc=_where(item, opath)))
            continue
        entry = _override_entry(item, opath, ctx)
        if entry is not None:
            out.append(entry)
    return tuple(out)


def _override_entry(item: MappingNode, opath: str, ctx: _Ctx) -> Override | None:
    """One mapping entry of ``overrides:``; None when its ``edk2:`` condition leaves it out of this tree.

    {path: P, per_tree: true}: one copy per edk2 tree (overrides/<platform>/<tag>/P);
    {patch: NAME.patch}: a unified diff applied to the tree's files (platform/overrides.py);
    {edk2: COND}: only for the trees that condition holds for; a condition naming one release (a fix of
    that release's upstream bug) also carries the entry to later trees, while its patch applies;
    {commit: {subject, body}}: the entry's commit in the upstream series (invoke patch).
    """
    okeys = _mapping(item, opath, "override", ("path", "patch", "per_tree", "edk2", "commit"))
    if ("path" in okeys) == ("patch" in okeys):
        raise OvmfgenError("override: needs one of 'path' (a whole file) or 'patch' (a unified diff)",
                           _where(item, opath))
    key = "path" if "path" in okeys else "patch"
    carried = ""
    if "edk2" in okeys:
        in_force, carried = _entry_release(okeys["edk2"][1], opath, ctx, "override edk2")
        if not in_force:
            return None
    per_tree = False
    if "per_tree" in okeys:
        flag = _text(okeys["per_tree"][1], opath, "override per_tree").strip().lower()
        if flag not in ("true", "false"):
            raise OvmfgenError(f"override per_tree: expected true or false, got '{flag}'",
                               _where(okeys["per_tree"][1], opath))
        per_tree = flag == "true"
    # Only one diff for every tree can be carried (applying it tells whether it still fits): a whole file
    # or a per-tree copy names its trees, and stays with them.
    if carried and (key != "patch" or per_tree):
        return None
    subject = body = ""
    if "commit" in okeys:
        ckeys = _mapping(okeys["commit"][1], opath, "override commit", ("subject", "body"))
        if "subject" not in ckeys or "body" not in ckeys:
            raise OvmfgenError("override commit: needs 'subject' and 'body'", _where(okeys["commit"][1], opath))
        subject = " ".join(_text(ckeys["subject"][1], opath, "override commit subject").split())
        body = _text(ckeys["body"][1], opath, "override commit body").strip("\n")
    return Override(_text(okeys[key][1], opath, f"override {key}").strip(), per_tree=per_tree,
                    commit_subject=subject, commit_body=body, patch=key == "patch", loc=_where(item, opath),
                    carried=carried)


def _fd_name(node: tuple[Node | None, str]) -> str:
    """``publish: {fd: NAME}``: the FD the build publishes (OVMF by default)."""
    pubnode, pubpath = node
    if pubnode is not None:
        keys = _mapping(pubnode, pubpath, "publish", ("fd",))
        if "fd" in keys:
            return _text(keys["fd"][1], pubpath, "publish.fd").strip()
    return "OVMF"


def _copyright(node: tuple[Node | None, str]) -> tuple[str, ...]:
    """``copyright:`` -> the lines carried into the generated files' header."""
    cnode, cpath = node
    return tuple(_text(c, cpath, "copyright line").strip() for c in _seq(cnode, cpath, "copyright")) \
        if cnode is not None else ()


def _description(node: tuple[Node | None, str]) -> str:
    """``description:`` folded to one line."""
    desc_node, desc_path = node
    return " ".join(_text(desc_node, desc_path, "description").split()) if desc_node is not None else ""


# --- Secure Boot: the key sets, and what the feature implies ----------------------------------------

#: Secure Boot needs the 4 MiB layout: its PcdMaxAuthVariableSize (0x8400) holds a current dbx
#: (21-31 kB); the 2 MiB layout's (0x2800, 10 KiB) does not.
SECURE_BOOT_FD_KB = 4096
#: The 4 MiB layout's NV variable store region (PcdFlashNvStorageVariableSize): XenPlatformPei looks for the
#: pre-enrolled store at each 4 KiB boundary in it, after the ELF header's page.
SECURE_BOOT_STORE_REGION = 0x40000
#: Where Xen loads a PVH guest's FD; XenPlatformPei looks for the store there (XEN_PVH_FD_BASE in the patch).
SECURE_BOOT_PVH_BASE = 0x100000
#: Owner GUID of the signature list entries ovmfgen enrolls for certificates that are not Microsoft's.
OVMFGEN_OWNER = "6f766d66-6765-6e00-8000-6b65797365ff"
#: Owner GUID of Microsoft's certificates (as Microsoft and virt-firmware enroll them).
MICROSOFT_OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"
_KEY_SET_KEYS = ("description", "pk", "kek", "db", "dbx")
_CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")


def shipped_certs() -> dict[str, tuple[Path, str]]:
    """The certificates virt-firmware ships, by name (``ms-uefi-2023``): their file and owner GUID."""
    try:
        import virt.firmware as vf  # the enrollment tool's own package (a dependency of ovmfgen)
    except ImportError:
        return {}
    out = {}
    for pem in sorted((Path(vf.__file__).parent / "certs").glob("*/*.pem")):
        out[pem.stem] = (pem, MICROSOFT_OWNER if pem.parent.name == "microsoft.com" else OVMFGEN_OWNER)
    return out


def _cert(node: Node, path: str, what: str, base: Path, shipped: dict[str, tuple[Path, str]]) -> Cert:
    """One certificate entry: a file (relative to the platform file's folder) or a shipped name."""
    spec = _text(node, path, what).strip()
    loc = _where(node, path)
    if "/" in spec or spec.lower().endswith(_CERT_SUFFIXES):
        file = base / spec
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise OvmfgenError(f"{what}: cannot read certificate file {display_path(file)}: "
                               f"{exc.strerror or exc}", loc) from None
        sha256, subject = _check_certificate(data, f"{what}: {display_path(file)}", loc)
        return Cert(spec, file, OVMFGEN_OWNER, sha256, subject, loc=loc)
    if spec not in shipped:
        raise OvmfgenError(f"{what}: '{spec}' is neither a certificate file (a path with a '/' or ending in .pem, "
                           ".crt, .cer or .der) nor the name of a certificate virt-firmware ships (ms-kek-2011, "
                           "ms-kek-2023, ms-uefi-2011, ms-uefi-2023, windows-2011, windows-2023, debian-2016, ...)", loc)
    file, owner = shipped[spec]
    sha256, subject = _check_certificate(file.read_bytes(), f"{what}: {spec} ({display_path(file)})", loc)
    return Cert(spec, file, owner, sha256, subject, loc=loc)


def _check_certificate(data: bytes, what: str, loc: Location) -> tuple[str, str]:
    """An X.509 certificate, PEM or DER, with an RSA key (what edk2's image verification takes): its
    fingerprint (sha256 of the DER, as a signature list holds it) and its subject."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
        key = cert.public_key()
    except (ValueError, TypeError):
        raise OvmfgenError(f"{what} is not an X.509 certificate (PEM or DER)", loc) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise OvmfgenError(f"{what}: the certificate's key is not RSA (edk2 verifies RSA signatures only)", loc)
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(), cert.subject.rfc4514_string()


def _key_set(name: str, node: Node, path: str, base: Path) -> KeySet:
    """One key set of ``secure_boot.key_sets`` (its certificate files read and checked)."""
    what = f"secure_boot.key_sets.{name}"
    keys = _fields(node, path, what, _KEY_SET_KEYS, ("pk", "kek", "db"))
    shipped = shipped_certs()

    def certs(key: str) -> tuple[Cert, ...]:
        vnode = keys[key][1]
        items = _seq(vnode, path, f"{what}.{key}") if isinstance(vnode, SequenceNode) else [vnode]
        if not items:
            raise OvmfgenError(f"{what}.{key} must not be empty", _where(vnode, path))
        return tuple(_cert(item, path, f"{what}.{key}", base, shipped) for item in items)

    pk = certs("pk")
    if len(pk) != 1:
        raise OvmfgenError(f"{what}.pk: exactly one certificate (the Platform Key), got {len(pk)}",
                           _where(keys["pk"][1], path))
    dbx: Path | None = None
    if "dbx" in keys:
        text = _text(keys["dbx"][1], path, f"{what}.dbx").strip()
        if text != "empty":
            dbx = base / text
            try:
                size = dbx.stat().st_size
            except OSError as exc:
                raise OvmfgenError(f"{what}.dbx: cannot read {display_path(dbx)}: {exc.strerror or exc} (a dbx "
                                   "update file, as Microsoft publishes it, or 'empty')",
                                   _where(keys["dbx"][1], path)) from None
            if not size:
                raise OvmfgenError(f"{what}.dbx: {display_path(dbx)} is empty", _where(keys["dbx"][1], path))
    description = " ".join(_text(keys["description"][1], path, f"{what}.description").split()) \
        if "description" in keys else ""
    return KeySet(name, description, pk[0], certs("kek"), certs("db"), dbx, loc=_where(node, path))


@dataclass(frozen=True)
class _SecureBootSection:
    """A platform's ``secure_boot:`` section, its shape checked (the key sets not yet read)."""

    offset: int
    size: int
    sets: dict[str, tuple[Node, Node]]
    path: str


def _fields(node: Node, path: str, what: str, allowed: tuple[str, ...],
            required: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
    """A mapping with only ``allowed`` keys, each of ``required`` present (else one line naming the first missing)."""
    keys = _mapping(node, path, what, allowed)
    for req in required:
        if req not in keys:
            raise OvmfgenError(f"{what}: missing '{req}'", _where(node, path))
    return keys


def _secure_boot_section(node: tuple[Node | None, str]) -> _SecureBootSection | None:
    """``secure_boot:`` -> where the store goes and the key sets by name (checked whether the feature is on
    or not, like a ``when:`` block's unused arm)."""
    snode, spath = node
    if snode is None:
        return None
    keys = _fields(snode, spath, "secure_boot", ("store", "key_sets"), ("store", "key_sets"))
    store = _fields(keys["store"][1], spath, "secure_boot.store", ("offset", "size"), ("offset", "size"))
    offset = _int(store["offset"][1], spath, "secure_boot.store.offset")
    size = _int(store["size"][1], spath, "secure_boot.store.size")
    if offset < 0x1000 or offset % 0x1000 or offset >= SECURE_BOOT_STORE_REGION:
        raise OvmfgenError(f"secure_boot.store.offset: 0x{offset:x} must be a multiple of 0x1000 that leaves the "
                           "PVH ELF header its page and lies in the NV variable store region (0x1000 to "
                           f"0x{SECURE_BOOT_STORE_REGION - 0x1000:x}: where XenPlatformPei looks)",
                           _where(store["offset"][1], spath))
    sets = _mapping(keys["key_sets"][1], spath, "secure_boot.key_sets")
    for name, (knode, _) in sets.items():
        if not OPEN_VALUE_RE.match(name) or name == "off":
            raise OvmfgenError(f"secure_boot.key_sets: '{name}' is not a key set name (lower-case letters, digits, "
                               "'-'; not 'off')", _where(knode, spath))
    return _SecureBootSection(offset, size, sets, spath)


def _secure_boot(section: _SecureBootSection | None, features: dict[str, str], overrides: Mapping[str, str],
                 fnode: tuple[Node | None, str], base: Path) -> SecureBoot | None:
    """Feature ``secure_boot``: None when off; else its key set, checked, and what it implies (the 4 MiB
    layout, no Shell), in ``features``. An explicit ``--fd-size``/``--feature`` that contradicts it is an error."""
    value = features["secure_boot"]
    if value == "off":
        return None
    # Where the value came from: the command line (no location) or the platform's features: line.
    loc = None
    if "secure_boot" not in overrides and fnode[0] is not None:
        for knode, vnode in fnode[0].value:
            if isinstance(knode, ScalarNode) and knode.value == "secure_boot":
                loc = _where(vnode, fnode[1])
    shown = "--feature secure_boot" if loc is None else "feature 'secure_boot'"

    def refused(message: str) -> OvmfgenError:
        return BadFeatureValue(message, "secure_boot") if loc is None else OvmfgenError(message, loc)

    if section is None:
        raise refused(f"{shown}: '{value}' names no key set: this platform has no 'secure_boot:' section "
                      "(no Secure Boot support)")
    if value not in section.sets:
        raise refused(f"{shown}: '{value}' is not a key set of this platform (key sets: "
                      f"{', '.join(sorted(section.sets))}; or 'off')")
    key_set = _key_set(value, section.sets[value][1], section.path, base)
    size_kb = int(features["fd_size"]) * 1024
    if "fd_size" in overrides and size_kb != SECURE_BOOT_FD_KB:
        raise OvmfgenError(f"--fd-size {features['fd_size']}M: Secure Boot needs the 4 MiB layout (its 10 KiB limit "
                           "per authenticated variable is smaller than a current dbx): use --fd-size 4M or leave it out")
    if overrides.get("shell") == "true":
        raise BadFeatureValue("--feature shell=true: a Secure Boot image has no Shell (the Shell bypasses Secure "
                              "Boot; edk2 leaves it out of such images too)", "shell")
    features["fd_size"] = str(SECURE_BOOT_FD_KB // 1024)
    features["shell"] = "false"
    return SecureBoot(key_set, section.offset, section.size)
