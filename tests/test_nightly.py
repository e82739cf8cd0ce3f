"""The nightly without edk2 builds: matrix parsing and selection, failure counting (real cell processes
that fail), summary merge, history pruning, firmware.json, install layout, CI workflow emission,
reproducibility comparison, and the QEMU-shell helpers (FAT image, pflash split)."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest
import yaml

from ovmfgen.boot import qemu as boot
from ovmfgen.nightly import core as nightly
from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly.core import Cell, InstallSpec, NightlyFailed, Options

REPO = Path(__file__).resolve().parent.parent


def _matrix(cells: list[dict], **top) -> nightly.Matrix:
    return nightly.parse_matrix({"cells": cells, **top}, "test.yaml")


SMALL = [
    {"name": "a-DEBUG-2M", "platform": "xen-pvh", "target": "DEBUG", "fd_size": "2M", "boot": ["pvh", "reset"]},
    {"name": "a-RELEASE-4M", "platform": "xen-pvh", "target": "RELEASE", "fd_size": "4M"},
    {"name": "q-DEBUG", "platform": "qemu-x64", "boot": ["shell"]},
    {"name": "a-xenboot", "platform": "xen-pvh", "boot": ["xen"], "optional": True},
    {"name": "a-needs-missing", "platform": "xen-pvh", "requires": "ovmfgen.no_such_module"},
]


# --- the matrix ---------------------------------------------------------------------------------

def test_the_shipped_matrix_parses_and_covers_the_required_cells():
    m = nightly.load_matrix(REPO / "nightly.yaml")
    by = {c.name: c for c in m.cells}
    for name, target, size in (("xen-pvh-DEBUG-2M", "DEBUG", "2M"), ("xen-pvh-DEBUG-4M", "DEBUG", "4M"),
                               ("xen-pvh-RELEASE-2M", "RELEASE", "2M"), ("xen-pvh-RELEASE-4M", "RELEASE", "4M")):
        assert (by[name].platform, by[name].target, by[name].fd_size) == ("xen-pvh", target, size)
    assert by["xen-pvh-DEBUG-2M"].boot == ("pvh", "reset") and by["xen-pvh-DEBUG-4M"].boot == ("pvh", "reset")
    assert by["qemu-x64-DEBUG"].platform == "qemu-x64" and by["qemu-x64-DEBUG"].boot == ("shell",)
    xen = by["xen-pvh-DEBUG-hvcon-xenboot"]
    assert xen.optional and xen.boot == ("xen",) and xen.requires == "ovmfgen.boot.xen"
    assert "debug_output=hypervisor-console" in xen.features
    assert all(c.ccache for c in m.cells)
    assert set(m.repro_rotate) <= set(by) and m.repro_rotate
    assert {s.cell for s in m.install} <= set(by)


def test_cell_names_default_from_the_variant():
    m = _matrix([{"platform": "xen-pvh", "target": "release", "fd_size": "4", "features": ["timer=acpi"]}])
    assert m.cells[0].name == "xen-pvh-RELEASE-4M-acpi"
    assert m.cells[0].target == "RELEASE" and m.cells[0].fd_size == "4M"


@pytest.mark.parametrize("cells, top, message", [
    ([{"name": "x", "platform": "p", "colour": "red"}], {}, "unknown key 'colour'"),
    ([{"name": "x"}], {}, "missing 'platform'"),
    ([{"name": "x", "platform": "p"}, {"name": "x", "platform": "p"}], {}, "two cells are called 'x'"),
    ([{"name": "x", "platform": "p", "boot": ["uefi"]}], {}, "boot 'uefi' is not one of"),
    ([{"name": "x", "platform": "p", "target": "RELEASE", "boot": ["pvh"]}], {}, "RELEASE build prints no DEBUG"),
    ([{"name": "x", "platform": "p", "target": "FAST"}], {}, "bad target"),
    ([{"name": "x", "platform": "p", "fd_size": "3M"}], {}, "bad FD size"),
    ([{"name": "x y", "platform": "p"}], {}, "a cell name is"),
    ([{"name": "x", "platform": "p"}], {"reproducibility": {"rotate": ["y"]}}, "rotate names no cell 'y'"),
    ([{"name": "x", "platform": "p"}], {"install": [{"cell": "x", "firmware": "/usr/x"}]}, "relative path"),
    ([{"name": "x", "platform": "p"}], {"install": [{"cell": "x"}]}, "needs 'firmware'"),
    ([], {}, "non-empty list"),
])
def test_bad_matrices_are_one_line_errors(cells, top, message):
    with pytest.raises(OvmfgenError, match=message):
        _matrix(cells, **top)


def test_selection_default_match_exclude_and_exact_cells():
    m = _matrix(SMALL)
    names = lambda cells: [c.name for c in cells]  # noqa: E731
    # Default: everything but optional and unavailable cells, in matrix order.
    assert names(nightly.select_cells(m)) == ["a-DEBUG-2M", "a-RELEASE-4M", "q-DEBUG"]
    assert names(nightly.select_cells(m, match=["4M"])) == ["a-RELEASE-4M"]
    assert names(nightly.select_cells(m, match=["DEBUG"], exclude=["q-"])) == ["a-DEBUG-2M"]
    assert names(nightly.select_cells(m, exclude=["RELEASE", "DEBUG-2M"])) == ["q-DEBUG"]
    # An optional cell runs when a pattern or --cell names it; "xen" also matches nothing else here.
    assert names(nightly.select_cells(m, match=["xen"])) == ["a-xenboot"]
    assert names(nightly.select_cells(m, names=["a-xenboot", "q-DEBUG"])) == ["q-DEBUG", "a-xenboot"]
    # A cell whose module is missing is never selected, even by name.
    assert names(nightly.select_cells(m, match=["needs"])) == []
    with pytest.raises(OvmfgenError, match="no cell 'nope'"):
        nightly.select_cells(m, names=["nope"])


def test_list_shows_every_cell_with_its_description_and_flags(capsys):
    m = _matrix([*SMALL[:3], {**SMALL[3], "description": "real Xen, slow"}, SMALL[4]])
    lines = nightly.list_text(m).splitlines()
    assert [ln.split()[0] for ln in lines] == [c["name"] for c in SMALL]
    assert lines[3].endswith("real Xen, slow [optional]")
    assert "[unavailable: needs ovmfgen.no_such_module]" in lines[4]
    assert nightly.nightly_command(matrix=str(REPO / "nightly.yaml"), list_cells=True) is None
    out = capsys.readouterr().out
    assert "xen-pvh-DEBUG-4M" in out and "qemu-x64-DEBUG" in out


def test_the_xen_cell_is_selectable_with_match_xen_when_xen_py_is_present():
    m = nightly.load_matrix(REPO / "nightly.yaml")
    selected = [c.name for c in nightly.select_cells(m, match=["xen"])]
    assert "xen-pvh-DEBUG-hvcon-xenboot" in selected
    assert "xen-pvh-DEBUG-hvcon-xenboot" not in [c.name for c in nightly.select_cells(m)]


def test_the_reproducibility_cell_rotates_with_the_date():
    m = _matrix(SMALL, reproducibility={"rotate": ["a-DEBUG-2M", "a-RELEASE-4M", "q-DEBUG"]})
    sel = nightly.select_cells(m)
    picks = [nightly.repro_cell_for(m, f"2025-03-{d:02d}", sel).name for d in range(1, 7)]
    assert sorted(set(picks)) == ["a-DEBUG-2M", "a-RELEASE-4M", "q-DEBUG"]
    assert picks[:3] == picks[3:]                                      # a 3-day cycle
    assert nightly.repro_cell_for(m, "2025-03-01", sel) == nightly.repro_cell_for(m, "2025-03-01", sel)
    assert nightly.repro_cell_for(m, "2025-03-01", [m.cell("q-DEBUG")]).name == "q-DEBUG"  # only selected cells
    assert nightly.repro_cell_for(_matrix(SMALL), "2025-03-01", sel) is None


def test_dates_are_checked():
    assert nightly.parse_date("2024-02-29") == "2024-02-29"
    assert nightly._DATE_RE.match(nightly.parse_date(None))
    for bad in ("2025-2-1", "2025-02-30", "yesterday"):
        with pytest.raises(OvmfgenError, match="bad --date"):
            nightly.parse_date(bad)


def test_cells_round_trip_through_json():
    cell = _matrix(SMALL).cells[0]
    assert Cell.from_json(json.loads(json.dumps(cell.to_json()))) == cell


# --- running: processes, failures, exit status ---------------------------------------------------

def _py_job(tmp: Path, label: str, code: str) -> nightly._Job:
    out = tmp / label
    return nightly._Job(label, [sys.executable, "-c", code], out)


def test_run_jobs_collects_results_logs_and_crashes(tmp_path: Path):
    ok_code = ("import json, pathlib, sys; print('hello from the cell'); "
               "pathlib.Path('{d}/result.json').write_text(json.dumps({{'name': 'good', 'status': 'passed'}}))")
    good = nightly._Job("good", [], tmp_path / "good")
    good.argv = [sys.executable, "-c", ok_code.format(d=good.out_dir)]
    crash = _py_job(tmp_path, "crash", "import sys; print('about to die'); sys.exit(3)")
    seen = []
    results = nightly.run_jobs([good, crash], 2, quiet=True, on_done=lambda j, r: seen.append(j.label))
    assert results["good"] == {"name": "good", "status": "passed"}
    assert results["crash"]["status"] == "failed"
    assert "exited with status 3" in results["crash"]["error"] and "about to die" in results["crash"]["error"]
    assert "hello from the cell" in (good.out_dir / "cell.log").read_text()
    assert sorted(seen) == ["crash", "good"]


def test_run_jobs_runs_within_the_jobs_budget(tmp_path: Path):
    def jobs():
        return [_py_job(tmp_path, f"s{i}", "import time; time.sleep(1.0)") for i in range(2)]

    t0 = time.monotonic()
    nightly.run_jobs(jobs(), 2, quiet=True)
    parallel = time.monotonic() - t0
    t0 = time.monotonic()
    nightly.run_jobs(jobs(), 1, quiet=True)
    serial = time.monotonic() - t0
    assert serial >= 2.0
    assert parallel < serial - 0.6


def test_failing_cells_are_counted_and_never_stop_the_others(tmp_path: Path):
    """Real cell processes: two cells that cannot build (unknown platform, bad feature) and one that
    could; --match keeps all three, the night completes, and the exit status is the failure count."""
    m = _matrix([
        {"name": "broken-platform", "platform": "no-such-platform", "target": "DEBUG"},
        {"name": "broken-feature", "platform": "xen-pvh", "features": ["timer=sundial"]},
    ])
    opts = Options(out=tmp_path / "nightly", date="2025-01-02", jobs=2, quiet=True, repro="none")
    summary = nightly.run_night(m, list(m.cells), opts)
    assert summary["totals"] == {"cells": 2, "passed": 0, "failed": 2}
    by = {c["name"]: c for c in summary["cells"]}
    assert "unknown platform 'no-such-platform'" in by["broken-platform"]["error"]
    assert "sundial" in by["broken-feature"]["error"]
    assert by["broken-platform"]["failed_steps"] == ["build"]
    night = tmp_path / "nightly" / "2025-01-02"
    assert json.loads((night / "summary.json").read_text())["totals"]["failed"] == 2
    assert "unknown platform" in (night / "cells" / "broken-platform" / "cell.log").read_text()
    assert (tmp_path / "nightly" / "index.html").is_file()
    assert not list((tmp_path / "nightly").glob(".*partial"))
    with pytest.raises(NightlyFailed) as info:
        nightly._raise_on_failures(summary)
    assert info.value.exit_code == 2
    assert "2 of 2 nightly cell(s) failed: broken-feature, broken-platform" in str(info.value)


def test_failure_count_includes_a_required_reproducibility_check():
    cells = [{"name": "a", "status": "passed"}, {"name": "b", "status": "failed"}, {"name": "c", "status": "passed"}]
    repro = {"cell": "a", "status": "differs"}
    assert nightly.failures(nightly.make_summary("2025-01-01", cells, repro, "m", 1, 1.0)) == ["b"]
    required = nightly.make_summary("2025-01-01", cells, repro, "m", 1, 1.0, repro_required=True)
    assert nightly.failures(required) == ["b", "reproducibility (a)"]
    assert NightlyFailed("x", 250).exit_code == nightly.MAX_EXIT
    nightly._raise_on_failures(nightly.make_summary("2025-01-01", cells[:1], None, "m", 1, 1.0))  # all passed


def test_status_line_names_each_step():
    rec = {"name": "c", "status": "failed", "seconds": 12.0, "error": "boot-pvh: STALLED\nmore",
           "steps": [{"name": "build", "status": "passed", "noop": True}, {"name": "boot-pvh", "status": "failed"}]}
    assert nightly.status_line(rec) == "c: FAILED in 12 s [build ok (no-op), boot-pvh FAILED] - boot-pvh: STALLED"


# --- history: merge and prune ---------------------------------------------------------------------

def _fake_night(root: Path, date: str, names: list[str], status: str = "passed") -> Path:
    night = root / date
    cells = []
    for name in names:
        d = night / "cells" / name
        d.mkdir(parents=True)
        (d / "cell.log").write_text(f"log of {name}\n")
        cells.append({"name": name, "status": status, "steps": [], "log": f"cells/{name}/cell.log"})
    nightly.write_summary(night, nightly.make_summary(date, cells, None, "nightly.yaml", 1, 10.0))
    return night


def test_merge_combines_per_job_nights_into_one_report(tmp_path: Path):
    a = _fake_night(tmp_path / "job-a", "2025-02-03", ["xen-pvh-DEBUG-2M"])
    b = _fake_night(tmp_path / "job-b", "2025-02-03", ["qemu-x64-DEBUG"], status="failed")
    out = tmp_path / "nightly"
    merged = nightly.merge([a, tmp_path / "job-b"], out)   # a night dir, and a dir searched below
    assert merged["totals"] == {"cells": 2, "passed": 1, "failed": 1}
    assert merged["merged_from"] == 2 and merged["date"] == "2025-02-03"
    night = out / "2025-02-03"
    assert (night / "cells" / "qemu-x64-DEBUG" / "cell.log").read_text() == "log of qemu-x64-DEBUG\n"
    assert json.loads((night / "summary.json").read_text())["totals"]["cells"] == 2
    assert "qemu-x64-DEBUG" in (out / "index.html").read_text()
    assert b.is_dir()  # inputs are left alone
    with pytest.raises(NightlyFailed) as info:
        nightly.nightly_command(merge_dirs=[str(a), str(b)], out=str(tmp_path / "again"))
    assert info.value.exit_code == 1


def test_merge_refuses_mixed_nights_unless_a_date_is_given(tmp_path: Path):
    a = _fake_night(tmp_path / "a", "2025-02-03", ["x"])
    b = _fake_night(tmp_path / "b", "2025-02-04", ["y"])
    with pytest.raises(OvmfgenError, match="different nights"):
        nightly.merge([a, b], tmp_path / "out")
    merged = nightly.merge([a, b], tmp_path / "out", date="2025-02-04")
    assert [c["name"] for c in merged["cells"]] == ["x", "y"]
    with pytest.raises(OvmfgenError, match="nothing to merge"):
        nightly.merge([tmp_path / "missing"], tmp_path / "out")


def test_history_keeps_the_last_n_nights(tmp_path: Path):
    for day in range(1, 6):
        _fake_night(tmp_path, f"2025-01-{day:02d}", ["c"])
    (tmp_path / "assets").mkdir()
    (tmp_path / "2025-01-09").mkdir()  # no summary: not a night, never pruned
    removed = nightly.prune_history(tmp_path, 3)
    assert [p.name for p in removed] == ["2025-01-01", "2025-01-02"]
    assert [p.name for p in nightly.night_dirs(tmp_path)] == ["2025-01-03", "2025-01-04", "2025-01-05"]
    assert (tmp_path / "assets").is_dir() and (tmp_path / "2025-01-09").is_dir()
    assert nightly.prune_history(tmp_path, 3) == []
    with pytest.raises(OvmfgenError, match="keep at least one"):
        nightly.prune_history(tmp_path, 0)


# --- reproducibility comparison -----------------------------------------------------------------

def _elf(sections: dict[str, bytes], extra_comment: bytes = b"") -> bytes:
    """A minimal ELF64 LE file: the given SHF_ALLOC sections plus a non-allocated .comment."""
    names = b"\0" + b"\0".join(n.encode() for n in [*sections, ".comment", ".shstrtab"]) + b"\0"
    body, offsets = b"", []
    for data in [*sections.values(), extra_comment, names]:
        offsets.append(64 + len(body))
        body += data
    shoff = 64 + len(body)
    count = len(sections) + 3
    head = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0,
                                                                64, count, count - 1)
    shdrs = bytes(64)
    name_off = 1
    for k, (name, data) in enumerate([*sections.items(), (".comment", extra_comment), (".shstrtab", names)]):
        flags = 0x2 if name in sections else 0
        shdrs += struct.pack("<IIQQQQIIQQ", name_off, 3 if name == ".shstrtab" else 1, flags, 0, offsets[k],
                             len(data), 0, 0, 1, 0)
        name_off += len(name) + 1
    return head + body + shdrs


def _fake_build(root: Path, dxe: bytes, dll_text: bytes = b"code", comment: bytes = b"") -> tuple[Path, Path]:
    out, dist = root / "Build" / "RELEASE_GCC5", root / "dist"
    mod = "X64/MdeModulePkg/Core/Dxe/DxeMain"
    for rel, data in {"FV/SECFV.Fv": b"sec", "FV/DXEFV.Fv": dxe, "FV/Ffs/1234DxeCore/1234.ffs": dxe,
                      "FV/Ffs/5678Sec/5678.ffs": b"sec", f"{mod}/OUTPUT/DxeCore.efi": dxe,
                      f"{mod}/DEBUG/DxeCore.efi": dxe, "X64/DxeCore.efi": dxe,
                      f"{mod}/DEBUG/DxeCore.dll": _elf({".text": dll_text, ".data": b"data"}, comment),
                      "X64/SecMain/OUTPUT/SecMain.efi": b"sec"}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    dist.mkdir(parents=True)
    (dist / "OVMF.fd").write_bytes(b"sec" + dxe)
    (dist / "manifest.json").write_text(str(root))  # differs always: not a firmware output
    return out, dist


def test_elf_alloc_sections_reads_what_the_image_holds():
    data = _elf({".text": b"\x90\xc3", ".data": b"xy"}, b"GCC: (Debian 12.2.0-14)")
    assert nightly.elf_alloc_sections(data) == {".text": b"\x90\xc3", ".data": b"xy"}
    assert nightly.elf_alloc_sections(b"MZ not an elf") is None


def test_repro_comparison_names_the_fv_and_modules_that_differ_and_why(tmp_path: Path):
    a_out, a_dist = _fake_build(tmp_path / "a", b"dxe-1", comment=b"built in /a")
    same_out, same_dist = _fake_build(tmp_path / "ccc", b"dxe-1", comment=b"built in /ccc")
    same = nightly.compare_build_outputs(a_out, same_out, a_dist, same_dist)
    assert same["identical"] and same["outputs"] == {"OVMF.fd": True} and same["modules"] == []

    # Same linked code, different PE image: the difference came from the ELF->PE conversion.
    b_out, b_dist = _fake_build(tmp_path / "bb", b"dxe-2", comment=b"built in /bb")
    diff = nightly.compare_build_outputs(a_out, b_out, a_dist, b_dist)
    assert not diff["identical"] and diff["outputs"] == {"OVMF.fd": False}
    assert diff["fvs"] == ["DXEFV.Fv"]
    assert diff["modules"] == [{"module": "DxeCore", "path": "X64/MdeModulePkg/Core/Dxe/DxeMain/OUTPUT/DxeCore.efi",
                                "cause": "pe-conversion"}]
    assert (diff["modules_total"], diff["modules_differing"], diff["ffs_differing"]) == (2, 1, 1)
    assert diff["files"] == ["X64/MdeModulePkg/Core/Dxe/DxeMain/OUTPUT/DxeCore.efi", "FV/Ffs/1234DxeCore/1234.ffs"]
    detail = nightly.repro_detail(diff)
    assert detail.startswith("OVMF.fd differ; FVs DXEFV; 1 of 2 EFI modules differ (DxeCore)")
    assert "GenFw" in detail

    # Different code: the compiler or linker produced something else.
    c_out, c_dist = _fake_build(tmp_path / "dddd", b"dxe-3", dll_text=b"other code")
    compiled = nightly.compare_build_outputs(a_out, c_out, a_dist, c_dist)
    assert compiled["modules"][0]["cause"] == "compiled"
    assert "1 already differ as linked ELF" in nightly.repro_detail(compiled)


# --- install layout and firmware.json -----------------------------------------------------------

def _fv_header(length: int) -> bytes:
    """A minimal valid PI firmware volume header (with its block map and checksum)."""
    head = bytearray(16 + 16) + struct.pack("<Q", length) + b"_FVH" + struct.pack("<I", 0x0004FEFF)
    head += struct.pack("<HHHBB", 0x48, 0, 0, 0, 2) + struct.pack("<II", length // 0x1000, 0x1000) + bytes(8)
    checksum = (-sum(struct.unpack("<36H", bytes(head)))) & 0xFFFF
    head[0x32:0x34] = struct.pack("<H", checksum)
    return bytes(head)


def _unified_fd(vars_size: int = 0x20000, size: int = 0x100000) -> bytes:
    varstore = _fv_header(0xE000) + b"\xff" * (vars_size - 0x48)
    code = _fv_header(size - vars_size) + b"\x90" * (size - vars_size - 0x48)
    return varstore + code


def test_split_unified_fd_finds_the_code_volume():
    fd = _unified_fd(0x84000, 0x400000)
    vars_, code = boot.split_unified_fd(fd)
    assert len(vars_) == 0x84000 and len(code) == 0x400000 - 0x84000 and vars_ + code == fd
    bad = bytearray(fd)
    bad[0x84000 + 0x32] ^= 1  # a broken checksum is not a volume
    with pytest.raises(OvmfgenError, match="no code firmware volume"):
        boot.split_unified_fd(bytes(bad))
    with pytest.raises(OvmfgenError, match="not a unified OVMF image"):
        boot.split_unified_fd(b"\0" * 0x1000)


def test_split_matches_the_debian_ovmf_pair_when_installed():
    unified, code, vars_ = (Path("/usr/share/ovmf/OVMF.fd"), Path("/usr/share/OVMF/OVMF_CODE.fd"),
                            Path("/usr/share/OVMF/OVMF_VARS.fd"))
    if not (unified.is_file() and code.is_file() and vars_.is_file()):
        pytest.skip("Debian's ovmf package is not installed")
    v, c = boot.split_unified_fd(unified.read_bytes())
    assert (v, c) == (vars_.read_bytes(), code.read_bytes())


def _installable_night(root: Path) -> tuple[dict, Path]:
    night = root / "2025-03-04"
    elf_cell, fd_cell = night / "cells" / "xen-pvh-RELEASE-2M", night / "cells" / "qemu-x64-DEBUG"
    (elf_cell / "artifacts").mkdir(parents=True)
    (fd_cell / "artifacts").mkdir(parents=True)
    (elf_cell / "artifacts" / "ovmf.elf").write_bytes(b"\x7fELF-pvh-firmware")
    (fd_cell / "artifacts" / "OVMF.fd").write_bytes(_unified_fd())
    cells = [
        {"name": "xen-pvh-RELEASE-2M", "status": "passed", "platform": "xen-pvh", "target": "RELEASE",
         "fd_size": "2M", "features": [], "description": "OVMF for Xen PVH", "manifest": {"features": {
             "debug_output": "debugcon", "timer": "lapic"}},
         "artifacts": {"ovmf.elf": "cells/xen-pvh-RELEASE-2M/artifacts/ovmf.elf"}},
        {"name": "qemu-x64-DEBUG", "status": "passed", "platform": "qemu-x64", "target": "DEBUG", "fd_size": "4M",
         "features": [], "manifest": {"features": {"debug_output": "debugcon"}},
         "artifacts": {"OVMF.fd": "cells/qemu-x64-DEBUG/artifacts/OVMF.fd"}},
        {"name": "broken", "status": "failed", "artifacts": {}},
    ]
    summary = nightly.make_summary("2025-03-04", cells, None, "nightly.yaml", 1, 1.0)
    summary["edk2"] = {"tag": "edk2-stable202502"}
    return summary, night


def test_install_lays_out_xen_and_qemu_firmware_with_descriptors(tmp_path: Path):
    summary, night = _installable_night(tmp_path / "nightly")
    specs = nightly.load_matrix(REPO / "nightly.yaml").install + (InstallSpec("broken", firmware="x/ovmf.bin"),)
    root = tmp_path / "root"
    written = nightly.install(summary, night, root, specs)
    rel = sorted(p.relative_to(root).as_posix() for p in written)
    assert rel == ["usr/lib/xen/boot/ovmf.bin", "usr/share/ovmfgen/qemu-x64/OVMF_CODE.fd",
                   "usr/share/ovmfgen/qemu-x64/OVMF_VARS.fd", "usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json",
                   "usr/share/qemu/firmware/70-ovmfgen-qemu-x64.json"]  # the failed cell is not installed
    assert (root / "usr/lib/xen/boot/ovmf.bin").read_bytes() == b"\x7fELF-pvh-firmware"
    assert oct((root / "usr/lib/xen/boot/ovmf.bin").stat().st_mode & 0o777) == "0o644"
    v, c = boot.split_unified_fd(_unified_fd())
    assert (root / "usr/share/ovmfgen/qemu-x64/OVMF_CODE.fd").read_bytes() == c
    assert (root / "usr/share/ovmfgen/qemu-x64/OVMF_VARS.fd").read_bytes() == v

    xen = json.loads((root / "usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json").read_text())
    assert xen["interface-types"] == ["uefi"]
    assert xen["mapping"] == {"device": "kernel", "filename": "/usr/lib/xen/boot/ovmf.bin"}
    assert xen["targets"] == [{"architecture": "x86_64", "machines": ["pc-i440fx-*"]}]
    assert xen["features"] == []  # RELEASE: no debug log
    assert "xen-pvh-elf" in xen["tags"] and "edk2=edk2-stable202502" in xen["tags"]
    assert "OVMF for Xen PVH" in xen["description"] and "2025-03-04" in xen["description"]
    qemu = json.loads((root / "usr/share/qemu/firmware/70-ovmfgen-qemu-x64.json").read_text())
    assert qemu["mapping"] == {
        "device": "flash",
        "executable": {"filename": "/usr/share/ovmfgen/qemu-x64/OVMF_CODE.fd", "format": "raw"},
        "nvram-template": {"filename": "/usr/share/ovmfgen/qemu-x64/OVMF_VARS.fd", "format": "raw"}}
    assert qemu["features"] == ["verbose-dynamic"]  # DEBUG, log on the debug console (port 0x402)


def test_firmware_descriptor_has_exactly_the_schema_members():
    """The members of QEMU's docs/interop/firmware.json @Firmware, with values from its enums."""
    cell = {"platform": "xen-pvh", "target": "DEBUG", "fd_size": "2M",
            "features": ["debug_output=hypervisor-console"]}
    d = nightly.firmware_descriptor("kernel", "x", {"firmware": "/usr/lib/xen/boot/ovmf.bin"}, cell)
    assert list(d) == ["description", "interface-types", "mapping", "targets", "features", "tags"]
    assert set(d["interface-types"]) <= {"bios", "openfirmware", "uboot", "uefi"}
    assert d["mapping"]["device"] in ("flash", "kernel", "memory")
    assert d["features"] == []  # the log goes to Xen's console (port 0xe9), not the 0x402 debugcon
    assert "feature:debug_output=hypervisor-console" in d["tags"]
    with pytest.raises(OvmfgenError, match="unknown firmware mapping"):
        nightly.firmware_descriptor("rom", "x", {}, cell)


