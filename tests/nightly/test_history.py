"""The history of nights on disk: summaries, failure counting, dates, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import fake_night
from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly import command, history
from ovmfgen.nightly.command import NightlyFailed


def test_history_keeps_the_last_n_nights(tmp_path: Path):
    for day in range(1, 6):
        fake_night(tmp_path, f"2025-01-{day:02d}", ["c"])
    (tmp_path / "assets").mkdir()
    (tmp_path / "2025-01-09").mkdir()  # no summary: not a night, never pruned
    removed = history.prune_history(tmp_path, 3)
    assert [p.name for p in removed] == ["2025-01-01", "2025-01-02"]
    assert [p.name for p in history.night_dirs(tmp_path)] == ["2025-01-03", "2025-01-04", "2025-01-05"]
    assert (tmp_path / "assets").is_dir() and (tmp_path / "2025-01-09").is_dir()
    assert history.prune_history(tmp_path, 3) == []
    with pytest.raises(OvmfgenError, match="keep at least one"):
        history.prune_history(tmp_path, 0)


def test_dates_are_checked():
    assert history.parse_date("2024-02-29") == "2024-02-29"
    assert history._DATE_RE.match(history.parse_date(None))
    for bad in ("2025-2-1", "2025-02-30", "yesterday"):
        with pytest.raises(OvmfgenError, match="bad --date"):
            history.parse_date(bad)


def test_failure_count_includes_a_required_reproducibility_check():
    cells = [{"name": "a", "status": "passed"}, {"name": "b", "status": "failed"}, {"name": "c", "status": "passed"}]
    repro = {"cell": "a", "status": "differs"}
    assert history.failures(history.make_summary("2025-01-01", cells, repro, "m", 1, 1.0)) == ["b"]
    required = history.make_summary("2025-01-01", cells, repro, "m", 1, 1.0, repro_required=True)
    assert history.failures(required) == ["b", "reproducibility (a)"]
    assert NightlyFailed("x", 250).exit_code == command.MAX_EXIT
    command._raise_on_failures(history.make_summary("2025-01-01", cells[:1], None, "m", 1, 1.0))  # all passed
