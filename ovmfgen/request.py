"""Build options: the ``Request`` (what gets built) and the parsers that check command-line values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ovmfgen.edk2.conventions import FD_SIZE_DEFINE, fd_size_label, parse_fd_size, parse_target
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.reads import BadFeatureValue

_DEFINE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["NAME=VALUE", "FLAG"]`` -> ``{"NAME": "VALUE", "FLAG": "TRUE"}`` (later wins)."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name = name.strip()
        value = value.strip() if sep else "TRUE"
        if not _DEFINE_NAME.match(name):
            raise OvmfgenError(f"bad {what} '{item}': expected NAME=VALUE")
        if what == "define" and ("=" in value or not value or any(c.isspace() for c in value)):
            # stuart takes BLD_*_NAME=VALUE arguments with exactly one '='.
            raise OvmfgenError(f"bad define '{item}': the value must be non-empty, without '=' or spaces")
        out[name] = value
    return out


def _pcd_text(value: str, what: str) -> str:
    if not value or any(c in value for c in '"\\=') or not value.isprintable():
        raise OvmfgenError(f"bad {what} '{value}': printable text without quotes, backslashes or '='")
    return value


@dataclass(frozen=True)
class Request:
    """One build: everything that selects what gets built (and the knobs that do not change it)."""

    platform: str
    target: str = "DEBUG"
    fd_size: int | None = None                      # MiB; None: the platform's default
    defines: tuple[tuple[str, str], ...] = ()       # extra -D (FD_SIZE_* folded into fd_size)
    features: tuple[tuple[str, str], ...] = ()      # feature overrides
    jobs: int | None = None
    force: bool = False
    clean: bool = False
    ccache: bool = False
    version_string: str | None = None
    release_date: str | None = None
    edk2: str | None = None                         # the edk2 tree's tag; None: the default tree

    def options(self) -> list[str]:
        """The ``invoke build`` options that select this build (``--platform xen-pvh --target DEBUG ...``)."""
        words = ["--platform", self.platform, "--target", self.target]
        if self.edk2:
            words += ["--edk2", self.edk2]
        if self.fd_size is not None:
            words += ["--fd-size", fd_size_label(self.fd_size)]
        for name, value in self.features:
            words += ["--feature", f"{name}={value}"]
        for name, value in self.defines:
            words += ["--define", f"{name}={value}"]
        return words


def make_request(platform: str, target: str = "DEBUG", fd_size: str | int | None = None,
                 defines: Sequence[str] = (), features: Sequence[str] = (), jobs: int | str | None = None,
                 force: bool = False, clean: bool = False, ccache: bool = False,
                 version_string: str | None = None, release_date: str | None = None,
                 edk2: str | None = None) -> Request:
    """Check and normalise command-line options into a ``Request`` (raises a one-line OvmfgenError)."""
    size = parse_fd_size(fd_size)
    defs = parse_assignments(defines, "define")
    feats = parse_assignments(features, "feature")
    for name in [n for n in defs if FD_SIZE_DEFINE.match(n)]:
        value = defs.pop(name)
        if value.upper() != "TRUE":
            raise OvmfgenError(f"-D {name}={value}: use --fd-size instead")
        mib = int(FD_SIZE_DEFINE.match(name).group(1))  # type: ignore[union-attr]
        if size is not None and size != mib:
            raise OvmfgenError(f"-D {name} contradicts --fd-size {size}M")
        size = mib
    if "fd_size" in feats:
        mib = parse_fd_size(feats.pop("fd_size"))
        if size is not None and size != mib:
            raise BadFeatureValue(f"--feature fd_size={mib} contradicts --fd-size {size}M", "fd_size")
        size = mib
    n_jobs = None
    if jobs not in (None, ""):
        try:
            n_jobs = int(jobs)
        except ValueError:
            n_jobs = 0
        if n_jobs < 1:
            raise OvmfgenError(f"bad --jobs '{jobs}': expected a positive number")
    return Request(
        platform=platform, target=parse_target(target), fd_size=size,
        defines=tuple(sorted(defs.items())), features=tuple(sorted(feats.items())), jobs=n_jobs,
        force=force, clean=clean, ccache=ccache,
        version_string=_pcd_text(version_string, "--version-string") if version_string else None,
        release_date=_pcd_text(release_date, "--release-date") if release_date else None,
        edk2=edk2 or None,
    )