# --- CI workflows ----------------------------------------------------------------------------------

def test_github_workflow_has_a_job_per_cell_and_a_merging_report_job(tmp_path: Path):
    m = nightly.load_matrix(REPO / "nightly.yaml")
    cells = nightly.select_cells(m)
    path = nightly.emit("github", m, cells, tmp_path / "wf.yml")
    text = path.read_text()
    assert "&id" not in text and "!!" not in text   # no anchors, no explicit tags
    wf = yaml.safe_load(text)
    jobs = wf["jobs"]
    cell_jobs = {k: v for k, v in jobs.items() if k.startswith("cell-")}
    assert sorted(v["name"] for v in cell_jobs.values()) == sorted(c.name for c in cells)
    for job in cell_jobs.values():
        run = next(s["run"] for s in job["steps"] if "invoke nightly" in s.get("run", ""))
        assert f"--cell {job['name']} " in run and "--repro none" in run and "${{ needs.date.outputs.date }}" in run
        assert job["timeout-minutes"] == 120
    assert "--repro-only" in json.dumps(jobs["reproducibility"])
    report = jobs["report"]
    assert report["if"] == "always()" and set(report["needs"]) == {"date", "reproducibility", *cell_jobs}
    assert any(s.get("run") == "invoke nightly --merge cells --out nightly" for s in report["steps"])
    # `on` is a string to GitHub (YAML 1.2); a YAML 1.1 reader like PyYAML sees the boolean True.
    triggers = wf.get("on", wf.get(True))
    assert "schedule" in triggers and "workflow_dispatch" in triggers


