"""``invoke bench``: ovmfgen's build measured against EDK2's own ``build`` of the same DSC, in one run.

Each comparison against its goal:

* no-op: ``invoke build --platform P`` with everything published vs EDK2's no-op ``build -p <dsc>``
  in a raw workspace that has built (goal: <= 0.3 s and >= 20x faster), the first no-op after a
  change (no stamp: the full resolve and plan), and ``invoke render`` with nothing changed (goal:
  <= 0.35 s); ``--noop`` measures these alone;
* clean build: ``invoke build --clean`` (render, stuart, ELF, checks, publish) vs a raw ``build``
  of the same rendered DSC from an empty Build/ (goal: <= 1.05x);
* ccache: a clean ``--ccache`` build with warm caches vs one with cold caches (goal: <= 0.4x); ``--ccache``
  means ccache for compiles and ovmfgen's link cache for the LTO links (``ovmfgen/builder/child/linkcache.py``).

The raw workspace (``build/<platform>.bench-raw/``) holds the same rendered files and Conf/ from
BaseTools' templates, and is built with the same ``-D``/``--pcd`` arguments ovmfgen passes. It takes
about four full builds (~15-20 minutes on 2 cores); results go to ``bench/results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import paths
from ovmfgen.builder.plan import Plan, ccache_dir, link_cache_dir, pcd_arguments, plan
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.edk2.conventions import ARCH, build_env
from ovmfgen.edk2.tree import checkout_argument
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes
from ovmfgen.run import run
from ovmfgen.stamp import stamps_dir
from ovmfgen.ui import say

RESULTS = paths.REPO_ROOT / "bench" / "results.json"
NOOP_RUNS = 3


@dataclass(frozen=True)
class Timing:
    """One measured command."""

    label: str
    seconds: float


def _invoke_argv(*args: str) -> list[str]:
    """``invoke ARGS`` as a user types it (the invoke next to this Python, else ``python -m invoke``)."""
    beside = Path(sys.executable).parent / "invoke"
    exe = [str(beside)] if beside.is_file() else ([shutil.which("invoke")] if shutil.which("invoke") else None)
    return [*(exe or [sys.executable, "-m", "invoke"]), *args]


def _timed(label: str, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None,
           cwd: Path | None = None) -> Timing:
    say(f"bench: {label}")
    t0 = time.monotonic()
    proc = run(argv, cwd=cwd or paths.REPO_ROOT, env=env, check=False, stdout_path=log,
               capture=log is None)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        where = f" (log: {display_path(log)})" if log else ""
        raise OvmfgenError(f"bench step '{label}' failed with exit {proc.returncode}{where}")
    say(f"bench: {label}: {seconds:.2f} s")
    return Timing(label, seconds)


def raw_workspace(p: Plan) -> Path:
    """A plain EDK2 workspace with the same rendered files (and overrides), Conf/ from the templates."""
    ws = p.workspace.parent / f"{p.workspace.name}.bench-raw"
    for rel, data in {**p.rendered, **p.overrides}.items():
        target = ws / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    conf = ws / "Conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("target", "tools_def", "build_rule"):
        shutil.copyfile(p.edk2_tools / "Conf" / f"{name}.template", conf / f"{name}.txt")
    return ws


def raw_build_argv(p: Plan) -> list[str]:
    """EDK2's ``build`` with what ovmfgen's stuart run passes (minus the report ovmfgen asks for)."""
    argv = ["build", "-p", p.platform.dsc_path, "-a", ARCH, "-t", p.toolchain, "-b", p.request.target,
            "-n", str(p.request.jobs or os.cpu_count() or 1)]
    for key, value in sorted(p.defines.items()):
        argv += ["-D", f"{key}={value}"]
    for pcd in pcd_arguments(p.version_string, p.release_date):
        argv += ["--pcd", pcd]
    return argv


def raw_env(p: Plan, ws: Path) -> dict[str, str]:
    """The environment edksetup.sh would give, with the edk2 tree on PACKAGES_PATH."""
    return build_env(ws, p.edk2_tools, ws / "Conf", packages_path=(p.edk2_root,))


def merge_results(path: Path, update: dict) -> None:
    """Write ``update``'s keys into the results JSON at ``path``, keeping the other figures (atomic)."""
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = {}
    if not isinstance(current, dict):
        current = {}
    current.update(update)
    atomic_write_bytes(path, (json.dumps(current, indent=2) + "\n").encode())


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _table(rows: list[tuple[str, ...]]) -> None:
    header = ("measure", "ovmfgen", "EDK2/cold", "ratio", "goal", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def noop_figures(p: Plan, platform: str, target: str, tree_args: tuple[str, ...], logs: Path) -> dict:
    """ovmfgen's no-op build and render (each made ready first, then the median of NOOP_RUNS) and the first
    no-op after a change (no stamp: the full resolve and plan), against EDK2's own no-op ``build`` of the
    same DSC in the raw workspace (built once first if it has not been)."""
    build = _invoke_argv("build", "--platform", platform, "--target", target, *tree_args)
    render = _invoke_argv("render", "--platform", platform, *tree_args)
    _timed("invoke build (made ready, not measured)", build, log=logs / "ovmfgen-ready.log")
    _timed("invoke render (made ready, not measured)", render)
    ours_noop = statistics.median(_timed(f"invoke build, no-op #{i + 1}", build).seconds for i in range(NOOP_RUNS))
    ours_render = statistics.median(_timed(f"invoke render, unchanged #{i + 1}", render).seconds
                                    for i in range(NOOP_RUNS))
    shutil.rmtree(stamps_dir(p.layout), ignore_errors=True)
    first = _timed("invoke build, first no-op after a change (no stamp)", build).seconds
    ws = raw_workspace(p)
    env, argv = raw_env(p, ws), raw_build_argv(p)
    if not any((ws / "Build").glob("*/*/FV/*.fd")):
        _timed("raw EDK2 build (made ready, not measured)", argv, env, logs / "raw-ready.log", cwd=ws)
    raw_noop = statistics.median(
        _timed(f"raw EDK2 build, no-op #{i + 1}", argv, env, logs / f"raw-noop-{i}.log", cwd=ws).seconds
        for i in range(NOOP_RUNS))
    speedup = raw_noop / ours_noop if ours_noop else float("inf")
    return {
        "noop": {"ovmfgen_s": round(ours_noop, 3), "edk2_s": round(raw_noop, 3), "speedup": round(speedup, 1),
                 "first_after_change_s": round(first, 3),
                 "goal": "ovmfgen <= 0.3 s and >= 20x faster", "met": ours_noop <= 0.3 and speedup >= 20},
        "render": {"ovmfgen_s": round(ours_render, 3), "goal": "<= 0.35 s", "met": ours_render <= 0.35},
    }


def _noop_rows(results: dict) -> list[tuple[str, ...]]:
    n, r = results["noop"], results["render"]
    return [
        ("no-op build", f"{n['ovmfgen_s']:.2f} s", f"{n['edk2_s']:.2f} s", f"{n['speedup']:.0f}x faster",
         "<=0.3 s, >=20x", _verdict(n["met"])),
        ("first no-op after a change", f"{n['first_after_change_s']:.2f} s", "", "", "", ""),
        ("render, unchanged", f"{r['ovmfgen_s']:.2f} s", "", "", "<=0.35 s", _verdict(r["met"])),
    ]


def bench_command(platform: str = "xen-pvh", target: str = "DEBUG", output: str | None = None,
                  edk2: str | None = None, noop_only: bool = False) -> dict:
    """``invoke bench``: run the comparisons, print a table, write the results JSON; returns the results.

    ``edk2`` (a tag or a checkout's path; None: the default tree, or $OVMFGEN_EDK2's checkout) picks the tree
    both sides build against (the results name it and its commit); ``noop_only``
    measures only the no-op build and render against EDK2's no-op (minutes, not a quarter of an hour).
    """
    request = make_request(platform, target, edk2=edk2)
    p = plan(resolve(request))
    tree = p.resolved.tree
    # The measured commands run from the repository: a checkout's path (perhaps relative to where the user
    # stands) goes to them as its absolute path; $OVMFGEN_EDK2 alone reaches them through the environment.
    tree_args = ("--edk2", str(tree.root)) if edk2 and checkout_argument(edk2) is None else \
        ("--edk2", edk2) if edk2 else ()
    logs = p.workspace.parent / f"{p.workspace.name}.bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict = {"platform": platform, "target": target, "edk2": tree.tag,
                     "edk2_commit": tree.identity.get("commit"),
                     "jobs": request.jobs or os.cpu_count(), "load_before": round(os.getloadavg()[0], 1)}
    if noop_only:
        results.update(noop_figures(p, platform, target, tree_args, logs))
        _table(_noop_rows(results))
        return _save(results, output)
    ws = raw_workspace(p)
    env = raw_env(p, ws)
    argv = raw_build_argv(p)
    say(f"bench: raw EDK2 workspace {display_path(ws)}: {' '.join(argv)}")

    # Clean builds: raw first, then ovmfgen (same machine state: no ccache for either).
    shutil.rmtree(ws / "Build", ignore_errors=True)
    shutil.rmtree(ws / "Conf" / ".cache", ignore_errors=True)
    raw_clean = _timed("raw EDK2 build, clean", argv, env, logs / "raw-clean.log", cwd=ws)
    ours_clean = _timed("invoke build --clean", _invoke_argv("build", "--platform", platform, "--target", target,
                                                             "--clean", *tree_args), log=logs / "ovmfgen-clean.log")
    results.update(noop_figures(p, platform, target, tree_args, logs))

    # ccache: cold (both caches --ccache uses emptied) then warm, both from a clean workspace.
    for cache in (ccache_dir(), link_cache_dir()):
        shutil.rmtree(cache, ignore_errors=True)
    cc_argv = _invoke_argv("build", "--platform", platform, "--target", target, "--clean", "--ccache", *tree_args)
    cold = _timed("invoke build --clean --ccache (cold cache)", cc_argv, log=logs / "ccache-cold.log")
    warm = _timed("invoke build --clean --ccache (warm cache)", cc_argv, log=logs / "ccache-warm.log")

    clean_ratio = ours_clean.seconds / raw_clean.seconds
    cc_ratio = warm.seconds / cold.seconds
    results.update({
        "clean": {"ovmfgen_s": round(ours_clean.seconds, 1), "edk2_s": round(raw_clean.seconds, 1),
                  "ratio": round(clean_ratio, 3), "goal": "<= 1.05x", "met": clean_ratio <= 1.05},
        "ccache": {"warm_s": round(warm.seconds, 1), "cold_s": round(cold.seconds, 1), "ratio": round(cc_ratio, 3),
                   "goal": "<= 0.4x", "met": cc_ratio <= 0.4},
    })
    _table([*_noop_rows(results),
            ("clean build", f"{ours_clean.seconds:.0f} s", f"{raw_clean.seconds:.0f} s", f"{clean_ratio:.2f}x",
             "<=1.05x", _verdict(results["clean"]["met"])),
            ("ccache warm vs cold", f"{warm.seconds:.0f} s", f"{cold.seconds:.0f} s", f"{cc_ratio:.2f}x", "<=0.4x",
             _verdict(results["ccache"]["met"]))])
    return _save(results, output)


def _save(results: dict, output: str | None) -> dict:
    out = Path(output) if output else RESULTS
    merge_results(out, results)  # keeps the other figures (``invoke bench --xen``, a full run's)
    say(f"bench: results in {display_path(out)}")
    return results
