"""ovmfgen.edk2.releases: the releases ovmfgen knows, an unknown tag in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ovmfgen.edk2 import releases
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.tree import PIN
from ovmfgen.errors import OvmfgenError


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
