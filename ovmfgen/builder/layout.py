"""Where a build goes: its workspace and dist directories inside a ``paths.Layout``, and the variant names.

Where things go
---------------
* Workspace (EDK2's WORKSPACE): ``build/<platform>/`` for the platform's default FD size and
  features, ``build/<platform>.<variant>/`` otherwise. It holds the rendered ``<package>/<name>.dsc``
  and ``.fdf``, copies of the platform's override files (which shadow the edk2 tree's files at the
  same path: the edk2 tree is on PACKAGES_PATH and never written to), ``Conf/`` (from BaseTools'
  templates) and ``Build/``. Separate workspaces per variant keep EDK2's incremental build correct
  and cheap when switching between variants.
* Artifacts: ``dist/<platform>/<target>[-<variant>]/``: ``OVMF.fd`` (the raw FD), ``ovmf.elf`` (the
  PVH ELF), ``build.log`` (stuart's console output) and ``manifest.json``.

The variant rule (``dist_dir``/``variant_suffix``)
-------------------------------------------------
The default FD size with the default features has no suffix: ``dist/xen-pvh/DEBUG/``. Otherwise the
suffix joins, in this order and with ``-``:

1. the FD size when it is not the platform's default: ``4M``;
2. each feature set to a value other than the platform's default, by feature name, as its tag:
   ``hvcon`` (debug_output=hypervisor-console), ``debugcon``, ``acpitimer``, ``lapictimer``,
   ``nonet``/``net``, ``noshell``/``shell``; any other as ``<name>-<value>`` (non-alphanumerics
   dropped);
3. ``D`` and the first 8 hex digits of the sha256 of the sorted extra ``-D NAME=VALUE`` pairs
   (beyond the FD size), when there are any.

So ``--fd-size 4M`` gives ``dist/xen-pvh/DEBUG-4M/``, ``--feature debug_output=hypervisor-console``
gives ``dist/xen-pvh/DEBUG-hvcon/`` and both give ``dist/xen-pvh/DEBUG-4M-hvcon/``.

Trees
-----
The default edk2 tree (no ``--edk2``, or ``--edk2 edk2-stable202502``) keeps the paths above. Another
tree adds its tag: ``dist/<platform>/<tag>/<target>[-<variant>]/`` and ``build/<tag>/<platform>[.<variant>]/``,
e.g. ``dist/xen-pvh/edk2-stable202605/DEBUG/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from ovmfgen.edk2.conventions import FD_SIZE_DEFINE, fd_size_label, parse_fd_size, parse_target
from ovmfgen.edk2.releases import path_part
from ovmfgen.paths import Layout
from ovmfgen.platform.load import load_platform

ELF_NAME = "ovmf.elf"
LOG_NAME = "build.log"

FEATURE_TAGS = {
    ("debug_output", "hypervisor-console"): "hvcon",
    ("debug_output", "debugcon"): "debugcon",
    ("timer", "acpi"): "acpitimer",
    ("timer", "lapic"): "lapictimer",
    ("network", "false"): "nonet",
    ("network", "true"): "net",
    ("shell", "false"): "noshell",
    ("shell", "true"): "shell",
}


def _default_features(platform: str, platforms_dir: Path) -> tuple[tuple[str, str], ...]:
    """The platform's features as its YAML sets them (cached while the file is unchanged)."""
    try:
        stamp = (platforms_dir / f"{platform}.yaml").stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _default_features_cached(platform, platforms_dir, stamp)


@lru_cache(maxsize=16)
def _default_features_cached(platform: str, platforms_dir: Path, _stamp: int) -> tuple[tuple[str, str], ...]:
    return load_platform(platform, platforms_dir).default_features


def _feature_tag(name: str, value: str) -> str:
    tag = FEATURE_TAGS.get((name, value))
    if tag:
        return tag
    return re.sub(r"[^A-Za-z0-9]", "", name) + "-" + re.sub(r"[^A-Za-z0-9]", "", value)


def variant_suffix(default_features: Mapping[str, str], fd_size: int | None = None,
                   features: Mapping[str, str] | None = None,
                   defines: Mapping[str, str] | None = None) -> str:
    """The variant part of the dist/workspace names ("" for the default build; see the module doc)."""
    parts: list[str] = []
    default_fd = int(default_features.get("fd_size", "2"))
    if fd_size is not None and fd_size != default_fd:
        parts.append(fd_size_label(fd_size))
    for name, value in sorted((features or {}).items()):
        if name == "fd_size" or default_features.get(name) == value:
            continue
        parts.append(_feature_tag(name, value))
    extra = sorted((k, v) for k, v in (defines or {}).items() if not FD_SIZE_DEFINE.match(k))
    if extra:
        text = " ".join(f"{k}={v}" for k, v in extra)
        parts.append("D" + hashlib.sha256(text.encode()).hexdigest()[:8])
    return "-".join(parts)


def dist_dir(platform: str, target: str = "DEBUG", fd_size: str | int | None = None,
             features: Mapping[str, str] | None = None, defines: Mapping[str, str] | None = None,
             layout: Layout | None = None, edk2: str | None = None) -> Path:
    """``dist/<platform>/[<tag>/]<target>[-<variant>]/``: where ``build`` publishes that build's artifacts.

    ``fd_size`` (``"4M"``, 4, ...) and ``features`` (feature overrides, e.g.
    ``{"debug_output": "hypervisor-console"}``) add a suffix only where they differ from the
    platform's defaults, e.g. ``dist/xen-pvh/DEBUG-hvcon``; ``edk2`` (a tag other than the default
    tree's) adds its directory, e.g. ``dist/xen-pvh/edk2-stable202605/DEBUG``.
    """
    lay = layout or Layout()
    target = parse_target(target)
    size = parse_fd_size(fd_size)
    suffix = ""
    if size is not None or features or defines:
        suffix = variant_suffix(dict(_default_features(platform, lay.platforms_dir)), size, features, defines)
    return lay.dist_root / platform / path_part(edk2) / (f"{target}-{suffix}" if suffix else target)


def workspace_dir(platform: str, suffix: str, layout: Layout | None = None, edk2: str | None = None) -> Path:
    """``build/[<tag>/]<platform>/`` for the default variant, ``build/[<tag>/]<platform>.<suffix>/`` otherwise."""
    lay = layout or Layout()
    return lay.build_root / path_part(edk2) / (f"{platform}.{suffix}" if suffix else platform)
