"""``invoke render``: load a platform, render it once, validate those files, then write them.

Nothing is written when loading or validation fails (both files are rendered and checked first).
When no input changed since the last render that validated and wrote them, and the files are still
as written, the stamp answers (ovmfgen/stamp.py) without loading anything.
"""

from __future__ import annotations

from pathlib import Path

from ovmfgen.errors import display_path
from ovmfgen.fsutil import sha256_file
from ovmfgen.paths import Layout
from ovmfgen.stamp import raw_digest, read_stamp, write_stamp
from ovmfgen.ui import say

STAMP_KIND = "render"


def _unchanged(decided: dict) -> list[Path] | None:
    """The files a stamped render wrote, when each is still as written; else None."""
    files = decided.get("files")
    if not isinstance(files, dict) or not files:
        return None
    try:
        if any(sha256_file(Path(p)) != sha for p, sha in files.items()):
            return None
    except OSError:
        return None
    return [Path(p) for p in files]


def render_command(platform_name: str, output: str | None = None, edk2: str | None = None,
                   layout: Layout | None = None) -> None:
    """``invoke render``: load, render, validate and write XenOvmf.dsc/.fdf (nothing written on error).

    ``edk2`` (a tag; None: the default tree) is the tree the platform is rendered and checked for;
    another tree than the default writes to that tree's workspace (``build/<tag>/<platform>/``).
    """
    lay = layout or Layout()
    key = {"edk2": edk2, "output": str(Path(output).resolve()) if output else None}
    decided = read_stamp(lay, STAMP_KIND, platform_name, key)
    unchanged = _unchanged(decided) if decided else None
    if unchanged is not None:
        for path in unchanged:
            say(f"{display_path(path)} (unchanged)")
        return
    # Function-local: the stamped path above needs none of this.
    from ovmfgen.platform.render import write_outputs
    from ovmfgen.platform.resolve import resolve
    from ovmfgen.platform.validate import validate
    from ovmfgen.request import make_request

    digest = raw_digest(lay, platform_name, key)   # before anything is read: an edit meanwhile misses
    r = resolve(make_request(platform_name, edk2=edk2), lay)
    validate(r)
    # By default into the default build's workspace, where its package's files go.
    out_dir = Path(output) if output else r.workspace / r.platform.package_dir
    written = write_outputs(r.rendered, out_dir)
    files = {}
    for name in r.rendered.files():
        path = out_dir / name
        state = "written" if path in written else "unchanged"
        say(f"{display_path(path)} ({state})")
        files[str(path.resolve())] = sha256_file(path)
    write_stamp(lay, STAMP_KIND, platform_name, key, {"files": files}, digest)
