"""A nightly cell of an edk2 checkout (ovmfgen.nightly.upstream, the cell's steps before its build, the night
around it): its view of upstream on a checkout mirrored from edk2-stable202605 with upstream-like edits
(helpers.shadow_tree), a checkout that is missing or cannot be set up, and what the report and the emitted
CI workflows make of it. The real run is the optional cell itself (``invoke nightly --cell
xen-pvh-DEBUG-2M-edk2-master`` with ``$OVMFGEN_EDK2_UPSTREAM`` set) and tests/integration/test_checkout.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import REPO, matrix_of, shadow_tree
from ovmfgen.builder import command as build_cmd
from ovmfgen.nightly import cell as cellmod
from ovmfgen.nightly import command, emit, report, upstream
from ovmfgen.nightly.command import NightlyFailed, Options
from ovmfgen.nightly.matrix import Cell, Checkout, load_matrix
from ovmfgen.paths import Layout
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.resolve import resolved

LATER = "edk2-stable202605-3-g5ccd4da"
SERIAL = (b"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|FALSE",
          b"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|TRUE")
NOCHECK_FIX = ("OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf",
               (b"  DebugPrintErrorLevelLib\r\n", b"  DebugPrintErrorLevelLib\r\n  MemDebugLogLib\r\n"))
CELL = Cell(name="xen-pvh-DEBUG-2M-edk2-master", platform="xen-pvh", fd_size="2M",
            checkout=Checkout(env="OVMFGEN_EDK2_UPSTREAM"))


@pytest.fixture
def checkout(tmp_path: Path, edk2_tree_202605):
    """What tests/integration/checkout.py makes, mirrored: the changed PCD and upstream's fix of the Nocheck INF."""
    return shadow_tree(edk2_tree_202605, tmp_path / "edk2", LATER,
                       {"OvmfPkg/OvmfXen.dsc": SERIAL, NOCHECK_FIX[0]: NOCHECK_FIX[1]})


def _fake_build(tmp_path: Path, built: list):
    def build(r):
        built.append(r)
        dist = tmp_path / "dist"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "ovmf.elf").write_bytes(b"elf")
        (dist / "manifest.json").write_text("{}")
        return build_cmd.BuildResult(dist, {"fd_size": "2M"}, noop=False, seconds=1.0)
    return build


def test_the_cell_shows_the_drift_and_the_rebase_before_its_build(tmp_path: Path, checkout, edk2_tree_202605,
                                                                   monkeypatch) -> None:
    monkeypatch.setenv("OVMFGEN_EDK2", "restored-after-the-test")
    cell = Cell(**{**CELL.__dict__, "checkout": Checkout(env="OVMFGEN_EDK2_UPSTREAM", root=str(checkout.root))})
    # The checkout's setup, and the release the rebase starts from, as a real set-up checkout finds them.
    monkeypatch.setattr(upstream, "ensure_edk2", lambda tag: (checkout, True))
    monkeypatch.setattr(upstream, "locate", lambda tag: edk2_tree_202605 if tag == edk2_tree_202605.tag else None)
    # The cell's request resolved on the mirrored checkout (its setup made it the default tree).
    monkeypatch.setattr(cellmod, "resolve", lambda req: resolved(load_platform("xen-pvh", edk2=LATER), checkout,
                                                                   request=req))
    built: list = []
    monkeypatch.setattr(cellmod.build_cmd, "build", _fake_build(tmp_path, built))
    monkeypatch.setattr(cellmod.elf, "check_elf", lambda data: [])
    cell_dir = tmp_path / "night" / "cells" / cell.name
    record = cellmod.run_cell(cell, cell_dir)
    assert [s["name"] for s in record["steps"]] == ["setup", "drift", "rebase", "build", "check-elf"]
    assert record["status"] == "passed" and record["edk2"] == LATER
    assert len(built) == 1 and built[0].tree is checkout   # resolved once: the drift's resolve is the build's
    up = record["upstream"]
    assert (up["tree"], up["checkout"], up["root"]) == (LATER, "$OVMFGEN_EDK2_UPSTREAM", str(checkout.root))
    assert up["unexplained"] == ["PCDs: gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: TRUE -> FALSE"]
    assert up["against"] == "OvmfPkg/OvmfXen.dsc/.fdf" and up["stale"] == []
    # The 202605-only Nocheck patch upstream made unnecessary: left out, with the two deltas that go with it.
    assert [line.split(": note: ")[1].split(",")[0].split(" does not")[0] for line in up["carried"]] == [
        "override patch overrides/xen-pvh/patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch",
        "override patch overrides/xen-pvh/patches/PlatformBootManagerLib-Shell-boot-option.patch",
        f"delta file {NOCHECK_FIX[0]}", "delta library MemDebugLogLib",
        "delta file OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"]
    assert [("still" in line) for line in up["carried"]] == [False, True, False, False, True]
    rebase = up["rebase"]
    assert (rebase["base"], rebase["status"], rebase["changes"], rebase["conflicts"]) == (
        "edk2-stable202605", "clean", ["changed PCD gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial"], [])
    change = (tmp_path / "night" / rebase["diff"]).read_text()
    assert '+      - when: {edk2: "> edk2-stable202605"}' in change and change.startswith("--- a/platforms/xen-pvh.yaml")
    text = (tmp_path / "night" / up["text"]).read_text()
    assert "  ! PCDs: gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: TRUE -> FALSE\n" in text
    assert "invoke rebase from edk2-stable202605 (dry run): merges cleanly from edk2-stable202605: 1 change(s)" in text
    assert "invoke diff's whole report:\nDefines:" in text
    steps = {s["name"]: s["detail"] for s in record["steps"]}
    assert steps["drift"] == (f"1 unexplained difference(s) against OvmfPkg/OvmfXen.dsc/.fdf of {LATER}; carried "
                              "fixes: 2 still needed, 3 left out")


