"""A cell of an edk2 checkout (``edk2: {path: DIR}`` / ``{env: VAR}``, e.g. edk2 master): its tree set up,
and its view of upstream before the build.

Run in the cell's own process (``nightly.cell``), where the checkout becomes the default tree
(``$OVMFGEN_EDK2``), as three steps whose findings go into the cell's record (``upstream``):

* **setup**: the checkout's identity from git (``git describe``, commit, commit date) and its BaseTools,
  built again when its commit moved since the last night (``edk2.install.ensure_edk2``);
* **drift**: ``invoke diff``'s view: the platform resolved for the checkout against the checkout's own
  upstream DSC/FDF (``platform.diff.compare_platform``): the differences no delta explains, the stale
  deltas, and each one-release override and delta carried to this tree (kept, or left out and why);
* **rebase**: ``invoke rebase --to CHECKOUT --dry-run`` from the release the platform is written for
  (``platform.rebase.plan_rebase``): merges cleanly (the changes), or the located conflicts; the YAML
  change is kept as ``rebase.diff``, nothing is written to the platform.

The steps pass when they produced their view: what upstream changed is information for the report
(``upstream.txt`` and the page's "Upstream" section), not a failure of the cell. The build and boots
that follow judge the firmware as in every cell.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ovmfgen import paths
from ovmfgen.edk2.install import ensure_edk2
from ovmfgen.edk2.tree import Edk2Tree, locate
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.nightly.history import write_public
from ovmfgen.nightly.matrix import Cell
from ovmfgen.nightly.records import CellRecord, RebaseRecord, StepRecord, UpstreamRecord
from ovmfgen.platform.diff import Drift, compare_platform, upstream_files
from ovmfgen.platform.rebase import plan_rebase, platform_file, release_conditions, written_for
from ovmfgen.paths import Layout
from ovmfgen.platform.resolve import Resolved

TEXT = "upstream.txt"
REBASE_DIFF = "rebase.diff"


def _rel(path: Path, night: Path) -> str:
    return path.resolve().relative_to(night.resolve()).as_posix()


def setup(cell: Cell, record: CellRecord) -> tuple[tuple[bool, str, StepRecord], Edk2Tree]:
    """The checkout made this process's default tree and set up (identity, BaseTools); recorded."""
    assert cell.checkout is not None
    root = Path(cell.checkout.root) if cell.checkout.root else cell.checkout.locate(paths.REPO_ROOT)
    os.environ["OVMFGEN_EDK2"] = str(root)
    tree, did = ensure_edk2(None)
    commit = tree.identity.get("commit")
    record["edk2"] = tree.tag
    record["upstream"] = UpstreamRecord(tree=tree.tag, commit=commit, date=tree.release_date,
                                        checkout=cell.checkout.text, root=str(root))
    how = "BaseTools built for its commit" if did else "set up already"
    return (True, f"{tree.tag} (commit {str(commit or '?')[:12]}, {tree.release_date}) at {root}: {how}",
            StepRecord()), tree


def drift(r: Resolved, record: CellRecord) -> tuple[tuple[bool, str, StepRecord], Drift]:
    """``invoke diff``'s view of the checkout: the resolved platform against the tree's own upstream files."""
    up = record.setdefault("upstream", UpstreamRecord())
    dsc, fdf = upstream_files(r)
    found = compare_platform(r, dsc, fdf)
    up.update(against=f"{dsc.relative_to(r.tree.root).as_posix()}/.fdf", unexplained=found.unexplained_lines(),
              stale=list(found.stale), carried=[c.line() for c in found.carried])
    left = [c for c in found.carried if not c.kept]
    detail = (f"{len(found.unexplained)} unexplained difference(s) against {up['against']} of {r.tree.tag}"
              + (f", {len(found.stale)} stale delta(s)" if found.stale else "")
              + (f"; carried fixes: {len(found.carried) - len(left)} still needed, {len(left)} left out"
                 if found.carried else ""))
    return (True, detail, StepRecord()), found


