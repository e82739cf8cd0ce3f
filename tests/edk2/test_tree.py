"""ovmfgen.edk2.tree: the pin, locate()'s resolution order, the recorded identity and its digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from ovmfgen.edk2 import releases
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2 import install
from ovmfgen.edk2.tree import PIN, Edk2Tree
from ovmfgen.errors import OvmfgenError


def test_pin() -> None:
    assert PIN.tag == "edk2-stable202502"
    assert PIN.commit == "fbe0805b2091393406952e84724188f8c1941837"
    assert PIN.orig_tarball == f"{PIN.debian_source}_{PIN.upstream_version}.orig.tar.xz"
    assert len(PIN.orig_sha256) == 64 and PIN.orig_size == 29646336
    assert PIN.release_date == "2025-02-21"


def test_pin_matches_the_repository_submodule_gitlink() -> None:
    """The submodule pinned in git's index and PIN name the same commit."""
    repo = REPO
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-s", "edk2"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout:
        pytest.skip("not a git checkout")
    mode, sha, *_ = out.stdout.split()
    assert (mode, sha) == ("160000", PIN.commit)


def test_nothing_set_up_is_one_line_pointing_at_setup(isolated_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(OvmfgenError) as ei:
        edk2.locate(repo_root=tmp_path)
    assert str(ei.value) == "error: edk2 tree edk2-stable202502 not set up: run `invoke setup`"
    with pytest.raises(OvmfgenError) as ei:
        edk2.locate("edk2-stable202605", repo_root=tmp_path)
    assert str(ei.value) == ("error: edk2 tree edk2-stable202605 not set up: "
                             "run `invoke setup --edk2 edk2-stable202605`")


def test_known_releases_table() -> None:
    assert releases.KNOWN_TAGS == ("edk2-stable202502", "edk2-stable202605")
    assert releases.DEFAULT_TAG == "edk2-stable202502" and releases.NEWEST_TAG == "edk2-stable202605"
    new = releases.release("edk2-stable202605")
    assert new.commit == "b03a21a63e3bd001f52c527e5a57feddb53a690b" and new.release_date == "2026-05-08"
    assert new.tarball == "edk2-stable202605.tar.xz" and new.topdir == "edk2-stable202605" and new.debian is None
    assert new.sha256 == "c7e8d6e3d98affdc2d9c64b5eabcd53e75be108ab383826628c9f67baca7508c"
    old = releases.release(releases.DEFAULT_TAG)
    assert (old.tarball, old.sha256, old.topdir) == (PIN.orig_tarball, PIN.orig_sha256, PIN.orig_topdir)
    assert releases.by_commit(new.commit) == new and releases.by_commit("0" * 40) is None
    for r in releases.RELEASES.values():
        assert len(r.commit) == 40 and len(r.sha256) == 64 and r.size > 0
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.release_date)


