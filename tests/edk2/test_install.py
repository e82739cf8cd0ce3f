"""ovmfgen.edk2.install (and fetch): a release tree set up from its tarball, checked, named; checkouts adopted;
bad input in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from ovmfgen.edk2 import releases
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2 import install
from ovmfgen.edk2.tree import PIN
from ovmfgen.errors import OvmfgenError


# ---- named, verified trees: release tarballs, stated tags, git describe


NEW = "edk2-stable202605"


ASSEMBLY = b"edk2-stable202605 (commit b03a21a), assembled offline.\nIdentical to the upstream tag except:\n"


@pytest.fixture
def tarball_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$OVMFGEN_EDK2_TARBALLS holding a small generated edk2-stable202605.tar.xz (pin adjusted to it)."""
    from helpers import fake_edk2_files, make_tar_xz

    d = tmp_path / "tarballs"
    d.mkdir()
    rel = releases.release(NEW)
    files = {f"{rel.topdir}/{k}": v for k, v in fake_edk2_files().items()}
    files[f"{rel.topdir}/OFFLINE-ASSEMBLY.txt"] = ASSEMBLY
    tb = make_tar_xz(d / rel.tarball, files)
    monkeypatch.setitem(releases.RELEASES, NEW, dataclasses.replace(
        rel, sha256=hashlib.sha256(tb.read_bytes()).hexdigest(), size=tb.stat().st_size))
    monkeypatch.setenv("OVMFGEN_EDK2_TARBALLS", str(d))
    return d


def test_release_tarball_sets_up_a_second_tree_beside_the_default(
    debian_tree: Path, tarball_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edk2.paths, "REPO_ROOT", tmp_path)  # no submodule
    tree, did = install.ensure_edk2(NEW)
    assert did is True
    directory = edk2.tree_dir(NEW)
    assert tree.root == directory / "tree" and tree.basetools == directory / "basetools/BaseTools"
    assert tree.tag == NEW and tree.release_date == "2026-05-08"
    ident = tree.identity
    assert ident["source"] == "tarball" and ident["commit"] == releases.release(NEW).commit
    assert ident["tarball"]["name"] == "edk2-stable202605.tar.xz"
    assert ident["tarball"]["sha256"] == releases.release(NEW).sha256
    assert ident["assembly"] == {"file": "OFFLINE-ASSEMBLY.txt", "sha256": hashlib.sha256(ASSEMBLY).hexdigest(),
                                 "first_line": "edk2-stable202605 (commit b03a21a), assembled offline."}
    assert json.loads((directory / edk2.IDENTITY_FILE).read_text()) == ident
    # Side by side: the default tree is untouched, each tree has its own BaseTools.
    assert edk2.locate(repo_root=tmp_path).tag == PIN.tag
    assert edk2.locate(NEW, repo_root=tmp_path) == tree
    assert edk2.locate(repo_root=tmp_path).basetools != tree.basetools
    # Idempotent.
    assert install.ensure_edk2(NEW) == (tree, False)


def test_tarball_whose_sha256_does_not_match_is_one_line_and_installs_nothing(
    isolated_cache: Path, tarball_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edk2.paths, "REPO_ROOT", tmp_path)
    rel = releases.release(NEW)
    monkeypatch.setitem(releases.RELEASES, NEW, dataclasses.replace(rel, sha256="0" * 64))
    with pytest.raises(OvmfgenError) as ei:
        install.ensure_edk2(NEW)
    msg = str(ei.value)
    assert msg == (f"error: checksum mismatch for edk2-stable202605.tar.xz (pinned for {NEW}): "
                   f"sha256 {rel.sha256} ({rel.size} bytes), expected {'0' * 64} ({rel.size} bytes)")
    directory = edk2.tree_dir(NEW)
    assert not (directory / "tree").exists() and not (directory / edk2.IDENTITY_FILE).exists()


