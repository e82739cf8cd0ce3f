"""Well-known places on disk: the repository, the cache, generated output."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PLATFORMS_DIR = REPO_ROOT / "platforms"
TEMPLATES_DIR = REPO_ROOT / "templates"
OVERRIDES_DIR = REPO_ROOT / "overrides"
BUILD_DIR = REPO_ROOT / "build"
DIST_DIR = REPO_ROOT / "dist"


def cache_dir() -> Path:
    """ovmfgen's cache ($OVMFGEN_CACHE, else $XDG_CACHE_HOME/ovmfgen, else ~/.cache/ovmfgen).

    Safe to delete: everything in it is rebuilt on demand.
    """
    explicit = os.environ.get("OVMFGEN_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "ovmfgen"
