"""invoke nightly: failing cells are counted (real cell processes that fail), merging nights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly import command
from ovmfgen.nightly.command import NightlyFailed, Options
from helpers import fake_night, matrix_of


def test_failing_cells_are_counted_and_never_stop_the_others(tmp_path: Path, real_cache: None):
    """Real cell processes: two cells that cannot build (unknown platforms; a bad feature value is now
    refused while the matrix loads, tests/invalid-nightly/bad-feature-value.yaml); the night completes,
    and the exit status is the failure count."""
    m = matrix_of([
        {"name": "broken-platform", "platform": "no-such-platform", "target": "DEBUG"},
        {"name": "broken-feature", "platform": "no-such-platform-either", "features": ["timer=acpi"]},
    ])
    opts = Options(out=tmp_path / "nightly", date="2025-01-02", jobs=2, quiet=True, repro="none")
    summary = command.run_night(m, list(m.cells), opts)
    assert summary["totals"] == {"cells": 2, "passed": 0, "failed": 2}
    by = {c["name"]: c for c in summary["cells"]}
    assert "unknown platform 'no-such-platform'" in by["broken-platform"]["error"]
    assert "unknown platform 'no-such-platform-either'" in by["broken-feature"]["error"]
    assert by["broken-platform"]["failed_steps"] == ["build"]
    night = tmp_path / "nightly" / "2025-01-02"
    assert json.loads((night / "summary.json").read_text())["totals"]["failed"] == 2
    assert "unknown platform" in (night / "cells" / "broken-platform" / "cell.log").read_text()
    assert (tmp_path / "nightly" / "index.html").is_file()
    assert not list((tmp_path / "nightly").glob(".*partial"))
    with pytest.raises(NightlyFailed) as info:
        command._raise_on_failures(summary)
    assert info.value.exit_code == 2
    assert "2 of 2 nightly cell(s) failed: broken-feature, broken-platform" in str(info.value)



def test_merge_combines_per_job_nights_into_one_report(tmp_path: Path):
    a = fake_night(tmp_path / "job-a", "2025-02-03", ["xen-pvh-DEBUG-2M"])
    b = fake_night(tmp_path / "job-b", "2025-02-03", ["qemu-x64-DEBUG"], status="failed")
    out = tmp_path / "nightly"
    merged = command.merge([a, tmp_path / "job-b"], out)   # a night dir, and a dir searched below
    assert merged["totals"] == {"cells": 2, "passed": 1, "failed": 1}
    assert merged["merged_from"] == 2 and merged["date"] == "2025-02-03"
    night = out / "2025-02-03"
    assert (night / "cells" / "qemu-x64-DEBUG" / "cell.log").read_text() == "log of qemu-x64-DEBUG\n"
    assert json.loads((night / "summary.json").read_text())["totals"]["cells"] == 2
    assert "qemu-x64-DEBUG" in (out / "index.html").read_text()
    assert b.is_dir()  # inputs are left alone
    with pytest.raises(NightlyFailed) as info:
        command.nightly_command(merge_dirs=[str(a), str(b)], out=str(tmp_path / "again"))
    assert info.value.exit_code == 1


def test_merge_refuses_mixed_nights_unless_a_date_is_given(tmp_path: Path):
    a = fake_night(tmp_path / "a", "2025-02-03", ["x"])
    b = fake_night(tmp_path / "b", "2025-02-04", ["y"])
    with pytest.raises(OvmfgenError, match="different nights"):
        command.merge([a, b], tmp_path / "out")
    merged = command.merge([a, b], tmp_path / "out", date="2025-02-04")
    assert [c["name"] for c in merged["cells"]] == ["x", "y"]
    with pytest.raises(OvmfgenError, match="nothing to merge"):
        command.merge([tmp_path / "missing"], tmp_path / "out")