def test_a_release_without_a_source_says_where_to_put_its_tarball(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edk2.paths, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("OVMFGEN_EDK2_TARBALLS", raising=False)
    with pytest.raises(OvmfgenError) as ei:
        install.ensure_edk2(NEW)
    assert str(ei.value).startswith(
        f"error: no source for {NEW}: set OVMFGEN_EDK2_TARBALLS to a directory holding edk2-stable202605.tar.xz "
        f"(sha256 {releases.release(NEW).sha256})")
    monkeypatch.setenv("OVMFGEN_EDK2_TARBALLS", str(tmp_path / "empty"))
    with pytest.raises(OvmfgenError, match="no source for"):
        install.ensure_edk2(NEW)


def test_setup_of_an_unknown_tag_is_one_line(isolated_cache: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edk2.paths, "REPO_ROOT", tmp_path)
    with pytest.raises(OvmfgenError) as ei:
        install.ensure_edk2("edk2-stable209912")
    assert str(ei.value) == ("error: unknown edk2 tag 'edk2-stable209912' "
                             "(known: edk2-stable202502, edk2-stable202605)")
    assert not edk2.edk2_cache().joinpath("edk2-stable209912").exists()


def test_a_checkout_without_ovmfpkg_is_one_line(isolated_cache: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "not-edk2/MdePkg").mkdir(parents=True)
    monkeypatch.setenv("OVMFGEN_EDK2", str(tmp_path / "not-edk2"))
    with pytest.raises(OvmfgenError) as ei:
        install.ensure_edk2(NEW)
    assert str(ei.value) == f"error: {tmp_path / 'not-edk2'} is not an edk2 tree (no OvmfPkg/)"


def _git(root: Path, *args: str) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(root)]
    return subprocess.run([*git, *args], check=True, capture_output=True, text=True).stdout.strip()


def test_a_checkout_is_named_by_the_stated_tag_else_git_describe_else_its_commit(
    isolated_cache: Path, fake_git_edk2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = fake_git_edk2("dev-edk2").resolve()
    monkeypatch.setenv("OVMFGEN_EDK2", str(root))
    head = _git(root, "rev-parse", "HEAD")
    date = _git(root, "log", "-1", "--format=%cs")
    # No tags at all: named after the commit, dated by it.
    tree, _ = install.ensure_edk2()
    assert (tree.identity["tag"], tree.identity["tag_from"]) == (None, None)
    assert tree.tag == f"edk2-{head[:12]}" and tree.release_date == date
    # git describe.
    _git(root, "tag", "edk2-stable209901")
    tree, did = install.ensure_edk2()
    assert did is True and (tree.tag, tree.identity["tag_from"]) == ("edk2-stable209901", "git describe")
    assert tree.release_date == date
    # The tag the developer states wins; a known one brings its release date. BaseTools are kept.
    marker = tree.basetools.parent / edk2.BASETOOLS_MARKER
    built = marker.stat().st_mtime_ns
    tree, did = install.ensure_edk2(NEW)
    assert did is True and (tree.tag, tree.identity["tag_from"]) == (NEW, "stated")
    assert tree.release_date == "2026-05-08" and tree.identity["commit"] == head
    assert marker.stat().st_mtime_ns == built
    assert edk2.locate(NEW, repo_root=tmp_path) == tree and edk2.locate(repo_root=tmp_path) == tree
    # The default release is not this checkout: the cache's tree serves it (not set up here).
    with pytest.raises(OvmfgenError, match=f"edk2 tree {PIN.tag} not set up"):
        edk2.locate(PIN.tag, repo_root=tmp_path)


def test_a_plain_directory_needs_a_stated_known_tag(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helpers import fake_edk2_files, write_tree

    root = write_tree(tmp_path / "plain", fake_edk2_files())
    monkeypatch.setenv("OVMFGEN_EDK2", str(root))
    with pytest.raises(OvmfgenError) as ei:
        install.ensure_edk2()
    assert str(ei.value) == (f"error: {root} is not a git checkout: say which edk2 it is with `--edk2 TAG` "
                             f"(known: edk2-stable202502, edk2-stable202605)")
    with pytest.raises(OvmfgenError, match="cannot tell the release date .*my-edk2 is not a known release"):
        install.ensure_edk2("my-edk2")
    (root / "OFFLINE-ASSEMBLY.txt").write_bytes(ASSEMBLY)
    tree, _ = install.ensure_edk2(NEW)
    assert tree.tag == NEW and tree.release_date == "2026-05-08" and tree.identity["commit"] is None
    assert tree.identity["assembly"]["first_line"].startswith("edk2-stable202605")


def test_setup_cli_errors_are_one_line_and_exit_1(isolated_cache: Path, tmp_path: Path) -> None:
    """The real `python -m ovmfgen setup --edk2 ...` in a child: no traceback, one line, exit 1."""
    repo = REPO
    env = {k: v for k, v in os.environ.items() if k not in ("OVMFGEN_EDK2", "OVMFGEN_EDK2_TARBALLS")}
    env.update(OVMFGEN_CACHE=str(isolated_cache), PYTHONPATH=str(repo))
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "setup", "--edk2", "edk2-stable209912"],
                          cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("error: unknown edk2 tag 'edk2-stable209912' "
                                                    "(known: edk2-stable202502, edk2-stable202605)")
    assert "Traceback" not in proc.stderr