def test_an_override_master_broke_fails_the_build_and_is_the_rebase_conflict(tmp_path: Path, edk2_tree_202605,
                                                                            monkeypatch) -> None:
    # Upstream rewrote the lines xen-pvh's SEC patch (for every tree) changes: the platform no longer resolves
    # for the checkout, so the drift and the build fail in one line; the rebase preview still runs and names
    # the override as its conflict, at the platform's line.
    monkeypatch.setenv("OVMFGEN_EDK2", "restored-after-the-test")
    sec = (b"EFI_PEI_TEMPORARY_RAM_SUPPORT_PPI  mTemporaryRamSupportPpi = {",
           b"EFI_PEI_TEMPORARY_RAM_SUPPORT_PPI  mTempRamSupportPpi = {")
    broken = shadow_tree(edk2_tree_202605, tmp_path / "edk2", LATER, {"OvmfPkg/Sec/SecMain.c": sec})
    cell = Cell(**{**CELL.__dict__, "checkout": Checkout(env="OVMFGEN_EDK2_UPSTREAM", root=str(broken.root))})
    monkeypatch.setattr(upstream, "ensure_edk2", lambda tag: (broken, False))
    monkeypatch.setattr(upstream, "locate", lambda tag: edk2_tree_202605 if tag == edk2_tree_202605.tag else None)
    monkeypatch.setattr(cellmod, "resolve", lambda req: resolved(load_platform("xen-pvh", edk2=LATER), broken,
                                                                   request=req))
    record = cellmod.run_cell(cell, tmp_path / "night" / "cells" / cell.name)
    status = {s["name"]: s["status"] for s in record["steps"]}
    assert status == {"setup": "passed", "drift": "failed", "rebase": "passed", "build": "failed"}
    line = (REPO / "platforms/xen-pvh.yaml").read_text().splitlines().index(
        "  - patch: patches/Sec-PEI-PPI-list-at-run-time.patch") + 1
    where = f"platforms/xen-pvh.yaml:{line}:5"
    assert record["error"].startswith(f"{where}: error: override patch overrides/xen-pvh/patches/"
                                      f"Sec-PEI-PPI-list-at-run-time.patch does not apply to {LATER}: ")
    rebase = record["upstream"]["rebase"]
    assert rebase["status"] == "conflicts" and rebase["conflicts"][0].startswith(f"{where}: conflict: override patch ")
    assert "1 conflict(s) from edk2-stable202605" in (tmp_path / "night" / record["upstream"]["text"]).read_text()


