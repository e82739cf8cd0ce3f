"""``invoke nightly``: the firmware build matrix, its checks and boots, its history and report.

What one night does
-------------------
``nightly.yaml`` declares the cells (platform, target, FD size, features, boot tests). For each
selected cell, in its own process and at most ``--jobs`` at a time:

1. **build** - ``ovmfgen.builder`` with the compiler cache on (one ccache directory and one BaseTools
   for every cell: both come from ovmfgen's cache). A cell whose inputs are already published is a
   no-op; its artifacts (OVMF.fd, ovmf.elf, manifest.json, build.log) are linked into the night.
2. **check-elf** (cells with a PVH ELF) - every loader rule of ``ovmfgen.elf.check_elf``.
3. **boot** - ``pvh``/``reset``: QEMU to XenPlatformPei through that entry (``boot.qemu.boot_qemu``);
   ``shell``: QEMU to the UEFI Shell from pflash with a FAT disk (``boot.shell.boot_qemu_shell``);
   ``xen``: ONE nested boot of real Xen running the cell's ``xen_guests`` in turn, a verdict each
   (``xen.boot_xen_guests``; a guest of another FD size adds a build of that size; optional, slow).

One failing cell never stops the others; the exit status is the number of failed cells (capped at
100; 0 when all passed). Selection works like Fedora's edk2-build.py: ``--list``, ``--match`` and
``--exclude`` (substrings of the cell name, repeatable), ``--cell`` (an exact name, repeatable),
``--quiet`` (one status line per cell; each cell's full output is always in its ``cell.log``).
Optional cells (``optional: true``) only run when ``--match``/``--cell`` names them; cells that
``require`` a module that is not there are listed as unavailable.

Reproducibility: one cell per night (rotating through ``reproducibility.rotate`` by the date, or
``--repro CELL``) is built twice from scratch from two places (``nightly.repro``: two workspace
paths, two cache paths, with and without ccache); the night records whether the firmware outputs
are byte-identical and, if not, which FV and which FFS/EFI files differ and why. With
``reproducibility.required`` a difference fails the night.

History: ``<out>/<date>/summary.json`` (with ``cells/<name>/`` holding each cell's log, artifacts
and boot logs) and ``<out>/index.html`` (``ovmfgen.nightly.report``), keeping the last ``--keep`` nights.
The date is an input (``--date``, default today); it names the night and nothing else: no date or
time enters the firmware (its version string and release date come from the edk2 release).

Scale-out: ``--emit github|gitlab`` writes a CI workflow with one job per cell and a final job that
runs ``--merge`` over the cells' results, producing the same report; ``--install-root`` lays out
the installed firmware and its QEMU firmware descriptor for packagers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ovmfgen import paths
from ovmfgen.edk2.install import probe_checkout
from ovmfgen.platform.resolve import resolve
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import replace_dir
from ovmfgen.nightly import report
from ovmfgen.nightly.emit import emit
from ovmfgen.nightly.history import (CELL_LOG, DEFAULT_KEEP, find_summaries, failures, make_summary, parse_date,
                                     prune_history, write_summary)
from ovmfgen.nightly.install import install
from ovmfgen.nightly.jobs import _child_argv, _Job, run_jobs, status_line
from ovmfgen.nightly.matrix import (DEFAULT_MATRIX, Cell, Matrix, list_text, load_matrix, on_tree,
                                    repro_cell_for, select_cells)
from ovmfgen.nightly.records import CellRecord, ReproRecord, StepRecord, Summary
from ovmfgen.platform.reads import BadFeatureValue, UnreadSwitch
from ovmfgen.ui import say

DEFAULT_OUT = paths.REPO_ROOT / "nightly"
MAX_EXIT = 100


def merge(inputs: Sequence[str | Path], out: Path, date: str | None = None, keep: int = DEFAULT_KEEP) -> Summary:
    """Merge nights (e.g. one per CI job, each with one cell) into ``out/<date>/`` and refresh the report.

    Cells are copied with their directories (logs, artifacts, boot logs); when two inputs have a
    cell of the same name the later input wins. The inputs must agree on the date unless ``date``
    is given.
    """
    summaries = find_summaries(inputs)
    loaded: list[tuple[Path, Summary]] = []
    for path in summaries:
        try:
            loaded.append((path.parent, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise OvmfgenError(f"cannot read {display_path(path)}: {exc}") from None
    dates = sorted({str(s.get("date")) for _, s in loaded})
    if date is None:
        if len(dates) != 1:
            raise OvmfgenError(f"the inputs are from different nights ({', '.join(dates)}): pass --date")
        date = dates[0]
    date = parse_date(date)
    out = Path(out)
    staging = out / f".{date}.merge-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "cells").mkdir(parents=True)
    cells: dict[str, CellRecord] = {}
    repro: ReproRecord | None = None
    jobs = 0
    seconds = 0.0
    matrix = ""
    required = False
    for night, summary in loaded:
        for cell in summary.get("cells") or []:
            name = str(cell.get("name"))
            src = night / "cells" / name
            dst = staging / "cells" / name
            if name in cells:
                say(f"merge: cell {name} appears twice; keeping the one from {display_path(night)}")
                shutil.rmtree(dst, ignore_errors=True)
            if src.is_dir():
                shutil.copytree(src, dst, copy_function=_copy_or_link)
            cells[name] = cell
        if summary.get("repro"):
            repro = summary.get("repro")
            if (night / "repro").is_dir():
                shutil.rmtree(staging / "repro", ignore_errors=True)
                shutil.copytree(night / "repro", staging / "repro")
        jobs += int(summary.get("jobs") or 0)
        seconds = max(seconds, float(summary.get("seconds") or 0))
        matrix = matrix or str(summary.get("matrix") or "")
        required = required or bool(summary.get("repro_required"))
    merged = make_summary(date, list(cells.values()), repro, matrix, jobs, seconds, required)
    merged["merged_from"] = len(loaded)
    write_summary(staging, merged)
    replace_dir(staging, out / date)
    prune_history(out, keep)
    report.write_index(out)
    return merged


def _copy_or_link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class NightlyFailed(OvmfgenError):
    """Some cells failed: the exit status is how many (capped)."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.exit_code = max(1, min(count, MAX_EXIT))