def test_unknown_tag_is_one_line(isolated_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(OvmfgenError) as ei:
        edk2.locate("edk2-stable209912", repo_root=tmp_path)
    assert str(ei.value) == ("error: unknown edk2 tag 'edk2-stable209912' "
                             "(known: edk2-stable202502, edk2-stable202605)")


@pytest.fixture
def debian_tree(isolated_cache: Path, fake_downloads, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A complete cached 'Debian' tree made from generated tarballs (no network)."""
    downloads, record = fake_downloads()
    monkeypatch.setattr(install, "ensure_downloads", lambda force=False: (downloads, record))
    install.ensure_debian_tree()
    return edk2.debian_dir()


def test_locate_returns_the_recorded_identity(debian_tree: Path, tmp_path: Path) -> None:
    tree = edk2.locate(repo_root=tmp_path)
    recorded = json.loads((debian_tree / edk2.IDENTITY_FILE).read_text())
    assert tree.identity == recorded
    assert tree.root == debian_tree / "tree" and tree.basetools == debian_tree / "basetools/BaseTools"
    assert recorded["source"] == "debian" and recorded["tag"] == PIN.tag and recorded["commit"] == PIN.commit
    assert recorded["changes"] == list(edk2.CHANGES)
    assert recorded["debian"]["version"] == "2025.02-1"
    assert tree.tag == PIN.tag and tree.release_date == "2025-02-21"
    assert edk2.locate(releases.DEFAULT_TAG, repo_root=tmp_path) == tree
    assert set(recorded["debian"]["tarballs"]) == {PIN.orig_tarball, "edk2_2025.02-1.debian.tar.xz"}


def test_digest_is_sha256_of_canonical_json_and_stable(debian_tree: Path, tmp_path: Path) -> None:
    tree = edk2.locate(repo_root=tmp_path)
    canonical = json.dumps(tree.identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert tree.digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert edk2.locate(repo_root=tmp_path).digest == tree.digest
    # Key order does not matter; any value does.
    reordered = dict(reversed(list(tree.identity.items())))
    assert Edk2Tree(tree.root, tree.basetools, reordered).digest == tree.digest
    assert Edk2Tree(tree.root, tree.basetools, {**tree.identity, "commit": "0" * 40}).digest != tree.digest
    # The digest names the tree's identity, not where it lives.
    assert Edk2Tree(Path("/elsewhere"), Path("/bt"), tree.identity).digest == tree.digest


def test_locate_is_fast(debian_tree: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    for _ in range(20):
        edk2.locate(repo_root=tmp_path)
    assert (time.monotonic() - start) / 20 < 0.05


def test_locate_reports_a_missing_tree_with_a_stale_identity(debian_tree: Path, tmp_path: Path) -> None:
    shutil.rmtree(debian_tree / "tree")
    with pytest.raises(OvmfgenError, match="incomplete .*invoke setup"):
        edk2.locate(repo_root=tmp_path)


def test_env_override(isolated_cache: Path, fake_git_edk2, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = fake_git_edk2("dev-edk2")
    monkeypatch.setenv("OVMFGEN_EDK2", str(root))
    with pytest.raises(OvmfgenError, match=r"BaseTools not built for OVMFGEN_EDK2=.*invoke setup"):
        edk2.locate(repo_root=tmp_path)
    tree, did = install.ensure_edk2()
    assert did is True
    assert tree.root == root.resolve()
    assert tree.identity["source"] == "env"
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tree.identity["commit"] == head
    assert tree.basetools == edk2.local_dir(root) / "basetools/BaseTools"
    assert (tree.basetools / "Source/C/bin/GenFw").read_text().strip() == str(root.resolve())
    assert edk2.locate(repo_root=tmp_path) == tree
    # The env tree wins over an initialised submodule.
    (tmp_path / "repo/edk2/OvmfPkg").mkdir(parents=True)
    assert edk2.locate(repo_root=tmp_path / "repo").root == root.resolve()
    # A new commit in the checkout makes the recorded identity stale: say so, don't build under the old name.
    (root / "OvmfPkg/new.txt").write_text("x")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(root)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "next"], check=True)
    with pytest.raises(OvmfgenError, match=r"is at commit [0-9a-f]{40} but was set up at .*invoke setup"):
        edk2.locate(repo_root=tmp_path)
    tree2, did2 = install.ensure_edk2()
    assert did2 is True and tree2.identity["commit"] != head and tree2.digest != tree.digest


def test_env_override_must_be_an_edk2_tree(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("OVMFGEN_EDK2", str(tmp_path))
    with pytest.raises(OvmfgenError, match="is not an edk2 tree"):
        edk2.locate(repo_root=tmp_path)


def test_initialised_submodule_wins_over_the_debian_cache(
    debian_tree: Path, fake_git_edk2, tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    sub = fake_git_edk2("repo/edk2")
    assert edk2.submodule_initialised(repo)
    with pytest.raises(OvmfgenError, match="BaseTools not built for the edk2 submodule"):
        edk2.locate(repo_root=repo)
    install.ensure_local_tree(sub.resolve(), "submodule")
    tree = edk2.locate(repo_root=repo)
    assert tree.root == sub.resolve() and tree.identity["source"] == "submodule"
    # An empty submodule directory (a fresh clone) is not initialised: the Debian tree is used.
    assert not edk2.submodule_initialised(tmp_path / "other")
    assert edk2.locate(repo_root=tmp_path / "other").identity["source"] == "debian"


def test_tree_names_itself_without_a_tag() -> None:
    tree = Edk2Tree(Path("/t"), Path("/bt"), {"tag": None, "commit": "ab" * 20, "release_date": "2026-01-02"})
    assert tree.tag == "edk2-abababababab" and tree.release_date == "2026-01-02"
    assert Edk2Tree(Path("/t"), Path("/bt"), {}).tag == "edk2-unknown"
    with pytest.raises(OvmfgenError, match="no recorded release date .*invoke setup"):
        Edk2Tree(Path("/t"), Path("/bt"), {"tag": "x"}).release_date


def test_a_named_tag_uses_the_provided_tree_only_when_it_has_that_tag(
    debian_tree: Path, fake_git_edk2, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    root = fake_git_edk2("dev-edk2")
    monkeypatch.setenv("OVMFGEN_EDK2", str(root))
    # Not set up yet: the env tree is what the developer meant, so the error points at its setup.
    with pytest.raises(OvmfgenError, match="BaseTools not built for OVMFGEN_EDK2=.*`invoke setup --edk2 "
                                           "edk2-stable202605`"):
        edk2.locate("edk2-stable202605", repo_root=tmp_path)
    install.ensure_local_tree(root.resolve(), "env")
    env_tree = edk2.locate(repo_root=tmp_path)
    assert env_tree.identity["source"] == "env"
    # Set up under no tag: a named tag is served by the cache.
    assert edk2.locate(PIN.tag, repo_root=tmp_path).identity["source"] == "debian"
    with pytest.raises(OvmfgenError, match="edk2 tree edk2-stable202605 not set up"):
        edk2.locate("edk2-stable202605", repo_root=tmp_path)


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