def test_a_checkout_past_a_later_release_is_no_rebase_to_preview(tmp_path: Path, edk2_tree_202605) -> None:
    later = shadow_tree(edk2_tree_202605, tmp_path / "edk2", "edk2-stable202611-4-gabcdef1", {})
    record: dict = {}
    ok, detail, _ = upstream.rebase(CELL, later, Layout(), tmp_path / "night" / "cells" / "c", record)
    assert ok and record["upstream"]["rebase"]["status"] == "none"
    assert detail == ("no rebase from edk2-stable202605: edk2-stable202611-4-gabcdef1 is a checkout past "
                      "edk2-stable202611, but platforms/xen-pvh.yaml is written for edk2-stable202605: rebase to "
                      "edk2-stable202611 first, then to the checkout")


def test_a_checkout_that_cannot_be_set_up_stops_its_cell_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OVMFGEN_EDK2", "restored-after-the-test")
    root = tmp_path / "edk2"
    (root / "OvmfPkg").mkdir(parents=True)     # an edk2 tree by the look of it, without its submodules or git
    cell = Cell(**{**CELL.__dict__, "checkout": Checkout(env="OVMFGEN_EDK2_UPSTREAM", root=str(root))})
    record = cellmod.run_cell(cell, tmp_path / "night" / "cells" / cell.name)
    assert record["status"] == "failed" and [s["name"] for s in record["steps"]] == ["setup"]
    assert record["error"].startswith(f"{root} lacks submodules the firmware needs: run `git -C {root} submodule "
                                      "update --init ")


def test_a_missing_checkout_is_one_located_line_and_the_other_cells_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OVMFGEN_EDK2_UPSTREAM", raising=False)
    m = load_matrix(REPO / "nightly.yaml")
    cell = m.cell("xen-pvh-DEBUG-2M-edk2-master")
    other = Cell(name="broken", platform="no-such-platform")
    opts = Options(out=tmp_path / "nightly", date="2026-06-10", quiet=True, repro="none")
    summary = command.run_night(m, [cell, other], opts)
    by = {c["name"]: c for c in summary["cells"]}
    line = by[cell.name]["error"]
    text = (REPO / "nightly.yaml").read_text().splitlines()
    row = text.index("    edk2: {env: OVMFGEN_EDK2_UPSTREAM, branch: master}") + 1
    assert line == (f"nightly.yaml:{row}:17: error: edk2 checkout: $OVMFGEN_EDK2_UPSTREAM is not set (point it at "
                    "an edk2 checkout: git clone --recurse-submodules https://github.com/tianocore/edk2.git DIR)")
    assert by[cell.name]["failed_steps"] == ["checkout"] and by[cell.name]["status"] == "failed"
    assert "unknown platform 'no-such-platform'" in by["broken"]["error"]   # the other cell ran
    night = tmp_path / "nightly" / "2026-06-10"
    assert (night / by[cell.name]["log"]).read_text() == line + "\n"
    assert "$OVMFGEN_EDK2_UPSTREAM is not set" in (tmp_path / "nightly" / "index.html").read_text()
    with pytest.raises(NightlyFailed):
        command._raise_on_failures(summary)


def test_a_relative_path_is_taken_from_the_matrix_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "edk2" / "OvmfPkg").mkdir(parents=True)
    path = tmp_path / "conf" / "nightly.yaml"
    path.write_text("cells:\n  - {name: c, platform: xen-pvh, edk2: {path: ../edk2}}\n"
                    "  - {name: d, platform: xen-pvh, edk2: {path: edk2}}\n")
    m = load_matrix(path)
    ready, missing = command.locate_checkouts(m, m.cells, tmp_path / "night")
    assert [(c.name, c.checkout.root) for c in ready] == [("c", str((tmp_path / "edk2").resolve()))]
    assert missing["d"]["error"] == f"{path}:3:47: error: edk2 checkout edk2: no such directory"