@dataclass(frozen=True)
class Options:
    """What ``invoke nightly`` was asked (beyond selection)."""

    out: Path = DEFAULT_OUT
    date: str = ""
    jobs: int = 1
    threads: int | None = None
    quiet: bool = False
    keep: int = DEFAULT_KEEP
    repro: str = "auto"          # auto (the rotation), none, or a cell name
    repro_only: bool = False
    install_root: Path | None = None


def check_switches(cells: Sequence[Cell], base: Path | None = None) -> None:
    """Each cell's features and defines must be read by its platform, and a feature's value must be one the
    platform takes (a Secure Boot key set it defines), as ``invoke build`` checks them; the error is located
    at the switch in nightly.yaml. A checkout cell is checked on the checkout as git names it (its position
    among releases decides the platform's ``when: {edk2: ...}``), without setting it up; ``base``: the
    directory its relative ``path`` is taken from (nightly.yaml's). Needs the other cells' edk2 trees."""
    for cell in cells:
        if not (cell.features or cell.defines):
            continue
        try:
            tree = None
            if cell.checkout is not None:
                root = Path(cell.checkout.root) if cell.checkout.root else \
                    cell.checkout.locate(base or paths.REPO_ROOT)
                tree = probe_checkout(root)
            resolve(cell.request(), tree=tree, quiet=True)
        except UnreadSwitch as exc:
            raise OvmfgenError(f"{exc.kind} {exc.name}={exc.value}: {exc.detail}",
                               cell.location(exc.kind, exc.name)) from None
        except BadFeatureValue as exc:
            where = cell.location("feature", exc.name)
            if where is not None:
                raise OvmfgenError(exc.message.removeprefix("--"), where) from None
            # A value the cell did not write as a feature: that cell fails, in its record.
        except OvmfgenError:
            # Anything else (an unknown platform, a tree not set up, a checkout not there or not git) fails
            # that cell, in its record.
            pass


