"""``--emit github|gitlab``: the matrix as a CI workflow, one job per cell and a job merging the report."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml

from ovmfgen import paths
from ovmfgen.edk2.releases import DEFAULT_TAG, UPSTREAM_URL
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes
from ovmfgen.nightly.matrix import Cell, Matrix
from ovmfgen.platform.rebase import platform_file, written_for
from ovmfgen.ui import say


EMIT_PATHS = {"github": ".github/workflows/ovmfgen-nightly.yml", "gitlab": ".gitlab/ovmfgen-nightly.yml"}


def _job_id(name: str) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]", "-", name).lower()


class _WorkflowDumper(yaml.SafeDumper):
    """Block style, no anchors/aliases (CI engines differ in support), lists indented under keys.

    Every value is a string; without implicit resolvers ``"120"`` is written plain (an int to the CI
    engine's YAML reader) and ``on`` is not quoted.
    """

    yaml_implicit_resolvers: dict = {}

    def ignore_aliases(self, data: object) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_WorkflowDumper, sort_keys=False, default_flow_style=False, width=1000)


#: Where a cell's checkout named by an environment variable is cloned, in the job's working directory.
CHECKOUT_DIR = "edk2-checkout"


def _tree_setup(cell: Cell, matrix_path: str = "nightly.yaml", kind: str = "github") -> list[dict]:
    """The extra setup steps of a cell built against another edk2 tree than the default: a release's (its
    tarball must be where $OVMFGEN_EDK2_TARBALLS points, or the tree reachable through $OVMFGEN_EDK2); or
    a checkout's: edk2 upstream's ``branch`` cloned with its submodules (all of its history, for ``git
    describe``; blobs on demand) into the checkout's path, or into CHECKOUT_DIR with the checkout's
    variable pointing there, and the release the platform is written for (the rebase preview's base)."""
    if cell.checkout is not None:
        co = cell.checkout
        dest = (posixpath.normpath(posixpath.join(posixpath.dirname(matrix_path), str(co.path))) if co.path
                else CHECKOUT_DIR)
        clone = (f"git clone --recurse-submodules --filter=blob:none --branch {shlex.quote(co.branch)} "
                 f"{UPSTREAM_URL} {shlex.quote(dest)}")
        if co.env:
            export = (f'echo "{co.env}=$PWD/{dest}" >> "$GITHUB_ENV"' if kind == "github"
                      else f'export {co.env}="$CI_PROJECT_DIR/{dest}"')
            clone = f"{clone} && {export}"
        steps = [{"name": f"edk2 {co.branch} for {co.text}", "run": clone}]
        base = _platform_release(cell.platform)
        if base and base != DEFAULT_TAG:
            steps.append({"name": f"Setup {base} (the rebase's base)", "run": f"invoke setup --edk2 {base}"})
        return steps
    if not cell.edk2:
        return []
    return [{"name": f"Setup {cell.edk2}", "run": f"invoke setup --edk2 {cell.edk2}"}]


def _platform_release(platform: str) -> str | None:
    """The release the platform is written for (what a rebase starts from), None when it cannot be read."""
    try:
        return written_for(platform_file(platform).read_text(encoding="utf-8"))
    except (OSError, OvmfgenError):
        return None


def github_workflow(matrix: Matrix, cells: Sequence[Cell], matrix_path: str = "nightly.yaml") -> str:
    """A GitHub Actions workflow: one job per cell, one for reproducibility, one merging the report."""
    setup = [
        {"uses": "actions/checkout@v4"},
        {"name": "Tools", "run": "apt-get update && apt-get install -y --no-install-recommends "
                                 "python3 python3-venv python3-pip git ca-certificates"},
        {"name": "ovmfgen", "run": "python3 -m venv /opt/venv && /opt/venv/bin/pip install -e . && "
                                   "echo /opt/venv/bin >> \"$GITHUB_PATH\""},
        {"name": "edk2 tree and BaseTools", "uses": "actions/cache@v4",
         "with": {"path": "~/.cache/ovmfgen/edk2", "key": "edk2-${{ hashFiles('ovmfgen/edk2/*.py') }}"}},
        {"name": "Setup (edk2, BaseTools, apt packages)", "run": "invoke setup"},
        {"name": "Compiler cache", "uses": "actions/cache@v4",
         "with": {"path": "~/.cache/ovmfgen/ccache", "key": "ccache-${{ github.job }}-${{ github.run_id }}",
                  "restore-keys": "ccache-${{ github.job }}-"}},
    ]
    container = {"image": "debian:bookworm"}
    jobs: dict[str, object] = {
        "date": {"runs-on": "ubuntu-latest", "outputs": {"date": "${{ steps.d.outputs.date }}"},
                 "steps": [{"id": "d", "run": "echo \"date=$(date -u +%F)\" >> \"$GITHUB_OUTPUT\""}]},
    }
    cell_jobs = []
    for cell in cells:
        jid = _job_id(cell.name)
        cell_jobs.append(jid)
        jobs[jid] = {
            "name": cell.name, "needs": "date", "runs-on": "ubuntu-latest", "container": container,
            "timeout-minutes": "120",
            "steps": [*setup, *_tree_setup(cell, matrix_path),
                      {"name": f"nightly cell {cell.name}",
                       "run": f"invoke nightly --matrix {matrix_path} --cell {cell.name} --repro none --quiet "
                              "--date ${{ needs.date.outputs.date }} --out out"},
                      {"if": "always()", "uses": "actions/upload-artifact@v4",
                       "with": {"name": f"nightly-{cell.name}", "path": "out/"}}],
        }
    if matrix.repro_rotate:
        cell_jobs.append("reproducibility")
        jobs["reproducibility"] = {
            "needs": "date", "runs-on": "ubuntu-latest", "container": container, "timeout-minutes": "180",
            "steps": [*setup[:5],
                      {"name": "build one cell twice from scratch",
                       "run": f"invoke nightly --matrix {matrix_path} --repro-only --quiet "
                              "--date ${{ needs.date.outputs.date }} --out out"},
                      {"if": "always()", "uses": "actions/upload-artifact@v4",
                       "with": {"name": "nightly-reproducibility", "path": "out/"}}],
        }
    jobs["report"] = {
        "needs": ["date", *cell_jobs], "if": "always()", "runs-on": "ubuntu-latest", "container": container,
        "steps": [
            setup[0], setup[1], setup[2],
            {"name": "History", "uses": "actions/cache@v4",
             "with": {"path": "nightly", "key": "nightly-history-${{ github.run_id }}",
                      "restore-keys": "nightly-history-"}},
            {"uses": "actions/download-artifact@v4", "with": {"pattern": "nightly-*", "path": "cells"}},
            {"name": "merge", "run": "invoke nightly --merge cells --out nightly"},
            {"uses": "actions/upload-artifact@v4", "with": {"name": "nightly-report", "path": "nightly/"}},
        ],
    }
    doc = {"name": "ovmfgen nightly", "on": {"schedule": [{"cron": "17 2 * * *"}], "workflow_dispatch": {}},
           "jobs": jobs}
    return ("# Generated by `invoke nightly --emit github` from " + matrix_path + ": one job per matrix cell,\n"
            "# then `invoke nightly --merge` builds the same report as a local run. Regenerate, do not edit.\n"
            + _dump(doc))


def gitlab_pipeline(matrix: Matrix, cells: Sequence[Cell], matrix_path: str = "nightly.yaml") -> str:
    """A GitLab CI pipeline (include it from .gitlab-ci.yml): one job per cell, then the merge."""
    before_script = [
        "apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git "
        "ca-certificates",
        "python3 -m venv /opt/venv && /opt/venv/bin/pip install -e . && export PATH=/opt/venv/bin:$PATH",
        "invoke setup",
        # One date for every job of the pipeline, even one that runs past midnight.
        "export NIGHTLY_DATE=${NIGHTLY_DATE:-${CI_PIPELINE_CREATED_AT%%T*}}",
    ]
    rules = [{"if": "$CI_PIPELINE_SOURCE == \"schedule\""}, {"if": "$CI_PIPELINE_SOURCE == \"web\""}]
    base = {
        "image": "debian:bookworm",
        "before_script": before_script,
        "cache": {"key": "ovmfgen-$CI_JOB_NAME", "paths": [".cache-ovmfgen/ccache/", ".cache-ovmfgen/edk2/"]},
        "variables": {"OVMFGEN_CACHE": "$CI_PROJECT_DIR/.cache-ovmfgen"},
        "rules": rules,
    }
    doc: dict[str, object] = {"stages": ["cells", "report"], ".ovmfgen-nightly": base}
    for cell in cells:
        doc[_job_id(cell.name)] = {
            "extends": ".ovmfgen-nightly", "stage": "cells",
            "script": [*(step["run"] for step in _tree_setup(cell, matrix_path, "gitlab")),
                       f"invoke nightly --matrix {matrix_path} --cell {cell.name} --repro none --quiet "
                       "--date $NIGHTLY_DATE --out out/" + cell.name],
            "artifacts": {"when": "always", "paths": [f"out/{cell.name}/"]},
        }
    if matrix.repro_rotate:
        doc["reproducibility"] = {
            "extends": ".ovmfgen-nightly", "stage": "cells",
            "script": [f"invoke nightly --matrix {matrix_path} --repro-only --quiet --date $NIGHTLY_DATE "
                       "--out out/reproducibility"],
            "artifacts": {"when": "always", "paths": ["out/reproducibility/"]},
        }
    doc["report"] = {
        "extends": ".ovmfgen-nightly", "stage": "report",
        "rules": [{"if": rule["if"], "when": "always"} for rule in rules],
        "before_script": before_script[:2],
        "cache": {"key": "nightly-history", "paths": ["nightly/"]},
        "script": ["invoke nightly --merge out --out nightly"],
        "artifacts": {"when": "always", "paths": ["nightly/"]},
    }
    return ("# Generated by `invoke nightly --emit gitlab` from " + matrix_path + ". Include it from .gitlab-ci.yml\n"
            "# (include: local: .gitlab/ovmfgen-nightly.yml) and run it from a pipeline schedule.\n"
            "# Regenerate, do not edit.\n" + _dump(doc))


def emit(kind: str, matrix: Matrix, cells: Sequence[Cell], dest: Path | None = None) -> Path:
    """Write the CI workflow for ``kind`` (github or gitlab); returns its path."""
    if kind not in EMIT_PATHS:
        raise OvmfgenError(f"bad --emit '{kind}': expected one of {', '.join(EMIT_PATHS)}")
    matrix_path = matrix.path
    text = github_workflow(matrix, cells, matrix_path) if kind == "github" else gitlab_pipeline(matrix, cells,
                                                                                              matrix_path)
    path = dest or paths.REPO_ROOT / EMIT_PATHS[kind]
    atomic_write_bytes(path, text.encode())
    say(f"wrote {display_path(path)} ({len(cells)} cell jobs)")
    return path
