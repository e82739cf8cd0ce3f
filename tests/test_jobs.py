"""Running cells as processes: results, logs, crashes, the jobs budget, status lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ovmfgen.nightly import jobs as nightly_jobs


def _py_job(tmp: Path, label: str, code: str) -> nightly_jobs._Job:
    out = tmp / label
    return nightly_jobs._Job(label, [sys.executable, "-c", code], out)


def test_run_jobs_collects_results_logs_and_crashes(tmp_path: Path):
    ok_code = ("import json, pathlib, sys; print('hello from the cell'); "
               "pathlib.Path('{d}/result.json').write_text(json.dumps({{'name': 'good', 'status': 'passed'}}))")
    good = nightly_jobs._Job("good", [], tmp_path / "good")
    good.argv = [sys.executable, "-c", ok_code.format(d=good.out_dir)]
    crash = _py_job(tmp_path, "crash", "import sys; print('about to die'); sys.exit(3)")
    seen = []
    results = nightly_jobs.run_jobs([good, crash], 2, quiet=True, on_done=lambda j, r: seen.append(j.label))
    assert results["good"] == {"name": "good", "status": "passed"}
    assert results["crash"]["status"] == "failed"
    assert "exited with status 3" in results["crash"]["error"] and "about to die" in results["crash"]["error"]
    assert "hello from the cell" in (good.out_dir / "cell.log").read_text()
    assert sorted(seen) == ["crash", "good"]


def test_run_jobs_runs_within_the_jobs_budget(tmp_path: Path):
    def jobs():
        return [_py_job(tmp_path, f"s{i}", "import time; time.sleep(1.0)") for i in range(2)]

    t0 = time.monotonic()
    nightly_jobs.run_jobs(jobs(), 2, quiet=True)
    parallel = time.monotonic() - t0
    t0 = time.monotonic()
    nightly_jobs.run_jobs(jobs(), 1, quiet=True)
    serial = time.monotonic() - t0
    assert serial >= 2.0
    assert parallel < serial - 0.6



def test_status_line_names_each_step():
    rec = {"name": "c", "status": "failed", "seconds": 12.0, "error": "boot-pvh: STALLED\nmore",
           "steps": [{"name": "build", "status": "passed", "noop": True}, {"name": "boot-pvh", "status": "failed"}]}
    assert nightly_jobs.status_line(rec) == "c: FAILED in 12 s [build ok (no-op), boot-pvh FAILED] - boot-pvh: STALLED"
