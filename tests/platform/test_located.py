"""A platform loaded for a tree: the file's own errors come before a tree that is not set up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import PLATFORMS_DIR
from ovmfgen.platform.located import load_for_tree


@pytest.fixture
def platforms(tmp_path: Path) -> Path:
    shutil.copy(PLATFORMS_DIR / "xen-pvh.yaml", tmp_path / "xen-pvh.yaml")
    return tmp_path


@pytest.mark.parametrize("edk2", [None, "edk2-stable202605"])
def test_a_broken_file_is_reported_before_the_missing_tree(platforms: Path, edk2: str | None):
    # The isolated cache holds no tree, so locating fails; the broken line must still be what is reported.
    path = platforms / "xen-pvh.yaml"
    path.write_text(path.read_text().replace("description: >-", "description: [", 1))
    with pytest.raises(OvmfgenError) as err:
        load_for_tree("xen-pvh", platforms, edk2)
    assert err.value.location is not None and err.value.location.path.endswith("xen-pvh.yaml")


def test_a_good_file_without_its_tree_reports_the_tree(platforms: Path):
    with pytest.raises(OvmfgenError, match="invoke setup"):
        load_for_tree("xen-pvh", platforms, "edk2-stable202605")


def test_an_unknown_tag_is_reported_as_such(platforms: Path):
    with pytest.raises(OvmfgenError, match="unknown edk2 tag 'edk2-stable209912'"):
        load_for_tree("xen-pvh", platforms, "edk2-stable209912")
