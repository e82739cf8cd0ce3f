"""Fixtures the edk2 tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.edk2 import install
from ovmfgen.edk2 import tree as edk2


@pytest.fixture
def debian_tree(isolated_cache: Path, fake_downloads, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A complete cached 'Debian' tree made from generated tarballs (no network)."""
    downloads, record = fake_downloads()
    monkeypatch.setattr(install, "ensure_downloads", lambda force=False: (downloads, record))
    install.ensure_debian_tree()
    return edk2.debian_dir()