def test_gitlab_pipeline_has_a_job_per_cell_and_a_merging_report_job(tmp_path: Path):
    m = nightly.load_matrix(REPO / "nightly.yaml")
    cells = nightly.select_cells(m, match=["DEBUG"], exclude=["xenboot"])
    doc = yaml.safe_load(nightly.emit("gitlab", m, cells, tmp_path / "ci.yml").read_text())
    cell_jobs = [k for k in doc if k.startswith("cell-")]
    assert len(cell_jobs) == len(cells) == 3
    for name in cell_jobs:
        assert doc[name]["stage"] == "cells" and doc[name]["extends"] == ".ovmfgen-nightly"
    assert doc["report"]["stage"] == "report" and doc["report"]["script"] == ["invoke nightly --merge out --out nightly"]
    assert "when" not in doc["report"]  # GitLab rejects job-level `when` next to `rules`
    assert all(rule["when"] == "always" for rule in doc["report"]["rules"])
    with pytest.raises(OvmfgenError, match="bad --emit"):
        nightly.emit("jenkins", m, cells, tmp_path / "x")


# --- QEMU shell boot helpers ---------------------------------------------------------------------

def test_startup_script_never_contains_the_marker_itself():
    script = boot.startup_script()
    assert boot.SHELL_MARKER not in script
    assert script.startswith("@echo -off") and "reset -s" in script


