"""The YAML reader: same nodes as yaml.compose, and one located error for any bad file, quickly."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform import nodes
from ovmfgen.platform.command import render_command
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.nodes import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_SCALAR_CHARS,
    load_yaml_nodes,
)
from ovmfgen.platform.render import render

YAML_FILES = sorted((REPO_ROOT / "platforms").rglob("*.yaml")) + [
    REPO_ROOT / "nightly.yaml", REPO_ROOT / "tests" / "data" / "platforms" / "mini.yaml"]


def _shape(node: yaml.Node) -> object:
    """A composed node as plain data: kind, tag, start/end line and column, flow style, children."""
    head = (type(node).__name__, node.tag, node.start_mark.line, node.start_mark.column, node.end_mark.line,
            node.end_mark.column, getattr(node, "flow_style", None))
    if isinstance(node, yaml.MappingNode):
        return (*head, [(_shape(k), _shape(v)) for k, v in node.value])
    if isinstance(node, yaml.SequenceNode):
        return (*head, [_shape(v) for v in node.value])
    return (*head, node.value)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_both_composers_give_yaml_compose_nodes(path: Path) -> None:
    """The libyaml path and the event composer give exactly PyYAML's nodes, tags and marks."""
    text = path.read_text(encoding="utf-8")
    want = _shape(yaml.compose(text, Loader=yaml.SafeLoader))
    assert _shape(nodes._compose(text, path.name)) == want
    loaders = [yaml.SafeLoader] + ([yaml.CSafeLoader] if getattr(yaml, "__with_libyaml__", False) else [])
    for loader in loaders:
        assert _shape(nodes._compose_events(loader(text), path.name)) == want


def test_the_libyaml_guard_admits_the_platforms() -> None:
    """The real platforms stay on the fast libyaml path (a bound well below the measured crash depth)."""
    for path in YAML_FILES:
        assert nodes._safe_for_libyaml_composer(path.read_text(encoding="utf-8")), path
    assert nodes._safe_for_libyaml_composer("x: " + "[" * 4095)
    assert not nodes._safe_for_libyaml_composer("x: " + "[" * 4096)


def _bomb(levels: int = 10) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


ALIAS = "YAML aliases (*{}) are not supported: write the value out, or share it through a fragment ('- use: NAME')"
DEEP = f"YAML nested more than {MAX_DEPTH} levels deep"

