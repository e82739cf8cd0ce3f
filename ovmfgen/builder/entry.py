"""``invoke build``'s entry: the options checked into a ``Request``, then the no-op answered from its stamp
when no input changed (``noop``: nothing is parsed), else the full build (``command.build``).
"""

from __future__ import annotations

from pathlib import Path

from ovmfgen.builder.noop import stamped_noop
from ovmfgen.paths import Layout
from ovmfgen.request import make_request


def build_command(layout: Layout | None = None, **options: object) -> Path:
    """``invoke build``: the build ``options`` select (``make_request``'s: platform, target, fd_size,
    defines, features, jobs, force, clean, ccache, version_string, release_date, edk2), published;
    returns the dist directory.

    A build whose inputs match the published manifest is a no-op; ``force`` builds anyway, ``clean``
    first removes the variant's workspace.
    """
    request = make_request(**options)  # type: ignore[arg-type]
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
