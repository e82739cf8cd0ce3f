"""Stamps: the no-op fast path, decided from the raw inputs before anything is parsed.

A resolve reads the platform files, the templates, the overrides, the edk2 tree's identity and
ovmfgen's own code; a build plan adds the tool versions. ``raw_digest`` hashes all of those as they
lie on disk (file contents; for the tools, the binary's path, size and mtime) together with the
request. After the full path has decided something (a build published or found up to date, a render
validated and written), it records that decision in a stamp beside the digest. The next identical
call finds the same digest and answers from the stamp, without loading YAML, jinja2 or edk2toollib;
any change to any input misses and takes the full path again, which writes a new stamp.

What is not cheap to digest takes the full path every time: a platform given as a file path, and a
tree from ``$OVMFGEN_EDK2`` (its identity comes from git).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ovmfgen import paths
from ovmfgen.fsutil import atomic_write_bytes

STAMP_SCHEMA = 1
# The tools whose versions enter a build's input hash (builder/plan.py's tool_versions).
TOOLS = ("gcc", "ld", "nasm", "iasl")
PACKAGE_DIR = Path(__file__).resolve().parent


def _files(root: Path, pattern: str = "*") -> Iterable[Path]:
    if not root.is_dir():
        return ()
    return sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)


def raw_digest(layout: paths.Layout, platform: str, key: Mapping[str, object]) -> str | None:
    """sha256 over everything a resolve and a plan of ``platform`` in ``layout`` read, and ``key``;
    None when some input cannot be digested cheaply (see the module doc)."""
    if "/" in platform or platform.endswith(".yaml") or os.environ.get("OVMFGEN_EDK2"):
        return None
    h = hashlib.sha256()
    h.update(json.dumps({"schema": STAMP_SCHEMA, "platform": platform, **key}, sort_keys=True).encode())
    roots = (("code", PACKAGE_DIR, "*.py"), ("templates", paths.TEMPLATES_DIR, "*"),
             ("platforms", layout.platforms_dir, "*.yaml"), ("overrides", layout.overrides_for(platform), "*"))
    for label, root, pattern in roots:
        h.update(f"\0{label}:{root}\0".encode())
        for path in _files(root, pattern):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    # Which tree a tag locates: the cache's identities, the environment that places the cache, the submodule.
    cache = paths.cache_dir()
    for ident in sorted((cache / "edk2").glob("*/identity.json")):
        h.update(str(ident).encode() + b"\0" + ident.read_bytes() + b"\0")
    for name in ("OVMFGEN_CACHE", "XDG_CACHE_HOME", "PATH"):
        h.update(f"{name}={os.environ.get(name, '')}\0".encode())
    submodule = paths.REPO_ROOT / "edk2" / ".git"
    h.update(repr(_stat(submodule)).encode())
    for tool in TOOLS:
        found = shutil.which(tool)
        h.update(f"{tool}={found}:{_stat(Path(found).resolve()) if found else None}\0".encode())
    return h.hexdigest()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def stamps_dir(layout: paths.Layout) -> Path:
    """Where the stamps of ``layout``'s builds and renders are kept (deleting it only costs the fast path)."""
    return layout.build_root / ".stamps"


def _stamp_path(layout: paths.Layout, kind: str, platform: str, key: Mapping[str, object]) -> Path:
    name = hashlib.sha256(json.dumps([kind, platform, key, str(layout)], sort_keys=True).encode()).hexdigest()
    return stamps_dir(layout) / f"{kind}-{name[:20]}.json"


def read_stamp(layout: paths.Layout, kind: str, platform: str, key: Mapping[str, object]) -> dict | None:
    """What the full path recorded for this call, if every raw input is as it was then; else None."""
    digest = raw_digest(layout, platform, key)
    if digest is None:
        return None
    try:
        data = json.loads(_stamp_path(layout, kind, platform, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("inputs") != digest or not isinstance(data.get("decided"), dict):
        return None
    return data["decided"]


def write_stamp(layout: paths.Layout, kind: str, platform: str, key: Mapping[str, object],
                decided: Mapping[str, object], digest: str | None) -> None:
    """Record ``decided`` for this call under ``digest`` (taken with ``raw_digest`` before the full path
    read anything, so an input edited meanwhile makes the stamp miss). A stamp that cannot be written
    only costs the fast path."""
    if digest is None:
        return
    try:
        atomic_write_bytes(_stamp_path(layout, kind, platform, key),
                           (json.dumps({"inputs": digest, "decided": dict(decided)}, indent=1) + "\n").encode())
    except OSError:
        pass
