"""A night on disk and the history of nights: ``<out>/<date>/summary.json`` (with ``cells/<name>/``),
its file names, writing and reading summaries, pruning old nights."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes
from ovmfgen.nightly.records import CellRecord, ReproRecord, Summary, Totals
from ovmfgen.ui import say

SCHEMA = 1
DEFAULT_KEEP = 14
SUMMARY = "summary.json"
RESULT = "result.json"
CELL_LOG = "cell.log"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def write_public(path: Path, data: bytes) -> None:
    """Atomically write a report file readable by everyone (a web server serving the history)."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


def parse_date(text: str | None) -> str:
    """``--date``: YYYY-MM-DD (default: today, local time)."""
    if not text:
        return _dt.date.today().isoformat()
    if not _DATE_RE.match(text):
        raise OvmfgenError(f"bad --date '{text}': expected YYYY-MM-DD")
    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        raise OvmfgenError(f"bad --date '{text}': not a calendar date") from None
    return text


def totals(cells: Sequence[CellRecord]) -> Totals:
    """Counts of a night's cells by status."""
    passed = sum(1 for c in cells if c.get("status") == "passed")
    return {"cells": len(cells), "passed": passed, "failed": len(cells) - passed}


def make_summary(date: str, cells: Sequence[CellRecord], repro: ReproRecord | None, matrix: str, jobs: int,
                 seconds: float, repro_required: bool = False) -> Summary:
    """The night's summary.json content."""
    # The tree of the night (a checkout cell's moving tree is its own business).
    edk2 = next((c.get("manifest", {}).get("edk2") for c in cells if c.get("manifest") and not c.get("upstream")),
                None)
    return {
        "schema": SCHEMA,
        "date": date,
        "matrix": matrix,
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "seconds": round(seconds, 1),
        "edk2": edk2,
        "cells": sorted(cells, key=lambda c: str(c.get("name"))),
        "repro": repro,
        "repro_required": repro_required,
        "totals": totals(cells),
    }


def failures(summary: Summary) -> list[str]:
    """Names of what failed in a night: its failed cells, and the reproducibility check when required."""
    out = [str(c.get("name")) for c in summary.get("cells") or [] if c.get("status") != "passed"]
    repro = summary.get("repro")
    if summary.get("repro_required") and isinstance(repro, dict) and repro.get("status") != "identical":
        out.append(f"reproducibility ({repro.get('cell')})")
    return out


def write_summary(night: Path, summary: Summary) -> Path:
    """Write ``<night>/summary.json`` atomically."""
    path = night / SUMMARY
    write_public(path, (json.dumps(summary, indent=2, sort_keys=False) + "\n").encode())
    return path


def night_dirs(out: Path) -> list[Path]:
    """The nights kept in ``out`` (``YYYY-MM-DD`` dirs holding a summary), oldest first."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and _DATE_RE.match(p.name) and (p / SUMMARY).is_file())


def prune_history(out: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` nights; returns the removed dirs."""
    if keep < 1:
        raise OvmfgenError(f"bad --keep {keep}: keep at least one night")
    nights = night_dirs(out)
    removed = nights[:-keep] if len(nights) > keep else []
    for night in removed:
        shutil.rmtree(night)
    return removed


def read_summaries(out: Path) -> list[Summary]:
    """Every kept night's summary, oldest first."""
    out_list: list[Summary] = []
    for night in night_dirs(out):
        try:
            out_list.append(json.loads((night / SUMMARY).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            say(f"skipping {display_path(night / SUMMARY)}: {exc}")
    return out_list


def find_summaries(inputs: Sequence[str | Path]) -> list[Path]:
    """summary.json files named by ``inputs``: a file, a night dir, or any dir searched below."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_file() and p.name == SUMMARY:
            found.append(p)
        elif (p / SUMMARY).is_file():
            found.append(p / SUMMARY)
        elif p.is_dir():
            hits = sorted(p.rglob(SUMMARY))
            if not hits:
                raise OvmfgenError(f"no {SUMMARY} under {display_path(p)}")
            found.extend(hits)
        else:
            raise OvmfgenError(f"nothing to merge at {display_path(p)}")
    return found
