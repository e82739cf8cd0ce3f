"""Reproducible from any path: the session's xen-pvh DEBUG build against one made elsewhere, byte for byte.

The session build (``published_xen_pvh``: the repository's workspace, ovmfgen's cache, no ccache) is
the first of the pair; the second is ``xen_pvh_ccache_elsewhere``: from scratch at a path of another
length, with ``OVMFGEN_CACHE`` at another path (the tree hard-linked there, so its sources sit elsewhere
too) and through ccache and the link cache (cold: a new cache). GenFw and GenFds run for real in both.
That build is shared with the warm ``--ccache`` test (test_build.py), so this test adds no build.
"""

from __future__ import annotations


import pytest

from ovmfgen import paths
from ovmfgen.builder.command import BuildResult
from ovmfgen.nightly import repro

pytestmark = pytest.mark.integration


def test_the_same_firmware_from_another_checkout_and_cache_path(xen_pvh_clean_build: BuildResult,
                                                                xen_pvh_ccache_elsewhere: repro.PlacedBuild) -> None:
    first = repro.PlacedBuild(xen_pvh_clean_build.plan, xen_pvh_clean_build, paths.cache_dir())
    second = xen_pvh_ccache_elsewhere
    assert len(str(second.plan.workspace)) != len(str(first.plan.workspace))
    assert second.plan.edk2_root != first.plan.edk2_root and second.cache != first.cache
    cmp = repro.compare_placed(first, second)
    assert cmp["outputs"] == {"OVMF.fd": True, "ovmf.elf": True}, repro.repro_detail(cmp)
    assert cmp["identical"]
    # No image holds either place (what made them differ before: GenFw's CodeView names, __FILE__).
    images = sorted(second.plan.output_base.glob("X64/**/OUTPUT/*.efi"))
    assert len(images) > 90
    places = [str(p).encode() for p in (first.plan.workspace, second.plan.workspace, first.cache, second.cache)]
    holding = [img.name for img in images if any(place in img.read_bytes() for place in places)]
    assert holding == []
