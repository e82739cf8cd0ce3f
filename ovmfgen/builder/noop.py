"""The no-op build: the published manifest read and checked, and a build's stamp (ovmfgen/stamp.py)
written by the full path and answered by ``entry``'s fast path.

Nothing heavy is imported here (no YAML, jinja2 or edk2toollib): a no-op build costs little more
than reading the files the stamp digests and hashing the published outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ovmfgen.errors import display_path
from ovmfgen.fsutil import sha256_file
from ovmfgen.paths import MANIFEST_NAME, Layout
from ovmfgen.request import Request
from ovmfgen.stamp import raw_digest, read_stamp, write_stamp
from ovmfgen.ui import say

STAMP_KIND = "build"


def read_manifest(dist: Path) -> dict | None:
    """The manifest published in ``dist`` (None when absent or unreadable)."""
    import json

    try:
        data = json.loads((dist / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def outputs_intact(dist: Path, manifest: Mapping[str, object]) -> bool:
    """True when every output the manifest lists is in ``dist`` with its recorded size and sha256."""
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return False
    for name, rec in outputs.items():
        path = dist / name
        try:
            if not isinstance(rec, dict) or path.stat().st_size != rec.get("size"):
                return False
            if sha256_file(path) != rec.get("sha256"):
                return False
        except OSError:
            return False
    return True


def output_stats(dist: Path, manifest: Mapping[str, object]) -> dict[str, list[int]] | None:
    """Each listed output's (size, mtime, inode) as it lies in ``dist`` now; None when one is missing."""
    out: dict[str, list[int]] = {}
    for name in manifest.get("outputs") or {}:  # type: ignore[union-attr]
        try:
            st = (dist / name).stat()
        except OSError:
            return None
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def stamp_key(request: Request) -> dict[str, object]:
    """What selects the build's outputs (jobs and ccache do not; --force and --clean skip the stamp)."""
    return {"target": request.target, "fd_size": request.fd_size, "defines": list(request.defines),
            "features": list(request.features), "version_string": request.version_string,
            "release_date": request.release_date, "edk2": request.edk2}


def build_digest(request: Request, layout: Layout) -> str | None:
    """The raw-input digest a build of ``request`` stamps (None: this build has no fast path)."""
    if request.force or request.clean:
        return None
    return raw_digest(layout, request.platform, stamp_key(request))


def stamped_noop(request: Request, layout: Layout) -> Path | None:
    """The dist directory when the stamp says nothing changed and the outputs are intact; else None."""
    if request.force or request.clean:
        return None
    decided = read_stamp(layout, STAMP_KIND, request.platform, stamp_key(request))
    if not decided:
        return None
    dist, input_hash = Path(str(decided.get("dist"))), str(decided.get("input_hash"))
    manifest = read_manifest(dist)
    if not manifest or manifest.get("input_hash") != input_hash:
        return None
    # Outputs untouched since the full path hashed them (same size, mtime and inode) need no hashing again.
    if output_stats(dist, manifest) != decided.get("outputs") and not outputs_intact(dist, manifest):
        return None
    say(f"{decided.get('label')}: up to date, nothing to do ({display_path(dist)}, input hash {input_hash[:12]})")
    return dist


def record_build(request: Request, layout: Layout, digest: str | None, dist: Path, input_hash: str,
                 label: str) -> None:
    """Stamp what the full path decided for ``request`` (``digest`` taken before it read anything)."""
    manifest = read_manifest(dist) or {}
    write_stamp(layout, STAMP_KIND, request.platform, stamp_key(request),
                {"dist": str(dist), "input_hash": input_hash, "label": label,
                 "outputs": output_stats(dist, manifest)}, digest)
