"""ovmfgen.builder.command: the no-op check on the plan, --ccache's preflight, the task's help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen import paths
from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import manifest as build_manifest
from ovmfgen.builder import publish as build_publish
from ovmfgen.builder.plan import plan
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import Layout


def test_noop_when_published_manifest_matches(layout: Layout, fake_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(resolve(make_request("xen-pvh"), layout))
    files = {"OVMF.fd": b"fd", "ovmf.elf": b"elf", "build.log": b"log"}
    manifest = build_manifest.make_manifest(p, files, {}, None, 1.0)
    build_publish.publish({**files, "manifest.json": json.dumps(manifest).encode()}, p.dist)

    def no_build(*a, **k):
        raise AssertionError("must not build")

    monkeypatch.setattr(build_cmd, "run_stuart", no_build)
    monkeypatch.setattr(build_cmd, "validate", no_build)
    result = build_cmd.build(resolve(make_request("xen-pvh"), layout))
    assert result.noop and result.dist == p.dist
    # A changed input is not a no-op (and the build is attempted: here it is refused).
    with pytest.raises(AssertionError, match="must not build"):
        build_cmd.build(resolve(make_request("xen-pvh", version_string="other"), layout))
    # Nor is a damaged artifact.
    (p.dist / "ovmf.elf").write_bytes(b"ELF")
    with pytest.raises(AssertionError, match="must not build"):
        build_cmd.build(resolve(make_request("xen-pvh"), layout))


def test_ccache_missing_is_one_clear_line(layout: Layout, fake_env: dict, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(build_cmd, "CCACHE_MASQUERADE", tmp_path / "no-ccache")
    with pytest.raises(OvmfgenError, match=r"--ccache needs Debian's ccache .*invoke setup"):
        build_cmd.build(resolve(make_request("xen-pvh", ccache=True), layout))


@pytest.mark.parametrize("task", ["build", "render"])
def test_task_help_is_help(task: str) -> None:
    """`--help` after the task shows its options (not taken as the platform's name)."""
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", task, "--help"], cwd=paths.REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: python -m ovmfgen [--core-opts] " + task) and "--platform" in proc.stdout
