"""Session fixtures for integration tests: real builds of xen-pvh, published once per session.

``published_xen_pvh`` is a from-scratch build (``--clean``) of xen-pvh DEBUG with the default
features: the build test checks it, the QEMU boot tests boot it. ``published_xen_pvh_hvcon`` is the
``debug_output=hypervisor-console`` variant (its own workspace and dist dir) the Xen boot test needs;
it is an ordinary build, so a no-op when already published from the same inputs.
``published_xen_pvh_newest`` is xen-pvh DEBUG 2M against the newest edk2 tree (edk2-stable202605),
``published_xen_pvh_hvcon_newest`` its hypervisor-console variant (the Xen boot test's newest guests).
``xen_pvh_ccache_elsewhere`` is a clean ``--ccache`` build at another checkout path with another, cold
cache: the reproducibility test compares it with the session build and the ``--ccache`` test rebuilds
it warm, so one clean build serves both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.platform.resolve import resolve
from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import entry as build_entry
from ovmfgen import request as build_request
from ovmfgen.edk2.releases import NEWEST_TAG
from ovmfgen.nightly import repro

HVCON = ("debug_output=hypervisor-console",)
#: The Secure Boot build the Xen boot test's Secure Boot guests boot: the test key set, 4 MiB.
SB_FEATURES = (*HVCON, "secure_boot=test")


@pytest.fixture(scope="session")
def xen_pvh_clean_build() -> build_cmd.BuildResult:
    """Build xen-pvh DEBUG from a clean workspace (once per session) and publish it."""
    return build_cmd.build(resolve(build_request.make_request("xen-pvh", "DEBUG", clean=True)))


@pytest.fixture(scope="session")
def published_xen_pvh(xen_pvh_clean_build: build_cmd.BuildResult) -> Path:
    """dist/xen-pvh/DEBUG/ (OVMF.fd, ovmf.elf, build.log, manifest.json)."""
    return xen_pvh_clean_build.dist


@pytest.fixture(scope="session")
def published_xen_pvh_hvcon() -> Path:
    """dist/xen-pvh/DEBUG-hvcon/: the build whose DEBUG output goes to Xen's console (port 0xe9)."""
    return build_entry.build_command(platform="xen-pvh", target="DEBUG", features=HVCON)


@pytest.fixture(scope="session")
def published_xen_pvh_newest() -> Path:
    """dist/xen-pvh/edk2-stable202605/DEBUG/: xen-pvh DEBUG 2M against the newest tree (an ordinary build:
    a no-op when already published from the same inputs). ``invoke test`` set the tree up."""
    return build_entry.build_command(platform="xen-pvh", target="DEBUG", fd_size="2M", edk2=NEWEST_TAG)


@pytest.fixture(scope="session")
def published_xen_pvh_hvcon_newest() -> Path:
    """dist/xen-pvh/edk2-stable202605/DEBUG-hvcon/: the hypervisor-console build against the newest tree."""
    return build_entry.build_command(platform="xen-pvh", target="DEBUG", features=HVCON, edk2=NEWEST_TAG)


@pytest.fixture(scope="session")
def published_xen_pvh_sb() -> Path:
    """dist/xen-pvh/DEBUG-<variant>/: the hypervisor-console build with Secure Boot on (``secure_boot=test``,
    4 MiB)."""
    return build_entry.build_command(platform="xen-pvh", target="DEBUG", fd_size="4M", features=SB_FEATURES)


@pytest.fixture(scope="session")
def xen_pvh_ccache_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> repro.PlacedBuild:
    """xen-pvh DEBUG ``--clean --ccache`` from scratch at a checkout path of another length, with
    ``OVMFGEN_CACHE`` at another path (the tree hard-linked there): its ccache and link cache start empty.
    Only the ``--ccache`` test builds there again (warm)."""
    base = tmp_path_factory.mktemp("elsewhere")
    cache = repro.moved_cache(None, base / "another-cache-at-a-longer-path")
    assert cache is not None, "the default tree lives in ovmfgen's cache: its path can move"
    return repro.build_at(build_request.make_request("xen-pvh", "DEBUG", clean=True, ccache=True),
                          base / "a-second-checkout-somewhere-else", cache)
