"""CI workflow emission: GitHub and GitLab, one job per cell and a merging report job."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly import emit, matrix
from ovmfgen.run import run



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
    cells = matrix.select_cells(m, match=["DEBUG"], exclude=["hvcon-xen", "secure-boot-xen", "maxcpus-64-xen",
                                                            "edk2-master", "tpm2-xen"])
    doc = yaml.safe_load(emit.emit("gitlab", m, cells, tmp_path / "ci.yml").read_text())
    cell_jobs = [k for k in doc if k.startswith("cell-")]
    assert len(cell_jobs) == len(cells) == 5
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


# --- the emitted files against the CI engines' own schemas (check-jsonschema's vendored copies, offline) ---

SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}


def _check_jsonschema(kind: str, path: Path) -> tuple[int, str]:
    proc = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMAS[kind], str(path)], check=False)
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_emitted_workflows_validate_against_the_official_schema(tmp_path: Path, kind: str):
    m = matrix.load_matrix(REPO / "nightly.yaml")
    path = emit.emit(kind, m, list(m.cells), tmp_path / f"{kind}.yml")  # every cell, optional ones too
    code, out = _check_jsonschema(kind, path)
    assert code == 0 and "ok -- validation done" in out, out
    # The check can fail: a job without what the schema requires is refused.
    doc = yaml.safe_load(path.read_text())
    job = next(k for k in (doc["jobs"] if kind == "github" else doc) if k.startswith("cell-"))
    if kind == "github":
        del doc["jobs"][job]["runs-on"]
    else:
        doc[job]["artifacts"]["when"] = "sometimes"  # on_success, on_failure or always
    broken = tmp_path / f"broken-{kind}.yml"
    broken.write_text(yaml.safe_dump(doc))
    code, out = _check_jsonschema(kind, broken)
    assert code != 0 and "Schema validation errors" in out, out


def test_every_file_the_github_workflow_hashes_exists():
    m = matrix.load_matrix(REPO / "nightly.yaml")
    text = emit.github_workflow(m, list(m.cells))
    calls = re.findall(r"hashFiles\(([^)]*)\)", text)
    assert calls, "the workflow keys a cache on hashFiles(...)"
    for call in calls:
        patterns = re.findall(r"'([^']*)'", call)
        assert patterns, call
        for pattern in patterns:
            assert sorted(REPO.glob(pattern)), f"hashFiles('{pattern}') matches no file in the repository"
