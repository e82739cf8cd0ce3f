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


# --- the releases file: data, read with located errors ---------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
INVALID = sorted((REPO / "tests" / "invalid-releases").glob("*.yaml"))


def _expected(case: Path) -> str:
    first = case.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{case.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_the_shipped_releases_are_the_data_file() -> None:
    known = releases.load_releases(releases.RELEASES_FILE)
    assert known == releases.known() and tuple(known.releases) == releases.KNOWN_TAGS
    assert known.default == releases.DEFAULT_TAG
    assert releases.RELEASES_FILE.name == "releases.yaml" and releases.RELEASES_FILE.parent.name == "edk2"


def test_a_release_is_a_few_lines_of_data(tmp_path: Path) -> None:
    """A third release is one more entry: known, ordered, and looked up by commit, with no code change."""
    text = releases.RELEASES_FILE.read_text(encoding="utf-8") + (
        "  - tag: edk2-stable202608\n"
        "    commit: " + "a" * 40 + "\n"
        "    date: 2026-08-21\n"
        "    tarball: {name: edk2-stable202608.tar.xz, sha256: " + "b" * 64 + ", size: 7, topdir: edk2-stable202608}\n")
    path = tmp_path / "releases.yaml"
    path.write_text(text, encoding="utf-8")
    known = releases.load_releases(path)
    assert tuple(known.releases) == ("edk2-stable202502", "edk2-stable202605", "edk2-stable202608")
    new = known.releases["edk2-stable202608"]
    assert (new.release_date, new.size, new.topdir, new.debian) == ("2026-08-21", 7, "edk2-stable202608", None)


def test_enough_invalid_releases_cases() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize("case", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_releases_file(case: Path) -> None:
    with pytest.raises(OvmfgenError) as info:
        releases.load_releases(case)
    assert str(info.value) == _expected(case)


# --- where a tree stands: describe strings ordered against releases --------------------------------------

def test_position_of_release_tags_and_describe_strings() -> None:
    assert releases.position("edk2-stable202605") == releases.Position(202605, 0)
    co = releases.position("edk2-stable202605-3-g5ccd4da")
    assert co == releases.Position(202605, 3) and co.release_tag == "edk2-stable202605" and not co.is_release
    assert releases.position("edk2-stable202605-568-g0123456789ab-dirty") == releases.Position(202605, 568)
    for bad in ("edk2-stable202613", "edk2-stable2026", "vUDK2018", "edk2-stable202605-3", "edk2-0123456789ab",
                "edk2-stable202605-x-gabc", ""):
        assert releases.position(bad) is None, bad


def test_a_checkout_is_ordered_between_its_release_and_the_next() -> None:
    p = releases.position
    assert p("edk2-stable202502") < p("edk2-stable202502-1-gabcd") < p("edk2-stable202502-900-gabcd") \
        < p("edk2-stable202605") < p("edk2-stable202605-3-g5ccd4da") < p("edk2-stable202608")


def test_path_part_is_one_safe_component() -> None:
    assert releases.path_part(None) == "" and releases.path_part(releases.DEFAULT_TAG) == ""
    assert releases.path_part("edk2-stable202605-3-g5ccd4da") == "edk2-stable202605-3-g5ccd4da"
    assert releases.path_part("feature/x y") == "feature_x_y"
    assert releases.path_part("..") == "_.."
