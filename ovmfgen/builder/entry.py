"""``invoke build``'s entry: the options checked into a ``Request``, then the no-op answered from its stamp
when no input changed (``noop``: nothing is parsed), else the full build (``command.build``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ovmfgen.builder.noop import stamped_noop
from ovmfgen.paths import Layout
from ovmfgen.request import make_request


def build_command(platform: str, target: str = "DEBUG", fd_size: str | None = None, defines: Sequence[str] = (),
                  features: Sequence[str] = (), jobs: int | str | None = None, force: bool = False,
                  ccache: bool = False, version_string: str | None = None, release_date: str | None = None,
                  clean: bool = False, edk2: str | None = None, layout: Layout | None = None) -> Path:
    """``invoke build``: build ``platform`` against the edk2 tree ``edk2`` (a tag; None: the default
    tree) and publish it; returns the dist directory.

    A build whose inputs match the published manifest is a no-op; ``force`` builds anyway, ``clean``
    first removes the variant's workspace.
    """
    request = make_request(platform, target, fd_size, defines, features, jobs, force, clean, ccache,
                           version_string, release_date, edk2)
    lay = layout or Layout()
    if request.ccache:
        from ovmfgen.builder.command import check_ccache

        check_ccache()
    dist = stamped_noop(request, lay)
    if dist is not None:
        return dist
    from ovmfgen.builder.command import build
    from ovmfgen.platform.resolve import resolve

    return build(resolve(request, lay)).dist
