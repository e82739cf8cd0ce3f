"""Read a YAML file as a node graph with a source location on every node.

``load_yaml_nodes`` is the one reader for every YAML file ovmfgen reads (platforms, the
platforms/common fragments, nightly.yaml). Whatever bytes the file holds, it returns the top-level
mapping or raises one ``OvmfgenError`` located at ``path:LINE:COL``, quickly:

* the bytes are decoded here (UTF-8, a leading BOM allowed), so a bad byte is reported where it is;
  characters YAML does not allow (NUL, other control characters) likewise;
* a file over ``MAX_FILE_BYTES`` or a scalar over ``MAX_SCALAR_CHARS`` is refused;
* nodes are composed here from the parser's events, in a loop instead of recursion: collections
  nested deeper than ``MAX_DEPTH`` are refused (libyaml's own composer recurses in C and crashes the
  interpreter on ``[[[[...`` a hundred thousand deep; PyYAML's raises RecursionError);
* aliases (``*name``) are refused: expanding nested aliases ("billion laughs") is exponential, a
  cyclic one (``&a [*a]``) never ends, and platforms share text through ``- use:`` fragments and
  ``extends:`` instead (there is not one alias in platforms/ or nightly.yaml).
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import yaml
from yaml.events import (
    AliasEvent, MappingEndEvent, MappingStartEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent, StreamEndEvent,
)
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from ovmfgen.errors import Location, OvmfgenError, display_path

# The largest platform (qemu-x64.yaml) is 67 KB; 1 MiB leaves room and composes in ~0.3 s.
MAX_FILE_BYTES = 1 << 20
# Platforms nest 12 deep; YAML that nests further is a mistake, and 64 keeps every walker shallow.
MAX_DEPTH = 64
# The longest scalar in platforms/ is under 2 KB (a description); a 64 KiB one is not hand-written.
MAX_SCALAR_CHARS = 1 << 16
# On a syntax error the text is recomposed with PyYAML's pure-Python parser, whose words and marks the
# tests/invalid cases pin; it parses ~6 us per byte, so above this size libyaml's own message is kept
# (bounded time: a syntax error at the end of a 1 MiB file would otherwise take 6 s to report).
PYYAML_WORDS_MAX_BYTES = 128 << 10
# libyaml's composer gets only texts whose nesting this bounds (see _safe_for_libyaml_composer).
_LIBYAML_SAFE_INDICATORS = 4096

# libyaml's parser, when PyYAML was built with it: xen-pvh.yaml in 10 ms instead of 133 ms, and a
# no-op build reads the platform first thing.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)
# What YAML 1.1 allows in a stream (PyYAML's Reader.NON_PRINTABLE): tab, line breaks, printable text.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def where(node: Node, path: str) -> Location:
    """The location of ``node`` (1-based line and column) in the file shown as ``path``."""
    mark = node.start_mark
    return Location(path, mark.line + 1, mark.column + 1)


def load_yaml_nodes(path: Path, kind: str = "YAML file") -> MappingNode:
    """Compose ``path`` into nodes (its top-level mapping), reporting any problem as one located error.

    ``kind`` names the file in messages ("no such platform file", "empty platform file").
    Duplicate keys are errors; scalars stay text (no construction).
    """
    shown = display_path(path)
    text = _decode(_read(path, shown, kind), shown)
    root = _compose(text, shown)
    if root is None:
        raise OvmfgenError(f"empty {kind}", Location(shown, 1, 1))
    if not isinstance(root, MappingNode):
        raise OvmfgenError("expected a mapping at the top level", where(root, shown))
    _check_duplicates(root, shown)
    return root


def _read(path: Path, shown: str, kind: str) -> bytes:
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise OvmfgenError(f"cannot read this {kind}: it is a directory", Location(shown))
        if not stat.S_ISREG(mode):
            # A FIFO would block the read forever; a device may never end.
            raise OvmfgenError(f"cannot read this {kind}: not a regular file", Location(shown))
        with path.open("rb") as fh:
            # One byte over the limit is enough to know; a huge file is never read whole.
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise OvmfgenError(f"no such {kind}", Location(shown)) from None
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise OvmfgenError(f"cannot read this {kind}: {reason}", Location(shown)) from None
    if len(data) > MAX_FILE_BYTES:
        raise OvmfgenError(f"file is larger than {MAX_FILE_BYTES >> 20} MiB (ovmfgen's limit for a YAML file)",
                           Location(shown, 1, 1))
    return data


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``, counting line breaks as YAML does."""
    line, start = 1, 0
    for m in _LINE_BREAK.finditer(text, 0, index):
        line, start = line + 1, m.end()
    return line, index - start + 1


def _decode(data: bytes, shown: str) -> str:
    """UTF-8 (with or without a BOM) -> text; a bad byte or a character YAML forbids is located."""
    bom = data.startswith(b"\xef\xbb\xbf")
    body = data[3:] if bom else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = body[:exc.start].decode("utf-8")
        line, col = _line_col(good, len(good))
        raise OvmfgenError(f"not UTF-8: byte 0x{body[exc.start]:02x} cannot be decoded (YAML files must be UTF-8)",
                           Location(shown, line, col)) from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        line, col = _line_col(text, bad.start())
        raise OvmfgenError(f"control character U+{ord(bad.group()):04X} is not allowed in YAML",
                           Location(shown, line, col))
    return text


