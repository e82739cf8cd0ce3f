"""Running cells as processes: results, logs, crashes, the jobs budget, status lines."""

from __future__ import annotations

import sys
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
    """Two jobs overlap with a budget of 2 and never with a budget of 1 (from their own clocks, not ours)."""
    # Each job records when its body ran; the sleep is long enough that two started together overlap
    # even on a loaded machine, and overlap itself is what is asserted, not elapsed time.
    code = ("import pathlib, time, sys; t0 = time.monotonic(); time.sleep(1.5); "
            "pathlib.Path(sys.argv[1]).write_text(f'{t0} {time.monotonic()}')")

    def spans(budget: int) -> list[tuple[float, float]]:
        jobs = []
        for i in range(2):
            job = _py_job(tmp_path / f"b{budget}", f"s{i}", code)
            job.argv.append(str(tmp_path / f"b{budget}-s{i}.span"))
            jobs.append(job)
        nightly_jobs.run_jobs(jobs, budget, quiet=True)
        return sorted(tuple(map(float, (tmp_path / f"b{budget}-s{i}.span").read_text().split()))
                      for i in range(2))

    (a0, a1), (b0, b1) = spans(2)
    assert b0 < a1, "with a budget of 2 the jobs ran one after the other"
    (a0, a1), (b0, b1) = spans(1)
    assert b0 >= a1, "with a budget of 1 the jobs overlapped"


def test_status_line_names_each_step():
    rec = {"name": "c", "status": "failed", "seconds": 12.0, "error": "boot-pvh: STALLED\nmore",
           "steps": [{"name": "build", "status": "passed", "noop": True}, {"name": "boot-pvh", "status": "failed"}]}
    assert nightly_jobs.status_line(rec) == "c: FAILED in 12 s [build ok (no-op), boot-pvh FAILED] - boot-pvh: STALLED"
