"""Property: an upstream DSC/FDF pair, mutated, imports or fails with one line at the DSC/FDF's own line.

Whatever the mutation (lines deleted, duplicated, replaced by directive/section/brace fragments or
random text, bytes that are not UTF-8, a file cut short), ``invoke import`` either writes a YAML that
loads, or raises one OvmfgenError located at the DSC or FDF path it was given: never a traceback,
never a temporary YAML's path, nothing written.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.importer import import_command
from ovmfgen.platform.load import load_platform

BASE = ("OvmfPkg/OvmfXen.dsc", "OvmfPkg/OvmfXen.fdf")
FRAGMENTS = (
    "!if $(X) == TRUE", "!ifdef X", "!ifndef $(X)", "!else", "!elseif $(Y)", "!endif", "!include Missing/File.inc",
    "!include", "!error boom", "!bogus", "!", "[Components]", "[PcdsFixedAtBuild]", "[LibraryClasses.X64]",
    "[FD.OVMF]", "[FD.OTHER]", "[FV.X]", "[Defines]", "[Rule.Common.PEIM]", "[", "]", "[]", "{", "}",
    "<LibraryClasses>", "<PcdsFixedAtBuild>", "<Bogus>", "DEFINE", "DEFINE X =", "DEFINE = 1", "X = Y", "=",
    "A|B|C", "|", "gTok.Pcd|{0x1, 0x2", "gTok.Pcd.F[0]|1", "gTok.Pcd[|1", "0x0|0x1000", "0x100|$(SIZE)",
    "gTok.A|gTok.B", "FV = X", "DATA = {", "SET gTok.P = 1", "SET", "INF", "INF  RuleOverride=X", "FILE FREEFORM = G {",
    '"unterminated', "'", "#", "# comment", "  Pkg/Missing.inf {", "Pkg/A.inf", "$(", "$(X)", "${x}", "${",
    "&anchor", "*alias", "- [x]", ": :", "key: value", "%", "@", "`", "\t\t", "\x00", "\ufeff", "\x85", "\u2028",
    "FLASH_DEFINITION = Other.fdf", "PLATFORM_NAME =", "SUPPORTED_ARCHITECTURES = X64|", "<PcdsFixedAtBuild>|",
)
mutation = st.tuples(
    st.sampled_from(("dsc", "fdf")),
    st.sampled_from(("delete", "insert", "replace", "append", "duplicate", "truncate", "bytes")),
    st.integers(min_value=0, max_value=10**6),
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)),
)


def _mutate(data: bytes, op: str, at: int, text: str) -> bytes:
    lines = data.split(b"\n")
    i = at % len(lines)
    frag = text.encode("utf-8", errors="surrogatepass")
    if op == "delete":
        del lines[i]
    elif op == "insert":
        lines.insert(i, frag)
    elif op == "replace":
        lines[i] = frag
    elif op == "append":
        lines[i] += frag
    elif op == "duplicate":
        lines[i:i] = lines[i:i + 1 + at % 7]
    elif op == "truncate":
        return data[:at % (len(data) + 1)]
    else:
        pos = at % (len(data) + 1)
        return data[:pos] + bytes([0xff, 0xfe, at % 256]) + data[pos:]
    return b"\n".join(lines)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_upstream_imports_or_fails_at_its_own_line(mutations: list, edk2_tree) -> None:
    originals = {kind: (edk2_tree.root / rel).read_bytes() for kind, rel in zip(("dsc", "fdf"), BASE)}
    data = dict(originals)
    for kind, op, at, text in mutations:
        data[kind] = _mutate(data[kind], op, at, text)
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "OvmfPkg"
        pkg.mkdir()
        (pkg / "OvmfPkg.dec").write_text("[Defines]\n")
        dsc, fdf = pkg / "OvmfXen.dsc", pkg / "OvmfXen.fdf"
        dsc.write_bytes(data["dsc"])
        fdf.write_bytes(data["fdf"])
        out = Path(tmp) / "platforms" / "imported.yaml"
        out.parent.mkdir()
        try:
            import_command(str(dsc), str(fdf), str(out))
        except OvmfgenError as exc:
            message = str(exc)
            assert "\n" not in message and "ovmfgen-import-" not in message, message
            assert re.match(rf"^({re.escape(str(dsc))}|{re.escape(str(fdf))}):\d+(:\d+)?: error: \S", message), message
            assert not out.exists()
        else:
            load_platform(out, platforms_dir=out.parent)
