"""ovmfgen.platform.resolve: the variant rule (dist and workspace names) and the override steps per tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.builder.plan import plan
from ovmfgen.platform.resolve import resolve, variant_suffix
from ovmfgen.request import make_request
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import Layout


def test_dist_dir_rule(layout: Layout, fake_env: dict) -> None:
    d = layout.dist_root / "xen-pvh"

    def dist(**kw: object) -> Path:
        return resolve(make_request("xen-pvh", **kw), layout).dist

    assert dist() == d / "DEBUG"
    assert dist(target="release") == d / "RELEASE"
    assert dist(fd_size="2M", features=["debug_output=debugcon"]) == d / "DEBUG"
    assert dist(fd_size="4M") == d / "DEBUG-4M"
    assert dist(features=["debug_output=hypervisor-console"]) == d / "DEBUG-hvcon"
    assert dist(fd_size="1M", features=["shell=false", "debug_output=hypervisor-console"]) == d / "DEBUG-1M-hvcon-noshell"
    with_define = dist(defines=["SOURCE_DEBUG_ENABLE=TRUE"])
    assert with_define.name.startswith("DEBUG-D") and len(with_define.name) == len("DEBUG-D") + 8
    assert dist(defines=["SOURCE_DEBUG_ENABLE=FALSE"]) != with_define
    assert variant_suffix({"fd_size": "2"}, 2, {"odd_feature": "some value"}, {}) == "oddfeature-somevalue"


def test_a_per_tree_override_takes_the_copy_of_the_tree_it_builds(layout: Layout, fake_env: dict) -> None:
    # xen-pvh ships no per-tree file (its fixes are patches that apply to both trees): give it one.
    sec = "OvmfPkg/XenOvmfExtra/PerTree.h"
    yaml_path = layout.platforms_dir / "xen-pvh.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("\noverrides:\n", f"\noverrides:\n  - {{path: {sec}, per_tree: true, "
                                                       "commit: {subject: 'OvmfPkg: x', body: x}}\n", 1))
    copies = {tag: f"// {tag}\r\n".encode() for tag in ("edk2-stable202502", "edk2-stable202605")}
    for tag, data in copies.items():
        (layout.overrides_dir / "xen-pvh" / tag / sec).parent.mkdir(parents=True)
        (layout.overrides_dir / "xen-pvh" / tag / sec).write_bytes(data)
    hashes = set()
    for tag, data in copies.items():
        fake_env["identity"]["tag"] = tag
        p = plan(resolve(make_request("xen-pvh"), layout))
        assert p.overrides[sec] == data
        hashes.add(p.input_hash)
    assert len(hashes) == 2
    fake_env["identity"]["tag"] = "edk2-stable209912"
    with pytest.raises(OvmfgenError) as info:
        plan(resolve(make_request("xen-pvh"), layout))
    assert str(info.value).endswith("error: override not found: overrides/xen-pvh/edk2-stable209912/"
                                    f"{sec} (per_tree: one copy per edk2 tree; none for "
                                    "edk2-stable209912)")
    assert info.value.location is not None and info.value.location.line > 0
