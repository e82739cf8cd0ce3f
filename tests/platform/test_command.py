"""``invoke render`` (ovmfgen.platform.command): render, validate, write; an unchanged render answers from its stamp."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.platform import command as render_cmd
from ovmfgen.platform import resolve as platform_resolve


def test_an_unchanged_render_is_answered_by_its_stamp(tmp_path: Path, edk2_tree, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    render_cmd.render_command("xen-pvh", str(out))
    dsc = (out / "XenOvmf.dsc").read_bytes()
    assert dsc.startswith(b"## @file") and b"\r\n" in dsc
    calls: list[object] = []
    real = platform_resolve.resolve
    monkeypatch.setattr(platform_resolve, "resolve", lambda *a, **k: calls.append(a) or real(*a, **k))
    capsys.readouterr()
    render_cmd.render_command("xen-pvh", str(out))
    assert calls == [] and "XenOvmf.dsc (unchanged)" in capsys.readouterr().err
    # A file that is no longer as written goes back to the full path, which writes it again.
    (out / "XenOvmf.dsc").write_bytes(b"edited\r\n")
    render_cmd.render_command("xen-pvh", str(out))
    assert len(calls) == 1 and (out / "XenOvmf.dsc").read_bytes() == dsc