def locate_checkouts(matrix: Matrix, cells: Sequence[Cell], night: Path) -> tuple[list[Cell], dict[str, CellRecord]]:
    """The cells that can run (a checkout cell with its directory found), and a failed record for each cell
    whose checkout is missing: one line located at its ``edk2:`` in nightly.yaml (written to its cell.log)."""
    base = paths.REPO_ROOT / Path(matrix.path).parent
    ready: list[Cell] = []
    missing: dict[str, CellRecord] = {}
    for cell in cells:
        if cell.checkout is None:
            ready.append(cell)
            continue
        try:
            root = cell.checkout.locate(base)
        except OvmfgenError as exc:
            line = str(OvmfgenError(exc.message, cell.location("edk2", "checkout")))
            say(f"{cell.name}: {line}")
            cell_dir = night / "cells" / cell.name
            cell_dir.mkdir(parents=True, exist_ok=True)
            (cell_dir / CELL_LOG).write_text(line + "\n", encoding="utf-8")
            missing[cell.name] = CellRecord(
                name=cell.name, cell=cell.to_json(), platform=cell.platform, target=cell.target, edk2=None,
                description=cell.description, status="failed", error=line, failed_steps=["checkout"], seconds=0.0,
                steps=[StepRecord(name="checkout", status="failed", seconds=0.0, detail=line)],
                log=f"cells/{cell.name}/{CELL_LOG}")
            continue
        ready.append(replace(cell, checkout=replace(cell.checkout, root=str(root))))
    return ready, missing


