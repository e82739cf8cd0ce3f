"""ovmfgen.patch.verify: --check-each's driver (a cheap step instead of a full build), the build step and its env."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ovmfgen.edk2 import tree as edk2
from ovmfgen.patch import git as patch_git
from ovmfgen.patch import verify as patch_verify
from ovmfgen.errors import OvmfgenError


# --- the per-commit driver (with a cheap step instead of a full build) -------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=patch_git.git_env({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                                             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})
                          ).stdout


@pytest.fixture
def three_commits(tmp_path: Path) -> tuple[Path, list[str]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README").write_text("base\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    commits = []
    for subject, files in [("OvmfPkg: Add header", {"OvmfPkg/Hdr.inc": "h\n"}),
                           ("OvmfPkg: Add platform", {"OvmfPkg/XenOvmf.dsc": "ok\n"}),
                           ("OvmfPkg: Break platform", {"OvmfPkg/XenOvmf.dsc": "broken\n"})]:
        for rel, text in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", subject)
        commits.append(_git(repo, "rev-parse", "HEAD").strip())
    return repo, commits


def test_check_each_runs_the_step_at_every_commit_and_reports_each(three_commits) -> None:
    repo, commits = three_commits
    seen = []

    def step(tree: Path, index: int):
        seen.append((index, _git(tree, "rev-parse", "HEAD").strip()))
        dsc = tree / "OvmfPkg/XenOvmf.dsc"
        if not dsc.is_file():
            return "nothing to build", "no OvmfPkg/XenOvmf.dsc yet", None
        # A cheap stand-in for `build`: a real command whose exit status decides.
        proc = subprocess.run(["grep", "-qx", "ok", str(dsc)])
        if proc.returncode:
            raise OvmfgenError("build exit 1: the DSC is broken")
        return "built", "", None

    said: list[str] = []
    results = patch_verify.check_each(repo, commits, step, progress=said.append)
    assert said[0::2] == ["[1/3] OvmfPkg: Add header: checking ...", "[2/3] OvmfPkg: Add platform: checking ...",
                          "[3/3] OvmfPkg: Break platform: checking ..."]
    assert said[1::2] == [r.line(3) for r in results]
    assert seen == [(1, commits[0]), (2, commits[1]), (3, commits[2])]
    assert [(r.index, r.status) for r in results] == [(1, "nothing to build"), (2, "built"), (3, "failed")]
    assert results[2].detail == "build exit 1: the DSC is broken" and not results[2].ok
    assert [r.subject for r in results] == ["OvmfPkg: Add header", "OvmfPkg: Add platform", "OvmfPkg: Break platform"]
    assert results[0].line(3) == "[1/3] OvmfPkg: Add header: nothing to build (no OvmfPkg/XenOvmf.dsc yet)"
    assert results[1].line(3).startswith("[2/3] OvmfPkg: Add platform: built in ")
    # The tip is checked out again afterwards.
    assert _git(repo, "rev-parse", "HEAD").strip() == commits[2]
    assert (repo / "OvmfPkg/XenOvmf.dsc").read_text() == "broken\n"


def test_build_step_has_nothing_to_build_before_the_dsc_exists(platform, tree: edk2.Edk2Tree, three_commits,
                                                               tmp_path: Path) -> None:
    repo, commits = three_commits
    step = patch_verify.edk2_build_step(platform, tree.basetools, tmp_path / "work")
    results = patch_verify.check_each(repo, commits[:1], step)
    assert [(r.status, r.detail) for r in results] == [("nothing to build", "no OvmfPkg/XenOvmf.dsc yet")]
    with pytest.raises(OvmfgenError, match="target 'FAST' is not one of DEBUG, RELEASE, NOOPT"):
        patch_verify.edk2_build_step(platform, tree.basetools, tmp_path, target="FAST")


def test_build_env_is_what_edksetup_would_set(tree: edk2.Edk2Tree, tmp_path: Path) -> None:
    env = patch_verify.build_env(tmp_path / "ws", tree.basetools, tmp_path / "Conf")
    assert env["WORKSPACE"] == str(tmp_path / "ws") and env["EDK_TOOLS_PATH"] == str(tree.basetools)
    assert env["PATH"].split(os.pathsep)[0] == str(tree.basetools / "BinWrappers" / "PosixLike")
    assert "PACKAGES_PATH" not in env
    assert env["PYTHONHASHSEED"] == "1"    # as edksetup.sh: stable AutoGen output, real incremental builds
    assert sorted(p.name for p in (tmp_path / "Conf").iterdir()) == ["build_rule.txt", "target.txt", "tools_def.txt"]