def _compose(text: str, shown: str) -> Node | None:
    """YAML text -> nodes: libyaml where there is one and the text is safe for its composer, else the
    event composer below; on a syntax error, the pure-Python parser, whose messages and marks the
    tests/invalid cases pin."""
    if _FAST_LOADER is not None:
        if _safe_for_libyaml_composer(text):
            try:
                root = yaml.compose(text, Loader=_FAST_LOADER)
            except yaml.YAMLError:
                pass
            else:
                if _within_limits(root):
                    return root
                # Over a limit: the event composer below reports where, at the alias or level that is.
        try:
            return _compose_events(_FAST_LOADER(text), shown)
        except yaml.YAMLError as exc:
            if len(text) > PYYAML_WORDS_MAX_BYTES:
                raise _yaml_error(exc, shown) from None
    try:
        return _compose_events(yaml.SafeLoader(text), shown)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, shown) from None


def _safe_for_libyaml_composer(text: str) -> bool:
    """Whether libyaml's composer (recursive, in C, no depth check) can be given ``text``.

    Every collection starts at one of ``[{-?:``, so their count bounds the nesting depth. Measured on
    an 8 MiB stack (the main thread's, and any thread's by default): it composes 20000 levels and
    crashes the interpreter at 50000; a thread given a 1 MiB stack crashes at 10000. The platforms
    hold ~2000 of these characters. Above the bound the event composer (no recursion) is used.
    """
    return sum(text.count(c) for c in "[{-?:") <= _LIBYAML_SAFE_INDICATORS



def _within_limits(root: Node | None) -> bool:
    """No alias (a node reached twice), no nesting over MAX_DEPTH, no scalar over MAX_SCALAR_CHARS."""
    if root is None:
        return True
    seen: set[int] = set()
    stack: list[tuple[Node, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            return False
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            if len(node.value) > MAX_SCALAR_CHARS:
                return False
            continue
        if depth >= MAX_DEPTH:
            return False
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node.value)
    return True


def _yaml_error(exc: yaml.YAMLError, shown: str) -> OvmfgenError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        loc = Location(shown, mark.line + 1, mark.column + 1) if mark else Location(shown, 1, 1)
        return OvmfgenError(f"invalid YAML: {exc.problem or exc.context}", loc)
    # Reader errors carry no mark; _decode already refused what they are about.
    return OvmfgenError(f"invalid YAML: {exc}", Location(shown, 1, 1))


def _compose_events(loader: yaml.SafeLoader, shown: str) -> Node | None:
    """Build the node graph of the single document in ``loader``'s event stream, iteratively.

    Same nodes, tags and marks as ``yaml.compose`` gives (test_load pins that), but with the limits
    of this module enforced as each event arrives.
    """
    try:
        loader.get_event()  # StreamStart
        if loader.check_event(StreamEndEvent):
            loader.get_event()
            return None
        loader.get_event()  # DocumentStart
        root = _compose_document(loader, shown)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError("expected a single document in the stream", root.start_mark,
                                              "but found another document", event.start_mark)
        loader.get_event()
        return root
    finally:
        loader.dispose()


def _compose_document(loader: yaml.SafeLoader, shown: str) -> Node:
    # One frame per open collection: the node and its items so far.
    stack: list[tuple[CollectionNode, list]] = []
    while True:
        event = loader.get_event()
        kind = type(event)
        if kind is AliasEvent:
            raise OvmfgenError(f"YAML aliases (*{event.anchor}) are not supported: write the value out, or share "
                               "it through a fragment ('- use: NAME')", _mark_location(event.start_mark, shown))
        if kind is ScalarEvent:
            if len(event.value) > MAX_SCALAR_CHARS:
                raise OvmfgenError(f"text of {len(event.value)} characters is longer than the limit "
                                   f"({MAX_SCALAR_CHARS})", _mark_location(event.start_mark, shown))
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(ScalarNode, event.value, event.implicit)
            node: Node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        elif kind is SequenceStartEvent or kind is MappingStartEvent:
            if len(stack) >= MAX_DEPTH:
                raise OvmfgenError(f"YAML nested more than {MAX_DEPTH} levels deep",
                                   _mark_location(event.start_mark, shown))
            cls = SequenceNode if kind is SequenceStartEvent else MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(cls, None, event.implicit)
            items: list = []
            stack.append((cls(tag, items, event.start_mark, None, flow_style=event.flow_style), items))
            continue
        elif kind is SequenceEndEvent or kind is MappingEndEvent:
            node, items = stack.pop()
            node.end_mark = event.end_mark
            if isinstance(node, MappingNode):
                # Built flat (key, value, key, value, ...) while open; pairs, as yaml.compose gives.
                node.value = list(zip(items[::2], items[1::2]))
        else:  # pragma: no cover - the parser yields nothing else inside a document
            raise yaml.composer.ComposerError(None, None, f"unexpected {type(event).__name__}", event.start_mark)
        if not stack:
            return node
        stack[-1][1].append(node)


def _mark_location(mark: yaml.Mark, shown: str) -> Location:
    return Location(shown, mark.line + 1, mark.column + 1)


def _check_duplicates(node: Node, path: str) -> None:
    # Recursion is bounded: _compose_document refused anything nested deeper than MAX_DEPTH.
    if isinstance(node, MappingNode):
        seen: dict[str, Node] = {}
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                if key.value in seen:
                    first = seen[key.value].start_mark.line + 1
                    raise OvmfgenError(f"duplicate key '{key.value}' (first defined on line {first})",
                                       where(key, path))
                seen[key.value] = key
            _check_duplicates(value, path)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)
