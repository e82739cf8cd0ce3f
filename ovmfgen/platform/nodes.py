"""Read a YAML file as a node graph with a source location on every node.

``load_yaml_nodes`` is the one reader for every YAML file ovmfgen reads (platforms, the
platforms/common fragments, nightly.yaml): its errors are one ``path:LINE:COL: error: ...`` line.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ovmfgen.errors import Location, OvmfgenError, display_path


def load_yaml_nodes(path: Path, kind: str = "YAML file") -> MappingNode:
    """Compose ``path`` into nodes (its top-level mapping), reporting YAML syntax errors and duplicate
    keys with locations; ``kind`` names the file in messages ("no such platform file")."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OvmfgenError(f"no such {kind}: {shown}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OvmfgenError(f"cannot read {shown}: {exc}") from None
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(shown, mark.line + 1, mark.column + 1) if mark else Location(shown)
        raise OvmfgenError(f"invalid YAML: {exc.problem or exc.context}", loc) from None
    except yaml.YAMLError as exc:
        raise OvmfgenError(f"invalid YAML: {exc}", Location(shown)) from None
    if root is None:
        raise OvmfgenError(f"empty {kind}", Location(shown, 1, 1))
    if not isinstance(root, MappingNode):
        mark = root.start_mark
        raise OvmfgenError("expected a mapping at the top level", Location(shown, mark.line + 1, mark.column + 1))
    _check_duplicates(root, shown)
    return root


# libyaml's composer, when PyYAML was built with it: xen-pvh.yaml in 10 ms instead of 133 ms, and a
# no-op build reads the platform first thing.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def _compose(text: str) -> Node | None:
    """YAML text -> nodes, with libyaml where there is one; else, and on any error, with the
    pure-Python loader, whose messages and marks the tests/invalid cases pin."""
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _check_duplicates(node: Node, path: str) -> None:
    if isinstance(node, MappingNode):
        seen: dict[str, Node] = {}
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                if key.value in seen:
                    first = seen[key.value].start_mark.line + 1
                    raise OvmfgenError(f"duplicate key '{key.value}' (first defined on line {first})",
                                       Location(path, key.start_mark.line + 1, key.start_mark.column + 1))
                seen[key.value] = key
            _check_duplicates(value, path)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)