def test_shell_boot_classification():
    ok = f"\x1b[0mPress ESC in 1 seconds\r\n\x1b[1m{boot.SHELL_MARKER}\x1b[0m\r\nReset with"
    assert boot.classify_shell_boot(ok, "")[0] == "SHELL_REACHED"
    echoed = f"Shell> echo {boot.SHELL_MARKER}\r\n"  # a command line mentioning it is not the output
    assert boot.classify_shell_boot(echoed, "", timed_out=True)[0] == "TIMEOUT"
    assert boot.classify_shell_boot("", "ASSERT [DxeCore] x.c(1): y\n")[0] == "FIRMWARE_ERROR"
    verdict, detail = boot.classify_shell_boot("UEFI Interactive Shell v2.2", "", returncode=0)
    assert verdict == "QEMU_FAILED" and "the Shell started" in detail


def test_shell_qemu_argv_uses_pflash_a_fat_disk_and_tcg():
    argv = boot.shell_qemu_argv(Path("/f/CODE.fd"), Path("/f/VARS.fd"), Path("/f/disk.img"), Path("/f/s.log"),
                                Path("/f/d,1.log"))
    text = " ".join(argv)
    assert "-accel tcg" in text and "kvm" not in text
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/f/CODE.fd" in argv
    assert "if=pflash,format=raw,unit=1,file=/f/VARS.fd" in argv
    assert "if=virtio,format=raw,file=/f/disk.img" in argv
    assert "file:/f/s.log" in argv and "file:/f/d,,1.log" in argv


