"""Fixtures the patch tests share: xen-pvh loaded, the set-up edk2 tree."""

from __future__ import annotations

import pytest

from ovmfgen.edk2 import tree as edk2
from ovmfgen.platform.load import load_platform


@pytest.fixture(scope="module")
def platform():
    return load_platform("xen-pvh")


@pytest.fixture(scope="module")
def tree() -> edk2.Edk2Tree:
    """The edk2 tree `invoke setup` prepared (the series reads Maintainers.txt, PatchCheck.py, ... from it)."""
    return edk2.locate()