# (id, file bytes, expected message after "x.yaml:")
BAD = [
    ("alias-bomb", _bomb().encode(), "2:8: error: " + ALIAS.format("a")),
    ("cyclic-alias", b"a: &a [*a]\n", "1:8: error: " + ALIAS.format("a")),
    ("scalar-alias", b"a: &x 1\nb: *x\n", "2:4: error: " + ALIAS.format("x")),
    ("deep-flow", b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "1:67: error: " + DEEP),
    # The most nesting characters libyaml's composer is given: it composes, then the limit check refuses.
    ("at-the-libyaml-bound", b"x: " + b"[" * 4095 + b"]" * 4095 + b"\n", "1:67: error: " + DEEP),
    # Deep enough to crash libyaml's recursive composer (measured: between 20000 and 50000 levels).
    ("deeper-than-libyaml", b"x: " + b"[" * 200000 + b"\n", "1:67: error: " + DEEP),
    ("deep-block", b"x:\n" + b"".join(b"  " * i + b"- \n" for i in range(100)), "65:127: error: " + DEEP),
    ("deep-mapping", b"".join(b" " * i + b"k:\n" for i in range(100)), "65:65: error: " + DEEP),
    ("deep-after-syntax-error", b"x: ]\ny: " + b"[" * 100000, ("1:4: error: invalid YAML: expected the node content, "
     "but found ']'")),
    ("latin-1", b"description: caf\xe9\n", ("1:17: error: not UTF-8: byte 0xe9 cannot be decoded "
     "(YAML files must be UTF-8)")),
    ("bad-byte-line-3", b"a: 1\nb: \xc3\xa9t\xc3\xa9\nc: \xff\n", ("3:4: error: not UTF-8: byte 0xff cannot be "
     "decoded (YAML files must be UTF-8)")),
    ("utf-16", "a: 1\n".encode("utf-16"), ("1:1: error: not UTF-8: byte 0xff cannot be decoded "
     "(YAML files must be UTF-8)")),
    ("nul", b"a: 1\nb: x\x00y\n", "2:5: error: control character U+0000 is not allowed in YAML"),
    ("escape", b"a: \x1b[31m\n", "1:4: error: control character U+001B is not allowed in YAML"),
    ("del-after-bom", b"\xef\xbb\xbfa: \x7f\n", "1:4: error: control character U+007F is not allowed in YAML"),
    ("huge-scalar", b"a: " + b"x" * (MAX_SCALAR_CHARS + 1) + b"\n",
     f"1:4: error: text of {MAX_SCALAR_CHARS + 1} characters is longer than the limit ({MAX_SCALAR_CHARS})"),
    ("huge-file", b"# " + b"x" * MAX_FILE_BYTES + b"\n", ("1:1: error: file is larger than 1 MiB "
     "(ovmfgen's limit for a YAML file)")),
    ("empty", b"", "1:1: error: empty YAML file"),
    ("comments-only", b"# nothing\n", "1:1: error: empty YAML file"),
    ("bom-only", b"\xef\xbb\xbf", "1:1: error: empty YAML file"),
    ("not-a-mapping", b"- a\n", "1:1: error: expected a mapping at the top level"),
    ("two-documents", b"a: 1\n---\nb: 2\n", "2:1: error: invalid YAML: but found another document"),
    ("duplicate-key", b"a: 1\nb: 2\na: 3\n", "3:1: error: duplicate key 'a' (first defined on line 1)"),
    ("unclosed-quote", b'a: "x\n', "2:1: error: invalid YAML: found unexpected end of stream"),
    ("tab-indent", b"a:\n\tb: 1\n", "2:1: error: invalid YAML: found character '\\t' that cannot start any token"),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_bytes_give_one_located_line(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(data)
    with pytest.raises(OvmfgenError) as info:
        load_yaml_nodes(path)
    assert str(info.value) == f"{path}:{expected}"


def test_a_bom_is_allowed_and_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\nb: [x, y]\n")
    root = load_yaml_nodes(path)
    assert [(k.value, k.start_mark.column) for k, _ in root.value] == [("a", 0), ("b", 0)]


def test_a_large_file_with_a_syntax_error_keeps_libyaml_words(tmp_path: Path) -> None:
    """Above PYYAML_WORDS_MAX_BYTES the slow pure-Python recompose is skipped: libyaml's words, same place."""
    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML without libyaml")
    path = tmp_path / "x.yaml"
    path.write_bytes(b"".join(b"k%06d: v\n" % i for i in range(nodes.PYYAML_WORDS_MAX_BYTES // 10 + 1)) + b"z: ]\n")
    with pytest.raises(OvmfgenError) as info:
        load_yaml_nodes(path)
    assert str(info.value).startswith(f"{path}:13109:4: error: invalid YAML: ")


def test_the_limits_admit_what_they_name(tmp_path: Path) -> None:
    """Exactly MAX_DEPTH levels, a MAX_SCALAR_CHARS scalar and an unused anchor are fine."""
    path = tmp_path / "x.yaml"
    path.write_text("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\ny: " + "z" * MAX_SCALAR_CHARS
                    + "\nw: &anchor 1\n")
    assert [k.value for k, _ in load_yaml_nodes(path).value] == ["x", "y", "w"]


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "file").write_text("a: 1\n")
    os.mkfifo(tmp_path / "fifo.yaml")  # reading it would block forever
    cases = {
        tmp_path / "dir.yaml": "error: cannot read this platform file: it is a directory",
        tmp_path / "fifo.yaml": "error: cannot read this platform file: not a regular file",
        tmp_path / "file" / "x.yaml": "error: cannot read this platform file: not a directory",
        tmp_path / "missing.yaml": "error: no such platform file",
    }
    for path, message in cases.items():
        with pytest.raises(OvmfgenError) as info:
            load_yaml_nodes(path, "platform file")
        assert str(info.value) == f"{path}: {message}"


def test_paths_inside_the_repository_are_shown_relative() -> None:
    with pytest.raises(OvmfgenError) as info:
        load_yaml_nodes(REPO_ROOT / "tests" / "invalid" / "invalid-yaml.yaml")
    assert str(info.value).startswith("tests/invalid/invalid-yaml.yaml:8:20: error: invalid YAML: ")


# ---------------------------------------------------------------------------------------------
# Property: any bytes, and random mutations of xen-pvh.yaml, through the real command path


XEN_PVH = (REPO_ROOT / "platforms" / "xen-pvh.yaml").read_bytes()
XEN_LINES = XEN_PVH.split(b"\n")
# What a mutation writes: YAML indicators, quotes, whitespace, text, and bytes YAML or UTF-8 refuse.
PIECES = [bytes([c]) for c in b":-[]{}&*!|>'\"#%@`,? \t\r\nax0"] + [b"\x00", b"\x1b", b"\x7f", b"\xe9", b"\xff",
                                                                     b"\xc3\xa9", b"${", b"}", b"use: ", b"&a ", b"*a"]
ONE_LINE_ERROR = re.compile(r"[^\n]+:[0-9]+:[0-9]+: error: [^\n]+")


@st.composite
def mutated_xen_pvh(draw: st.DrawFn) -> bytes:
    """xen-pvh.yaml with 1-4 lines deleted, duplicated or swapped, or characters changed or inserted."""
    lines = list(XEN_LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("delete", "duplicate", "swap", "change", "insert")))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            k = draw(st.integers(0, len(lines[i])))
            piece = draw(st.sampled_from(PIECES))
            lines[i] = lines[i][:k] + piece + lines[i][k + (op == "change"):]
    return b"\n".join(lines)


ANY_BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(PIECES + [b"\n  ", b"\n- ", b"platform:", b"dsc:", b"extends: x"]),
             max_size=80).map(b"".join),
)


def _check_one_located_line(exc: BaseException) -> None:
    assert isinstance(exc, OvmfgenError), f"{type(exc).__name__}: {exc}"
    assert ONE_LINE_ERROR.fullmatch(str(exc)), str(exc)


@settings(max_examples=120, deadline=timedelta(seconds=2), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.one_of(mutated_xen_pvh(), ANY_BYTES))
def test_any_input_loads_and_renders_or_gives_one_located_line(tmp_path: Path, data: bytes) -> None:
    """Load (platforms/common fragments included) and render: success or one located line, < 2 s each."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / "xen-pvh.yaml"
    path.write_bytes(data)
    try:
        rendered = render(load_platform(path, platforms_dir=work))
    except Exception as exc:  # noqa: BLE001 - the property is about every exception
        event("error")
        _check_one_located_line(exc)
    else:
        event("rendered")
        assert rendered.dsc.endswith("\r\n") and rendered.fdf.endswith("\r\n")
    assert [p.name for p in work.iterdir()] == ["xen-pvh.yaml"]


@settings(max_examples=12, deadline=timedelta(seconds=15), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated_xen_pvh())
def test_render_command_on_mutations(tmp_path: Path, real_cache: None, data: bytes) -> None:
    """`invoke render --platform FILE --output DIR` in-process, validation against the real edk2 tree
    included: the files are written, or one located line and nothing written.

    The deadline is wider than the loader's 2 s: a mutation that loads is validated in full
    (edk2toollib parses every INF), which alone takes ~2.5 s on the shared CI machine.
    """
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path, out = work / "xen-pvh.yaml", work / "out"
    path.write_bytes(data)
    try:
        render_command(str(path), str(out))
    except Exception as exc:  # noqa: BLE001 - the property is about every exception
        event("error")
        _check_one_located_line(exc)
        assert not out.exists()
    else:
        event("written")
        assert sorted(p.name for p in out.iterdir()) == ["XenOvmf.dsc", "XenOvmf.fdf"]