@pytest.mark.skipif(shutil.which("mkfs.fat") is None or shutil.which("mcopy") is None,
                    reason="dosfstools/mtools not installed (invoke setup installs them)")
def test_fat_image_holds_the_startup_script(tmp_path: Path):
    img = boot.make_fat_image(tmp_path / "disk.img", {"startup.nsh": boot.startup_script().encode()})
    assert img.stat().st_size == boot.FAT_IMAGE_KIB * 1024
    from ovmfgen.run import run

    out = run(["mtype", "-i", str(img), "::/startup.nsh"], env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.replace("\r", "") == boot.startup_script().replace("\r", "")


# --- the qemu-x64 platform -------------------------------------------------------------------------

def test_qemu_x64_shares_the_common_fragments_and_lists_its_deltas():
    from ovmfgen.platform.load import load_platform
    from ovmfgen.platform.model import Block, Field, LibraryMapping

    text = (REPO / "platforms" / "qemu-x64.yaml").read_text()
    assert text.count("- use: fv-attributes") == 4 and "- use: ovmf-rules" in text and "- use: timer-library" in text
    p = load_platform("qemu-x64")
    assert (p.dsc_path, p.fdf_path) == ("OvmfPkg/QemuOvmfX64.dsc", "OvmfPkg/QemuOvmfX64.fdf")
    assert p.header_field("PLATFORM_NAME") == "QemuOvmfX64" and p.header_field("OUTPUT_DIRECTORY") == "Build/QemuOvmfX64"
    assert p.upstream is not None and p.upstream.dsc == "OvmfPkg/OvmfPkgX64.dsc"
    assert p.elf is None and p.feature("timer") == "acpi" and p.feature("fd_size") == "4"
    assert sorted(d.subject for d in p.deltas) == ["FLASH_DEFINITION", "OUTPUT_DIRECTORY", "PLATFORM_NAME"]
    assert all(d.reason for d in p.deltas)
    # The fragments expanded: every FV declares the shared attributes, the shared rules are there
    # (plus the two SMM rules only this platform has), the ACPI timer comes from timer-library.
    fvs = [s for s in p.fdf if s.kind == "FV"]
    assert len(fvs) == 4
    for fv in fvs:
        assert Field("ERASE_POLARITY", "1") in fv.body and Field("READ_LOCK_STATUS", "TRUE") in fv.body
    rules = [s.header for s in p.fdf if s.kind == "Rule"]
    assert rules[0] == "Rule.Common.SEC" and rules[-2:] == ["Rule.Common.SMM_CORE", "Rule.Common.DXE_SMM_DRIVER"]
    assert all(isinstance(s.body[0], Block) for s in p.fdf if s.kind == "Rule")
    lib = next(s for s in p.dsc if s.header == "LibraryClasses")
    assert LibraryMapping("TimerLib", "OvmfPkg/Library/AcpiTimerLib/BaseAcpiTimerLib.inf") in lib.body


def test_qemu_x64_matches_upstream_but_for_its_listed_deltas():
    """`invoke diff --platform qemu-x64 --against edk2/OvmfPkg/OvmfPkgX64.dsc` exits 0 (needs the edk2 tree)."""
    from ovmfgen.edk2.tree import locate
    from ovmfgen.platform.load import load_platform
    from ovmfgen.platform.diff import diff_platform
    from ovmfgen.platform.validate import validate

    try:
        tree = locate().root
    except OvmfgenError as exc:
        pytest.skip(f"no edk2 tree: {exc.message}")
    p = load_platform("qemu-x64")
    validate(p, tree)
    per_config, unexplained, stale = diff_platform(p, tree / "OvmfPkg/OvmfPkgX64.dsc",
                                                   tree / "OvmfPkg/OvmfPkgX64.fdf", tree)
    assert unexplained == [] and stale == []
    default = {d.subject for d in per_config["default"]}
    assert default == {"FLASH_DEFINITION", "OUTPUT_DIRECTORY", "PLATFORM_NAME"}
