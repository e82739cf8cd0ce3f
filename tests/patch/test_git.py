"""patch/git.py: the series' base on a git checkout is the checkout's own commit; a release tree's is a snapshot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.patch import git as patch_git
from ovmfgen.patch import verify as patch_verify
from ovmfgen.patch.series import Ident

_WHO = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=patch_git.git_env(_WHO)).stdout


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, str]:
    """A tiny edk2-shaped git checkout: a release commit and one upstream commit on top (HEAD)."""
    repo = tmp_path / "edk2"
    (repo / "OvmfPkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "OvmfPkg" / "OvmfXen.dsc").write_bytes(b"[Defines]\r\n  PLATFORM_NAME = OvmfXen\r\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "release")
    (repo / "OvmfPkg" / "OvmfXen.dsc").write_bytes(b"[Defines]\r\n  PLATFORM_NAME = OvmfXen\r\n# next\r\n")
    _git(repo, "commit", "-q", "-a", "-m", "OvmfPkg: upstream change")
    # Untracked files (a build's output) are not the checkout's changes.
    (repo / "Build").mkdir()
    (repo / "Build" / "x.log").write_text("built\n")
    return repo, _git(repo, "rev-parse", "HEAD").strip()


def _identity(commit: str, source: str = "env") -> dict:
    return {"schema": 1, "source": source, "commit": commit, "tag": "edk2-stable202605-1-gabc",
            "release_date": "2026-06-01"}


def test_a_checkouts_base_is_its_own_commit(checkout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, head = checkout
    monkeypatch.setenv("OVMFGEN_CACHE", str(tmp_path / "cache"))
    commit = patch_git.checkout_commit(repo, _identity(head))
    assert commit == head
    base = patch_git.ensure_base(repo, "d" * 64, "edk2-stable202605-1-gabc", "2026-06-01", commit)
    assert base.commit == head
    assert _git(base.git_dir, "rev-parse", patch_git.BASE_REF).strip() == head
    # A second call answers from the marker; a git am onto a clone of the base starts from the checkout's commit.
    again = patch_git.ensure_base(repo, "d" * 64, "edk2-stable202605-1-gabc", "2026-06-01", commit)
    assert again == base
    patch_file = tmp_path / "0001-x.patch"
    (repo / "OvmfPkg" / "New.inc").write_bytes(b"new\r\n")
    _git(repo, "add", "-A", "OvmfPkg")
    _git(repo, "commit", "-q", "-m", "OvmfPkg: Add New.inc")
    patch_file.write_bytes(subprocess.run(["git", "-C", str(repo), "format-patch", "-1", "--stdout"], check=True,
                                          capture_output=True, env=patch_git.git_env(_WHO)).stdout)
    commits = patch_verify.apply_series(base, [patch_file], tmp_path / "clone", Ident("t", "t@example.com"))
    assert len(commits) == 1
    assert _git(tmp_path / "clone", "rev-parse", f"{commits[0]}^").strip() == head
    assert (tmp_path / "clone" / "OvmfPkg" / "New.inc").read_bytes() == b"new\r\n"


def test_a_snapshot_base_made_before_is_replaced_by_the_checkouts_commit(checkout, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    repo, head = checkout
    monkeypatch.setenv("OVMFGEN_CACHE", str(tmp_path / "cache"))
    snap = patch_git.ensure_base(repo, "e" * 64, "t", "2026-06-01")
    assert snap.commit != head
    base = patch_git.ensure_base(repo, "e" * 64, "t", "2026-06-01", head)
    assert base.commit == head and base.git_dir == snap.git_dir


def test_a_checkout_with_uncommitted_changes_is_refused(checkout) -> None:
    repo, head = checkout
    (repo / "OvmfPkg" / "OvmfXen.dsc").write_bytes(b"local edit\r\n")
    with pytest.raises(OvmfgenError) as exc:
        patch_git.checkout_commit(repo, _identity(head))
    assert str(exc.value) == (f"error: the edk2 checkout {repo} has uncommitted changes to tracked files: the "
                              f"series is based on its commit {head[:12]}; commit or stash them first")


def test_a_release_tree_has_no_checkout_commit(checkout) -> None:
    repo, head = checkout
    assert patch_git.checkout_commit(repo, _identity(head, source="tarball")) is None
    assert patch_git.checkout_commit(repo, {**_identity(head), "commit": None}) is None
