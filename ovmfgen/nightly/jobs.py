"""Running the matrix: one process per cell (``python -m ovmfgen.nightly.cell``), at most ``jobs`` at a time."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovmfgen import paths
from ovmfgen.nightly.history import CELL_LOG, RESULT
from ovmfgen.nightly.matrix import Cell
from ovmfgen.nightly.records import CellRecord
from ovmfgen.run import DEVNULL, PIPE, STDOUT, Process, popen, stop, wait


@dataclass
class _Job:
    """A cell (or the reproducibility check) running in its own process."""

    label: str
    argv: list[str]
    out_dir: Path
    proc: Process[str] | None = None
    reader: threading.Thread | None = None
    started: float = 0.0


def _child_argv(kind: str, cell: Cell, out_dir: Path, threads: int | None) -> list[str]:
    argv = [sys.executable, "-m", "ovmfgen.nightly.cell", kind, "--spec", json.dumps(cell.to_json(), sort_keys=True),
            "--dir", str(out_dir)]
    if threads:
        argv += ["--threads", str(threads)]
    return argv


def _pump(job: _Job, quiet: bool, lock: threading.Lock) -> None:
    """Copy a child's output to its log (and, unless quiet, to stderr prefixed with the cell)."""
    assert job.proc is not None and job.proc.stdout is not None
    with open(job.out_dir / CELL_LOG, "a", encoding="utf-8", errors="replace") as log:
        for line in job.proc.stdout:
            log.write(line)
            log.flush()
            if not quiet:
                with lock:
                    sys.stderr.write(f"[{job.label}] {line}")
                    sys.stderr.flush()


def _failed_record(job: _Job, why: str) -> CellRecord:
    tail = ""
    try:
        tail = "\n".join((job.out_dir / CELL_LOG).read_text(errors="replace").splitlines()[-5:])
    except OSError:
        pass
    return {"name": job.label, "status": "failed", "error": why + (f"; log tail: {tail}" if tail else ""),
            "steps": [], "failed_steps": ["process"], "seconds": round(time.monotonic() - job.started, 1)}


def run_jobs(jobs: Sequence[_Job], parallel: int, quiet: bool,
             on_done: Callable[[_Job, Any], None] | None = None) -> dict[str, Any]:
    """Run the jobs' processes, ``parallel`` at a time; every job yields a record (a crash too).

    Returns each job's ``result.json`` by label, as read: a ``CellRecord``, or the ``ReproRecord`` of
    the reproducibility job (``_failed_record`` when the process left none).
    """
    pending = list(jobs)
    running: list[_Job] = []
    results: dict[str, Any] = {}
    lock = threading.Lock()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        while pending or running:
            while pending and len(running) < max(1, parallel):
                job = pending.pop(0)
                job.out_dir.mkdir(parents=True, exist_ok=True)
                (job.out_dir / RESULT).unlink(missing_ok=True)
                (job.out_dir / CELL_LOG).write_text("", encoding="utf-8")
                job.started = time.monotonic()
                job.proc = popen(job.argv, cwd=paths.REPO_ROOT, env=env, stdin=DEVNULL,
                                 stdout=PIPE, stderr=STDOUT, errors="replace", bufsize=1)
                job.reader = threading.Thread(target=_pump, args=(job, quiet, lock), daemon=True)
                job.reader.start()
                running.append(job)
            for job in list(running):
                assert job.proc is not None
                if job.proc.poll() is None:
                    continue
                running.remove(job)
                if job.reader is not None:
                    job.reader.join()
                try:
                    record = json.loads((job.out_dir / RESULT).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    record = _failed_record(job, f"the cell process exited with status {job.proc.returncode} "
                                                 f"without a result")
                results[job.label] = record
                if on_done is not None:
                    on_done(job, record)
            time.sleep(0.2)
    except BaseException:
        # SIGINT, not SIGTERM: a cell's build then stops its stuart child and releases the workspace.
        for job in running:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
        for job in running:
            if job.proc is not None:
                if wait(job.proc, 30) is None:
                    stop(job.proc, signals=(signal.SIGKILL,))
        raise
    return results


def status_line(record: CellRecord) -> str:
    """One line for a finished cell: status, time, and each step's outcome."""
    parts = []
    for step in record.get("steps") or []:
        mark = "ok" if step["status"] == "passed" else "FAILED"
        extra = " (no-op)" if step.get("noop") else ""
        parts.append(f"{step['name']} {mark}{extra}")
    line = f"{record.get('name')}: {str(record.get('status')).upper()} in {record.get('seconds', 0):.0f} s"
    if parts:
        line += " [" + ", ".join(parts) + "]"
    if record.get("status") != "passed" and record.get("error"):
        line += f" - {str(record['error']).splitlines()[0][:200]}"
    return line
