"""ovmfgen.edk2.tree: the pin, locate()'s resolution order, the recorded identity and its digest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
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


def test_edk2_path_argument_is_a_checkout(isolated_cache: Path, tmp_path: Path, monkeypatch) -> None:
    """``--edk2 PATH`` names a checkout (as OVMFGEN_EDK2 does); a tag stays a tag; a path to no edk2 tree
    is one line."""
    monkeypatch.setenv("OVMFGEN_EDK2", "unset")   # recorded, so the test's own setting is undone after it
    monkeypatch.delenv("OVMFGEN_EDK2")
    assert edk2.checkout_argument("edk2-stable202605") == "edk2-stable202605"
    assert edk2.checkout_argument(None) is None
    (tmp_path / "co" / "OvmfPkg").mkdir(parents=True)
    assert edk2.checkout_argument(str(tmp_path / "co")) is None
    assert os.environ["OVMFGEN_EDK2"] == str((tmp_path / "co").resolve())
    with pytest.raises(OvmfgenError) as ei:
        edk2.checkout_argument(str(tmp_path / "nothing"))
    assert str(ei.value) == (f"error: --edk2 {tmp_path / 'nothing'}: not an edk2 tree (no OvmfPkg/); --edk2 takes "
                             "a release tag or a checkout's path")
