"""builder/bench.py: ``invoke bench`` on an edk2 checkout (``--edk2 PATH``) measures that checkout on both sides.

The commands bench times are recorded instead of run (``bench.run``): what is checked is which tree each is
pointed at and what the results name, not a timing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import linked_git_checkout
from ovmfgen import paths
from ovmfgen.builder import bench
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.install import local_identity, write_identity


def test_bench_on_a_checkout_given_by_a_relative_path(edk2_tree_202605, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root, describe = linked_git_checkout(edk2_tree_202605, tmp_path / "edk2")
    # Set up as `invoke setup` leaves a checkout, in this test's own cache: its identity (from git) and
    # BaseTools (the 202605 tree's, which the checkout's files are).
    monkeypatch.setenv("OVMFGEN_CACHE", str(tmp_path / "cache"))
    # --edk2 PATH sets $OVMFGEN_EDK2 for the commands it runs: set (empty: no checkout) through monkeypatch, so
    # that it is unset again after the test.
    monkeypatch.setenv("OVMFGEN_EDK2", "")
    directory = edk2.local_dir(root)
    directory.mkdir(parents=True)
    (directory / edk2.BASETOOLS_DIR).symlink_to(edk2_tree_202605.basetools.parent)
    write_identity(directory, local_identity(root, "env"))

    calls: list[tuple[list[str], dict | None, Path | None]] = []

    def record(argv, cwd=None, env=None, **kw):
        calls.append(([str(a) for a in argv], env, cwd))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(bench, "run", record)
    monkeypatch.chdir(tmp_path)  # the user stands beside the checkout and names it relatively
    results = bench.bench_command("xen-pvh", edk2="./edk2", noop_only=True, output=str(tmp_path / "r.json"))

    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert results["edk2"] == describe and results["edk2_commit"] == head
    invoked = [(argv, cwd) for argv, _, cwd in calls if "build" in argv[1:3] or "render" in argv[1:3]]
    assert invoked, calls
    for argv, cwd in invoked:
        # Run from the repository, so the checkout goes to them as its absolute path.
        assert cwd == paths.REPO_ROOT
        assert argv[argv.index("--edk2") + 1] == str(root.resolve()), argv
    raw = [(argv, env) for argv, env, _ in calls if argv[0] == "build"]
    assert raw, calls
    for argv, env in raw:
        assert env is not None and env["PACKAGES_PATH"].split(os.pathsep)[-1] == str(root.resolve())
    assert os.environ["OVMFGEN_EDK2"] == str(root.resolve())
