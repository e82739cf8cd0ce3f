"""CI workflow emission: GitHub and GitLab, one job per cell and a merging report job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly import emit, matrix

REPO = Path(__file__).resolve().parent.parent


def test_github_workflow_has_a_job_per_cell_and_a_merging_report_job(tmp_path: Path):
    m = matrix.load_matrix(REPO / "nightly.yaml")
    cells = matrix.select_cells(m)
    path = emit.emit("github", m, cells, tmp_path / "wf.yml")
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
    m = matrix.load_matrix(REPO / "nightly.yaml")
    cells = matrix.select_cells(m, match=["DEBUG"], exclude=["xenboot"])
    doc = yaml.safe_load(emit.emit("gitlab", m, cells, tmp_path / "ci.yml").read_text())
    cell_jobs = [k for k in doc if k.startswith("cell-")]
    assert len(cell_jobs) == len(cells) == 4
    for name in cell_jobs:
        assert doc[name]["stage"] == "cells" and doc[name]["extends"] == ".ovmfgen-nightly"
    # The cell on another edk2 tree sets that tree up first.
    new = doc["cell-xen-pvh-debug-2m-edk2-stable202605"]["script"]
    assert new[0] == "invoke setup --edk2 edk2-stable202605" and "--cell xen-pvh-DEBUG-2M-edk2-stable202605" in new[1]
    assert not any("--edk2" in line for line in doc["cell-xen-pvh-debug-2m"]["script"])
    assert doc["report"]["stage"] == "report" and doc["report"]["script"] == ["invoke nightly --merge out --out nightly"]
    assert "when" not in doc["report"]  # GitLab rejects job-level `when` next to `rules`
    assert all(rule["when"] == "always" for rule in doc["report"]["rules"])
    with pytest.raises(OvmfgenError, match="bad --emit"):
        emit.emit("jenkins", m, cells, tmp_path / "x")
