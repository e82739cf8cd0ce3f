"""``invoke render``: load a platform, render it once, validate those files, then write them.

Nothing is written when loading or validation fails (both files are rendered and checked first).
"""

from __future__ import annotations

from pathlib import Path

from ovmfgen.edk2.releases import path_part
from ovmfgen.errors import display_path
from ovmfgen.paths import Layout
from ovmfgen.platform.located import load_for_tree
from ovmfgen.platform.model import Platform
from ovmfgen.platform.render import render, write_outputs
from ovmfgen.platform.validate import validate
from ovmfgen.ui import say


def default_output_dir(platform: Platform, edk2: str | None = None, layout: Layout | None = None) -> Path:
    """Where ``invoke render`` writes by default: the platform's build workspace (of tree ``edk2``) in ``layout``."""
    return (layout or Layout()).build_root / path_part(edk2) / platform.name / platform.package_dir


def render_command(platform_name: str, output: str | None = None, edk2: str | None = None,
                   layout: Layout | None = None) -> None:
    """``invoke render``: load, render, validate and write XenOvmf.dsc/.fdf (nothing written on error).

    ``edk2`` (a tag; None: the default tree) is the tree the platform is rendered and checked for;
    another tree than the default writes to that tree's workspace (``build/<tag>/<platform>/``).
    """
    lay = layout or Layout()
    tree, platform = load_for_tree(platform_name, lay.platforms_dir, edk2)
    rendered = render(platform)
    validate(platform, rendered, tree=tree, layout=lay)
    out_dir = Path(output) if output else default_output_dir(platform, edk2, lay)
    written = write_outputs(rendered, out_dir)
    for name in rendered.files():
        path = out_dir / name
        state = "written" if path in written else "unchanged"
        say(f"{display_path(path)} ({state})")
