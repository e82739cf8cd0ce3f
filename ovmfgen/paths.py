"""Well-known places on disk: the repository, the cache, generated output."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Layout:
    """Where platforms, overrides, workspaces and artifacts live (the repository's dirs by default).

    One object for every stage: ``build`` renders from ``platforms_dir``, copies overrides from
    ``overrides_dir`` (and ``validate`` checks those same files), builds under ``build_root`` and
    publishes under ``dist_root``; ``boot`` finds the published firmware there.
    """

    platforms_dir: Path = PLATFORMS_DIR
    overrides_dir: Path = OVERRIDES_DIR
    build_root: Path = BUILD_DIR
    dist_root: Path = DIST_DIR

    def overrides_for(self, platform_name: str) -> Path:
        """``overrides/<platform>/``: files there replace edk2's file at the same path in the workspace."""
        return self.overrides_dir / platform_name

    @property
    def validated_dir(self) -> Path:
        """Where passing validations are remembered (one marker file per platform)."""
        return self.build_root / ".validated"