def test_the_report_has_an_upstream_section_for_a_checkout_cell(tmp_path: Path) -> None:
    rec = {"name": "c", "platform": "xen-pvh", "status": "passed", "steps": [], "upstream": {
        "tree": LATER, "commit": "5ccd4da1e54e3fc062f6e9f755e7835f86a8cccd", "date": "2026-06-03",
        "checkout": "$OVMFGEN_EDK2_UPSTREAM", "root": "/srv/edk2", "against": "OvmfPkg/OvmfXen.dsc/.fdf",
        "unexplained": ["PCDs: Pcd<X>: TRUE -> FALSE"], "stale": [], "carried": ["p.yaml:1:5: note: override kept"],
        "text": "cells/c/upstream.txt",
        "rebase": {"base": "edk2-stable202605", "status": "conflicts", "detail": "1 conflict(s)", "changes": [],
                   "conflicts": ["p.yaml:9:9: conflict: upstream changed PCD X"]}}}
    page = report.render_index([{"date": "2026-06-10", "cells": [rec], "totals": {"cells": 1, "passed": 1, "failed": 0}}])
    section = page[page.index("<h2>Upstream"):]
    assert f"<code>{LATER}</code>" in section and "commit 5ccd4da1e54e, 2026-06-03" in section
    assert "1 unexplained difference(s)" in section and "<code>! PCDs: Pcd&lt;X&gt;: TRUE -&gt; FALSE</code>" in section
    assert '<li class="bad"><code>p.yaml:9:9: conflict: upstream changed PCD X</code></li>' in section
    assert 'href="2026-06-10/cells/c/upstream.txt"' in section
    plain = {**rec}
    plain.pop("upstream")
    assert "<h2>Upstream" not in report.render_index([{"date": "2026-06-10", "cells": [plain]}])


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_the_emitted_workflow_clones_edk2_for_the_checkout_cell(tmp_path: Path, kind: str) -> None:
    m = load_matrix(REPO / "nightly.yaml")
    cells = [m.cell("xen-pvh-DEBUG-2M-edk2-master"), m.cell("xen-pvh-DEBUG-2M")]
    doc = yaml.safe_load(emit.emit(kind, m, cells, tmp_path / "wf.yml").read_text())
    jobs = doc["jobs"] if kind == "github" else doc
    job = jobs["cell-xen-pvh-debug-2m-edk2-master"]
    runs = [s.get("run", "") for s in job["steps"]] if kind == "github" else job["script"]
    clone = next(r for r in runs if r.startswith("git clone"))
    export = ('echo "OVMFGEN_EDK2_UPSTREAM=$PWD/edk2-checkout" >> "$GITHUB_ENV"' if kind == "github"
              else 'export OVMFGEN_EDK2_UPSTREAM="$CI_PROJECT_DIR/edk2-checkout"')
    assert clone == ("git clone --recurse-submodules --filter=blob:none --branch master "
                     f"https://github.com/tianocore/edk2.git edk2-checkout && {export}")
    # The rebase preview starts from the release xen-pvh is written for; the clone comes before the cell runs.
    assert "invoke setup --edk2 edk2-stable202605" in runs
    nightly = next(i for i, r in enumerate(runs) if "invoke nightly" in r)
    assert runs.index(clone) < nightly and "--cell xen-pvh-DEBUG-2M-edk2-master" in runs[nightly]
    plain = jobs["cell-xen-pvh-debug-2m"]
    assert not any("git clone" in (s.get("run", "") if kind == "github" else s)
                   for s in (plain["steps"] if kind == "github" else plain["script"]))


def test_a_checkout_path_is_cloned_where_the_matrix_says(tmp_path: Path) -> None:
    m = matrix_of([{"name": "c", "platform": "xen-pvh", "edk2": {"path": "../edk2-main", "branch": "stable/2026"}}])
    steps = emit._tree_setup(m.cells[0], "ci/nightly.yaml")
    assert steps[0]["run"] == ("git clone --recurse-submodules --filter=blob:none --branch stable/2026 "
                               "https://github.com/tianocore/edk2.git edk2-main")
    assert json.dumps(steps).count("GITHUB_ENV") == 0
