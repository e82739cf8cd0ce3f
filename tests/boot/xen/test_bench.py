"""ovmfgen.boot.xen.bench (invoke bench --xen): the figures from xen-boot.json, the build it needs."""

from __future__ import annotations

import json

import pytest

from ovmfgen.errors import OvmfgenError


# --- invoke bench --xen ------------------------------------------------------------------------------


def _bench_summary(wall: tuple[float, ...], set_s: float, runs: int = 1) -> dict:
    names = ["ovmfgen-pvh-shell", "ovmfgen-hvm-shell", "ovmfgen-pvh-ud2"][:len(wall)]
    return {"xen": "4.17.x", "device_model": "7.2",
            "runs": [{"guests": names, "qemu_seconds": set_s, "dom0_up_wall_s": 80.0, "dom0_up_dom0_s": 5.4,
                      "wall_per_dom0_second": 6.5, "qemu_max_rss_mib": 2900.0}] * runs,
            "guests": [{"name": n, "verdict": "SHELL_REACHED", "ok": True, "wall_seconds": w, "seconds_to_shell": 6.8,
                        "dom0_seconds": round(w / 6.5, 2)} for n, w in zip(names, wall)]}


def test_bench_figures_from_xen_boot_json():
    from ovmfgen.boot.xen import bench

    f = bench.xen_figures(_bench_summary((25.0, 29.0, 3.0), 150.0), 1.5, 0.4)
    assert f["met"] and f["set_s"] == 150.0 and f["dom0_up_wall_s"] == 80.0 and f["load_before"] == 1.5
    assert f["guests"]["ovmfgen-pvh-shell"] == {"verdict": "SHELL_REACHED", "ok": True, "wall_s": 25.0,
                                                "dom0_s_to_shell": 6.8, "dom0_s_to_os": None, "dom0_s": 3.85,
                                                "met": True}
    # On dom0's clock: dom0's start plus each guest's turn (3.85 + 4.46 + 0.46).
    assert f["set_dom0_s"] == 14.2 and f["dom0_up_dom0_s"] == 5.4
    # A guest without its turn's end (an older log) leaves the set's dom0 figure unknown.
    old = _bench_summary((25.0,), 150.0)
    del old["guests"][0]["dom0_seconds"]
    assert bench.xen_figures(old, None, 0.0)["set_dom0_s"] is None
    slow = bench.xen_figures(_bench_summary((25.0, 31.0, 3.0), 150.0), None, 0.0)
    assert not slow["met"] and not slow["guests"]["ovmfgen-hvm-shell"]["met"]
    assert not bench.xen_figures(_bench_summary((5.0,), 201.0), None, 0.0)["met"]  # the whole set
    assert not bench.xen_figures(_bench_summary((5.0,), 100.0, runs=2), None, 0.0)["met"]  # a retry is no figure


def test_bench_xen_names_the_build_it_needs(tmp_path, real_cache):
    from ovmfgen.boot.xen import bench
    from ovmfgen.paths import Layout

    layout = Layout(build_root=tmp_path / "b", dist_root=tmp_path / "d")
    with pytest.raises(OvmfgenError, match=r"DEBUG-hvcon/ovmf.elf: run `invoke build --platform xen-pvh --target "
                                           r"DEBUG --feature debug_output=hypervisor-console` first"):
        bench.bench_xen_command(layout=layout)
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode"):
        bench.bench_xen_command(mode="kvm", layout=layout)


def test_bench_results_keep_the_other_figures(tmp_path):
    from ovmfgen.builder.bench import merge_results

    out = tmp_path / "results.json"
    merge_results(out, {"noop": {"ovmfgen_s": 0.5}})
    merge_results(out, {"xen": {"set_s": 150.0}})
    merge_results(out, {"noop": {"ovmfgen_s": 0.6}})
    assert json.loads(out.read_text()) == {"noop": {"ovmfgen_s": 0.6}, "xen": {"set_s": 150.0}}
    out.write_text("not json")
    merge_results(out, {"xen": {}})
    assert json.loads(out.read_text()) == {"xen": {}}
