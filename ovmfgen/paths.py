"""Well-known places on disk: the checkout, the cache, and the ``Layout`` of generated output.

Roots are read when a ``Layout`` is made, never bound at import: ``$OVMFGEN_BUILD_DIR`` and
``$OVMFGEN_DIST_DIR`` move the workspaces and the published firmware (the checkout's ``build/`` and
``dist/`` by default), ``$OVMFGEN_CACHE`` the cache. Tests isolate through those variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The checkout ovmfgen runs from, and its data (part of the program, like its code): not roots to redirect.
REPO_ROOT = Path(__file__).resolve().parent.parent
PLATFORMS_DIR = REPO_ROOT / "platforms"
TEMPLATES_DIR = REPO_ROOT / "templates"
OVERRIDES_DIR = REPO_ROOT / "overrides"
# What a build publishes in its dist directory, besides the FD (named by the platform's FD: OVMF.fd).
ELF_NAME = "ovmf.elf"
LOG_NAME = "build.log"
MANIFEST_NAME = "manifest.json"
BUILD_ENV = "OVMFGEN_BUILD_DIR"
DIST_ENV = "OVMFGEN_DIST_DIR"


def _root(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value) if value else REPO_ROOT / default


def build_root() -> Path:
    """Where workspaces go: ``$OVMFGEN_BUILD_DIR``, else the checkout's ``build/``."""
    return _root(BUILD_ENV, "build")


def dist_root() -> Path:
    """Where published firmware goes: ``$OVMFGEN_DIST_DIR``, else the checkout's ``dist/``."""
    return _root(DIST_ENV, "dist")


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
    """Where platforms, overrides, workspaces and artifacts live (the checkout's dirs by default, the
    build and dist roots as the environment says when the Layout is made).

    One object for every stage: ``build`` renders from ``platforms_dir``, copies overrides from
    ``overrides_dir`` (and ``validate`` checks those same files), builds under ``build_root`` and
    publishes under ``dist_root``; ``boot`` finds the published firmware there.
    """

    platforms_dir: Path = PLATFORMS_DIR
    overrides_dir: Path = OVERRIDES_DIR
    build_root: Path = field(default_factory=build_root)
    dist_root: Path = field(default_factory=dist_root)

    def overrides_for(self, platform_name: str) -> Path:
        """``overrides/<platform>/``: files there replace edk2's file at the same path in the workspace."""
        return self.overrides_dir / platform_name

    def workspace_dir(self, platform_name: str, tree_part: str, suffix: str) -> Path:
        """``build/[<tree>/]<platform>[.<variant>]/``: a build's EDK2 workspace."""
        return self.build_root / tree_part / (f"{platform_name}.{suffix}" if suffix else platform_name)

    def dist_dir(self, platform_name: str, tree_part: str, target: str, suffix: str) -> Path:
        """``dist/<platform>/[<tree>/]<target>[-<variant>]/``: where a build publishes its artifacts."""
        return self.dist_root / platform_name / tree_part / (f"{target}-{suffix}" if suffix else target)

    def patches_dir(self, platform_name: str, tree_part: str) -> Path:
        """``dist/patches/<platform>/[<tree>/]``: where ``invoke patch`` writes a platform's upstream series."""
        return self.dist_root / "patches" / platform_name / tree_part

    @property
    def validated_dir(self) -> Path:
        """Where passing validations are remembered (one marker file per platform)."""
        return self.build_root / ".validated"
