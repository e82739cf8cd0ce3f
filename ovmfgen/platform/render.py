"""Render a platform into its DSC and FDF text (jinja2 templates in templates/).

``render_dsc``/``render_fdf`` are pure: model in, CRLF text out, same bytes for the same model (no
timestamps, no absolute paths). Writing is separate (``write_outputs``): each file is replaced
atomically and only when its bytes change (so EDK2's incremental build sees no spurious change).
``invoke render`` (load, validate, write) is ``ovmfgen.platform.command``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from ovmfgen.fsutil import write_if_changed
from ovmfgen import paths
from ovmfgen.paths import TEMPLATES_DIR
from ovmfgen.platform.model import Platform

_FIELD_WIDTH = {"Defines": 30, "FD": 13, "FV": 18}


def _pad(text: str, width: int) -> str:
    return text.ljust(width) if width else text


def _indent_block(text: str, ind: str) -> str:
    return "\n".join((ind + line) if line else "" for line in text.split("\n"))


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """The compiled templates, kept in ovmfgen's cache (keyed by each template's source, so an edited
    template is compiled again): compiling them is most of a render's time. None when the cache is not
    writable (rendering then compiles, as it would anyway)."""
    where = paths.cache_dir() / "jinja2"
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(where))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        bytecode_cache=_bytecode_cache(),
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
    written = []
    for name, data in rendered.files().items():
        target = out_dir / name
        if write_if_changed(target, data):
            written.append(target)
    return written
