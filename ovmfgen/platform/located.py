"""A platform loaded for an edk2 tree, with the platform file's own errors first."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ovmfgen.edk2.releases import KNOWN_TAGS
from ovmfgen.edk2.tree import Edk2Tree, locate
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import PLATFORMS_DIR
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.model import Platform


def load_for_tree(name_or_path: str | Path, platforms_dir: Path = PLATFORMS_DIR, edk2: str | None = None,
                  feature_overrides: Mapping[str, str] | None = None) -> tuple[Edk2Tree, Platform]:
    """The tree of ``edk2`` (None: the default tree) and the platform loaded for it.

    When the tree cannot be located (not set up yet), the platform file is still read first, for the
    requested release, so a broken file is reported at its own line instead of being hidden behind
    "run invoke setup"; the tree's error follows when the file is fine.
    """
    try:
        tree = locate(edk2)
    except OvmfgenError:
        if edk2 is None or edk2 in KNOWN_TAGS:
            load_platform(name_or_path, platforms_dir, feature_overrides=feature_overrides, edk2=edk2)
        raise
    return tree, load_platform(name_or_path, platforms_dir, feature_overrides=feature_overrides, edk2=tree.tag)