def default_jobs() -> int:
    """Cells at once by default: one per two CPUs (an EDK2 build keeps about two busy)."""
    return max(1, (os.cpu_count() or 1) // 2)


def run_night(matrix: Matrix, cells: Sequence[Cell], opts: Options) -> Summary:
    """Run ``cells`` (and tonight's reproducibility check) into ``opts.out/<date>/``; refresh the report."""
    date = parse_date(opts.date)
    out = Path(opts.out).resolve()
    jobs = max(1, opts.jobs)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // jobs)
    repro_cell: Cell | None = None
    if opts.repro == "auto":
        repro_cell = repro_cell_for(matrix, date, list(cells) if not opts.repro_only else list(matrix.cells))
    elif opts.repro not in ("none", ""):
        repro_cell = matrix.cell(opts.repro)
    if opts.repro_only:
        cells = []
        if repro_cell is None:
            raise OvmfgenError("--repro-only, but there is no reproducibility cell (rotation empty or --repro none)")
    if not cells and repro_cell is None:
        raise OvmfgenError("no cells selected (see --list)")
    check_switches([*cells, *([repro_cell] if repro_cell is not None else [])],
                   paths.REPO_ROOT / Path(matrix.path).parent)
    staging = out / f".{date}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "cells").mkdir(parents=True)
    t0 = time.monotonic()
    ready, missing = locate_checkouts(matrix, cells, staging)
    job_list = [_Job(c.name, _child_argv("cell", c, staging / "cells" / c.name, threads), staging / "cells" / c.name)
                for c in ready]
    if repro_cell is not None:
        job_list.append(_Job("reproducibility", _child_argv("repro", repro_cell, staging / "repro", threads),
                             staging / "repro"))
    what = f"{len(cells)} cell(s)" + (f" + reproducibility of {repro_cell.name}" if repro_cell else "")
    say(f"nightly {date}: {what}, {jobs} at a time, {threads} build thread(s) each; while running, logs are in "
        f"{display_path(staging)}/cells/<cell>/cell.log (then {display_path(out / date)}/)")
    done = [0]

    def on_done(job: _Job, record: Any) -> None:
        done[0] += 1
        if job.label == "reproducibility":
            say(f"[{done[0]}/{len(job_list)}] reproducibility of {record.get('cell')}: "
                f"{record.get('status')} - {record.get('detail', '')}")
        else:
            say(f"[{done[0]}/{len(job_list)}] {status_line(record)}")

    results = {**missing, **run_jobs(job_list, jobs, opts.quiet, on_done)}
    repro: ReproRecord | None = results.pop("reproducibility", None)
    if repro is not None and "cell" not in repro:
        repro = {"cell": repro_cell.name if repro_cell else None, "status": "error",
                 "detail": repro.get("error", "the reproducibility process failed"), "log": "repro/" + CELL_LOG}
    summary = make_summary(date, list(results.values()), repro, display_path(matrix.path), jobs,
                           time.monotonic() - t0, matrix.repro_required)
    write_summary(staging, summary)
    replace_dir(staging, out / date)
    removed = prune_history(out, opts.keep)
    index = report.write_index(out)
    if removed:
        say(f"pruned {len(removed)} old night(s): {', '.join(p.name for p in removed)}")
    t = summary["totals"]
    say(f"nightly {date}: {t['passed']}/{t['cells']} cells passed in {summary['seconds']:.0f} s; "
        f"report {display_path(index)}")
    if opts.install_root is not None:
        install(summary, out / date, Path(opts.install_root), matrix.install)
    return summary


def nightly_command(matrix: str | None = None, jobs: int | str | None = None, out: str | None = None,
                    match: Sequence[str] = (), exclude: Sequence[str] = (), cell: Sequence[str] = (),
                    list_cells: bool = False, quiet: bool = False, date: str | None = None, keep: int | str = DEFAULT_KEEP,
                    repro: str = "auto", repro_only: bool = False, install_root: str | None = None,
                    emit_kind: str | None = None, merge_dirs: Sequence[str] = (), threads: int | str | None = None,
                    edk2: str | None = None) -> Summary | None:
    """``invoke nightly``: run the matrix (or --list, --emit, --merge); raise NightlyFailed on failures.

    ``edk2`` (a tag) runs the selected cells against that tree (``matrix.on_tree``).
    """
    out_dir = Path(out) if out else DEFAULT_OUT
    try:
        keep_n = int(keep)
    except (TypeError, ValueError):
        raise OvmfgenError(f"bad --keep '{keep}': expected a number") from None
    if merge_dirs:
        summary = merge(merge_dirs, out_dir, date, keep_n)
        if install_root:
            m = load_matrix(matrix or DEFAULT_MATRIX)
            install(summary, out_dir / summary["date"], Path(install_root), m.install)
        _print_night(summary)
        _raise_on_failures(summary)
        return summary
    m = load_matrix(matrix or DEFAULT_MATRIX)
    if list_cells:
        print(list_text(m), flush=True)
        return None
    selected = on_tree(select_cells(m, match, exclude, cell), edk2)
    if emit_kind:
        emit(emit_kind, m, [c for c in selected])
        return None
    try:
        n_jobs = int(jobs) if jobs not in (None, "") else default_jobs()
        n_threads = int(threads) if threads not in (None, "") else None
    except (TypeError, ValueError):
        raise OvmfgenError(f"bad --jobs/--threads '{jobs}/{threads}': expected numbers") from None
    if n_jobs < 1 or (n_threads is not None and n_threads < 1):
        raise OvmfgenError("--jobs and --threads must be positive")
    opts = Options(out=out_dir, date=parse_date(date), jobs=n_jobs, threads=n_threads, quiet=quiet, keep=keep_n,
                   repro=repro or "auto", repro_only=repro_only,
                   install_root=Path(install_root) if install_root else None)
    summary = run_night(m, selected, opts)
    _print_night(summary)
    _raise_on_failures(summary)
    return summary


def _print_night(summary: Summary) -> None:
    for rec in summary.get("cells") or []:
        print(status_line(rec), flush=True)
        for step in rec.get("steps") or []:
            if rec.get("upstream") and step.get("name") in ("drift", "rebase") and step.get("status") == "passed":
                print(f"  {step['name']}: {step.get('detail', '')}", flush=True)
    repro = summary.get("repro")
    if repro is not None:
        print(f"reproducibility ({repro.get('cell')}): {repro.get('status')} - {repro.get('detail', '')}", flush=True)


def _raise_on_failures(summary: Summary) -> None:
    failed = failures(summary)
    if failed:
        n = len(failed)
        cells = len(summary.get("cells") or [])
        raise NightlyFailed(f"{n} of {cells} nightly cell(s) failed: {', '.join(failed)}", n)
