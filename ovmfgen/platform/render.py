"""Render a platform into its DSC and FDF text (jinja2 templates in templates/).

``render_dsc``/``render_fdf`` are pure: model in, CRLF text out, same bytes for the same model (no
timestamps, no absolute paths). Writing is separate (``write_outputs``): both files are rendered and
the platform validated before anything is written, and each file is replaced atomically and only
when its bytes change (so EDK2's incremental build sees no spurious change).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from ovmfgen.edk2.releases import path_part
from ovmfgen.platform.model import Platform
from ovmfgen.paths import BUILD_DIR, TEMPLATES_DIR

_FIELD_WIDTH = {"Defines": 30, "FD": 13, "FV": 18}


def _pad(text: str, width: int) -> str:
    return text.ljust(width) if width else text


def _indent_block(text: str, ind: str) -> str:
    return "\n".join((ind + line) if line else "" for line in text.split("\n"))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals.update(
        kind=lambda s: type(s).__name__,
        pad=_pad,
        field_width=lambda section: _FIELD_WIDTH.get(section, 0),
        indent_block=_indent_block,
        list=list,
    )
    return env


def _header_context(platform: Platform) -> dict[str, object]:
    title = platform.description.split(". ")[0].rstrip(".") if platform.description else platform.dsc_name
    return {
        "platform": platform,
        "description_line": title,
        "copyright": platform.copyright,
        "source": platform.source,
    }


def _finish(text: str) -> str:
    """Normalise to EDK2's conventions: no trailing blanks, single final newline, CRLF."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    # Collapse runs of blank lines the templates may leave between blocks.
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def render_dsc(platform: Platform) -> str:
    """The platform's DSC as CRLF text."""
    return _finish(_environment().get_template("dsc.j2").render(**_header_context(platform)))


def render_fdf(platform: Platform) -> str:
    """The platform's FDF as CRLF text."""
    return _finish(_environment().get_template("fdf.j2").render(**_header_context(platform)))


@dataclass(frozen=True)
class Rendered:
    """Both generated files of a platform, ready to write."""

    dsc_name: str
    dsc: str
    fdf: str

    def files(self) -> dict[str, bytes]:
        """File name -> bytes, in a stable order."""
        return {f"{self.dsc_name}.dsc": self.dsc.encode("utf-8"), f"{self.dsc_name}.fdf": self.fdf.encode("utf-8")}


def render(platform: Platform) -> Rendered:
    """Render both files of ``platform`` (pure)."""
    return Rendered(platform.dsc_name, render_dsc(platform), render_fdf(platform))


def write_outputs(rendered: Rendered, out_dir: Path) -> list[Path]:
    """Write the rendered files into ``out_dir`` atomically, only where changed; returns those written."""
    from ovmfgen.fsutil import write_if_changed

    written = []
    for name, data in rendered.files().items():
        target = out_dir / name
        if write_if_changed(target, data):
            written.append(target)
    return written


def default_output_dir(platform: Platform, edk2: str | None = None) -> Path:
    """Where ``invoke render`` writes by default: the platform's build workspace (of tree ``edk2``)."""
    return BUILD_DIR / path_part(edk2) / platform.name / platform.package_dir


def render_command(platform_name: str, output: str | None = None, edk2: str | None = None) -> None:
    """``invoke render``: load, validate, render and write XenOvmf.dsc/.fdf (nothing written on error).

    ``edk2`` (a tag; None: the default tree) is the tree the platform is rendered and checked for;
    another tree than the default writes to that tree's workspace (``build/<tag>/<platform>/``).
    """
    from ovmfgen.edk2.tree import locate
    from ovmfgen.errors import display_path
    from ovmfgen.platform.load import load_platform
    from ovmfgen.ui import say
    from ovmfgen.platform.validate import validate

    tree = locate(edk2)
    platform = load_platform(platform_name, edk2=tree.tag)
    rendered = validate(platform, tree=tree)
    out_dir = Path(output) if output else default_output_dir(platform, edk2)
    written = write_outputs(rendered, out_dir)
    for name in rendered.files():
        path = out_dir / name
        state = "written" if path in written else "unchanged"
        say(f"{display_path(path)} ({state})")