def rebase(cell: Cell, tree: Edk2Tree, layout: Layout, cell_dir: Path,
           record: CellRecord) -> tuple[bool, str, StepRecord]:
    """``invoke rebase --to CHECKOUT --dry-run`` from the platform's release: recorded, the YAML change kept.
    It needs the checkout's tree, not the cell's resolve (a platform whose override no longer applies there
    still gets its rebase preview: that override is one of its conflicts)."""
    up = record.setdefault("upstream", UpstreamRecord())
    path = platform_file(cell.platform, layout)
    text = path.read_text(encoding="utf-8")
    base = written_for(text)
    rec = RebaseRecord(base=base)
    up["rebase"] = rec
    try:
        release_conditions(base, tree.tag, display_path(path))
    except OvmfgenError as exc:   # the checkout is that release, or past a later one: no rebase to preview
        rec.update(status="none", detail=exc.message)
        return True, f"no rebase from {base}: {exc.message}", StepRecord()
    result = plan_rebase(path, locate(base), tree, layout)
    rec.update(status=result.status, changes=list(result.changes), conflicts=[c.line() for c in result.conflicts],
               carried=[c.line() for c in result.carried], remaining=list(result.remaining))
    night = cell_dir.parent.parent
    if result.changes:
        shown = display_path(path)
        change = "".join(difflib.unified_diff(text.splitlines(keepends=True), result.text.splitlines(keepends=True),
                                              f"a/{shown}", f"b/{shown}"))
        write_public(cell_dir / REBASE_DIFF, change.encode("utf-8"))
        rec["diff"] = _rel(cell_dir / REBASE_DIFF, night)
    if result.status == "conflicts":
        detail = f"{len(result.conflicts)} conflict(s) from {base}, first: {result.conflicts[0].line()}"
    elif result.status == "clean":
        detail = f"merges cleanly from {base}: {len(result.changes)} change(s)"
    else:
        detail = f"nothing to merge from {base}"
    rec["detail"] = detail
    return True, detail, StepRecord()


def text_report(up: UpstreamRecord, platform: str, report: str = "") -> str:
    """``upstream.txt``: the record's view of upstream as text, then ``invoke diff``'s whole report."""
    lines = [f"{platform} against {up.get('tree', '?')} (commit {str(up.get('commit') or '?')[:12]}, "
             f"{up.get('date', '?')}; {up.get('checkout', '?')} = {up.get('root', '?')})", ""]
    if "against" in up:
        unexplained = up.get("unexplained") or []
        lines.append(f"invoke diff against {up['against']}: {len(unexplained)} unexplained difference(s) "
                     "(upstream -> the platform)")
        lines += [f"  ! {line}" for line in unexplained]
        lines += [f"  listed delta never observed: {s}" for s in up.get("stale") or []]
        if up.get("carried"):
            lines.append("one-release fixes carried to this tree:")
            lines += [f"  {line}" for line in up.get("carried") or []]
        lines.append("")
    rec = up.get("rebase")
    if rec:
        lines.append(f"invoke rebase from {rec.get('base')} (dry run): {rec.get('detail', rec.get('status'))}")
        lines += [f"  {c}" for c in rec.get("changes") or []]
        lines += [f"  {c}" for c in rec.get("conflicts") or []]
        lines += [f"  after the rebase, invoke diff still finds: {c}" for c in rec.get("remaining") or []]
        if rec.get("diff"):
            lines.append(f"  the YAML change: {rec['diff']}")
        lines.append("")
    if report:
        lines += ["invoke diff's whole report:", report, ""]
    return "\n".join(lines)


def write_text(up: UpstreamRecord, platform: str, cell_dir: Path, report: str = "") -> None:
    """Write ``upstream.txt`` into the cell's directory and point the record at it."""
    write_public(cell_dir / TEXT, text_report(up, platform, report).encode("utf-8"))
    up["text"] = _rel(cell_dir / TEXT, cell_dir.parent.parent)
