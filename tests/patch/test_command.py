"""ovmfgen.patch.command (invoke patch): bad input in one line, the newest tree by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SIGNER
from ovmfgen.edk2 import tree as edk2
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import REPO_ROOT


# --- bad input: one line, exit != 0 ---------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ovmfgen", "patch", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**os.environ, "OVMFGEN_VERBOSE": ""})


def test_cli_unknown_platform_is_one_line(real_cache: None, edk2_tree_202605: edk2.Edk2Tree) -> None:
    proc = _cli("--platform", "no-such-platform", "--signoff", SIGNER)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: unknown platform 'no-such-platform' (known: {', '.join(sorted(p.stem for p in (REPO_ROOT / 'platforms').glob('*.yaml')))})"]


def test_cli_unwritable_output_is_one_line(tmp_path: Path, real_cache: None,
                                           edk2_tree_202605: edk2.Edk2Tree) -> None:
    """`invoke patch` targets the newest tree by default: it must be there for the later checks."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    proc = _cli("--platform", "xen-pvh", "--signoff", SIGNER, "-o", str(blocker / "patches"))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines == [f"error: cannot write the series to {blocker / 'patches'}: not a directory ({blocker} is a file)"]
    proc = _cli("--platform", "xen-pvh", "--signoff", SIGNER, "-o", str(blocker))
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"error: cannot write the series to {blocker}: not a directory"]


def test_cli_bad_signoff_is_one_line(tmp_path: Path) -> None:
    proc = _cli("--platform", "xen-pvh", "--signoff", "nobody", "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: --signoff 'nobody' is not 'Name <email>'"]
    assert not (tmp_path / "out").exists()


def test_invoke_patch_defaults_to_the_newest_tree(monkeypatch: pytest.MonkeyPatch, real_cache: None,
                                                  edk2_tree_202605: edk2.Edk2Tree) -> None:
    """A series must apply to the current upstream tree; --edk2 still targets an older one."""
    from ovmfgen.edk2.releases import NEWEST_TAG
    from ovmfgen.patch import command as patch_command

    asked: list[str | None] = []

    def fake_generate(resolved, out, signer):
        asked.append(resolved.tree.tag)
        raise OvmfgenError("stop here")

    monkeypatch.setattr(patch_command, "generate", fake_generate)
    for edk2_arg in (None, "edk2-stable202502"):
        with pytest.raises(OvmfgenError, match="stop here"):
            patch_command.patch_command("xen-pvh", edk2=edk2_arg)
    assert asked == [NEWEST_TAG, "edk2-stable202502"]
