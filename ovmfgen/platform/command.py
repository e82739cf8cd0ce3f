"""``invoke render``: load a platform, render it once, validate those files, then write them.

Nothing is written when loading or validation fails (both files are rendered and checked first).
"""

from __future__ import annotations

from pathlib import Path

from ovmfgen.errors import display_path
from ovmfgen.paths import Layout
from ovmfgen.platform.render import write_outputs
from ovmfgen.platform.resolve import resolve
from ovmfgen.platform.validate import validate
from ovmfgen.request import make_request
from ovmfgen.ui import say


def render_command(platform_name: str, output: str | None = None, edk2: str | None = None,
                   layout: Layout | None = None) -> None:
    """``invoke render``: load, render, validate and write XenOvmf.dsc/.fdf (nothing written on error).

    ``edk2`` (a tag; None: the default tree) is the tree the platform is rendered and checked for;
    another tree than the default writes to that tree's workspace (``build/<tag>/<platform>/``).
    """
    r = resolve(make_request(platform_name, edk2=edk2), layout)
    validate(r)
    # By default into the default build's workspace, where its package's files go.
    out_dir = Path(output) if output else r.workspace / r.platform.package_dir
    written = write_outputs(r.rendered, out_dir)
    for name in r.rendered.files():
        path = out_dir / name
        state = "written" if path in written else "unchanged"
        say(f"{display_path(path)} ({state})")
