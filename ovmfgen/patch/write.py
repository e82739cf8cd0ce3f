"""Writing the series: the commits, ``git format-patch``, the cover letter, PatchCheck; ``generate``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ovmfgen.edk2.releases import path_part
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import replace_dir
from ovmfgen.patch.checks import CheckResult, get_maintainers, patchcheck
from ovmfgen.patch.git import (
    BaseRepo, checkout_commit, commit_date, edk2_git_options, ensure_base, git, ident_env, make_commit, work_repo,
)
from ovmfgen.patch.intree import MAINTAINERS
from ovmfgen.patch.series import Commit, Ident, Series, default_signoff, plan_series
from ovmfgen.platform.resolve import Resolved
from ovmfgen.platform.validate import validate

COVER_LETTER = "0000-cover-letter.patch"


def _message(commit: Commit, cc: Sequence[str], signer: Ident) -> str:
    trailers = [f"Cc: {c}" for c in cc] + [f"Signed-off-by: {signer}"]
    return f"{commit.subject}\n\n{commit.body}\n\n" + "\n".join(trailers) + "\n"


@dataclass(frozen=True)
class Generated:
    """A written series: the directory, the cover letter and patches, and PatchCheck's verdicts."""

    out_dir: Path
    cover: Path
    patches: tuple[Path, ...]
    series: Series
    base: BaseRepo
    checks: tuple[CheckResult, ...]


def _fill_cover(text: str, series: Series) -> str:
    if "*** SUBJECT HERE ***" not in text or "*** BLURB HERE ***" not in text:
        raise OvmfgenError("git format-patch wrote a cover letter without its placeholders")
    text = text.replace("*** SUBJECT HERE ***", series.cover_subject, 1)
    text = text.replace("*** BLURB HERE ***", series.cover_body, 1)
    return text.rstrip("\n") + f"\n\nbase-commit: {series.upstream_commit}\n"


def write_series(series: Series, base: BaseRepo, signer: Ident, out_dir: Path, tree_root: Path) -> Generated:
    """Commit the series on the base, run GetMaintainer.py and format-patch, check, publish to ``out_dir``.

    The commits are made twice: first without trailers, so GetMaintainer.py can be run on each (with the
    series' final Maintainers.txt, which names the new files), then with their ``Cc:`` lines and
    ``Signed-off-by:``. Nothing is written to ``out_dir`` unless every patch passes PatchCheck.py; the
    directory is replaced as a whole (no stale patches from a longer earlier series).
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise OvmfgenError(f"cannot write the series to {display_path(out_dir)}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryDirectory(prefix="ovmfgen-patch-") as tmp:
            scratch = Path(tmp)
            repo = work_repo(base, scratch / "repo")
            dates = [commit_date(series.release_date, i + 1) for i in range(len(series.commits))]

            # Pass 1: the commits without trailers, for GetMaintainer.py.
            parent = base.commit
            draft = []
            for commit, date in zip(series.commits, dates):
                msg = f"{commit.subject}\n\n{commit.body}\n"
                parent = make_commit(repo, parent, commit.files, msg, ident_env(signer, date), scratch)
                draft.append(parent)
            maintainers = dict(f for c in series.commits for f in c.files).get(MAINTAINERS)
            (repo / MAINTAINERS).write_bytes(maintainers if maintainers is not None
                                             else (tree_root / MAINTAINERS).read_bytes())
            recipients = [get_maintainers(repo, c, tree_root) for c in draft]

            # Pass 2: the real commits.
            parent = base.commit
            for commit, date, rcpt in zip(series.commits, dates, recipients):
                parent = make_commit(repo, parent, commit.files, _message(commit, rcpt.people, signer),
                                      ident_env(signer, date), scratch)
            tip = parent
            lists = sorted({a for r in recipients for a in r.lists})

            fp = ["format-patch", "-q", "--cover-letter", "--numbered", "--no-signature", "--zero-commit",
                  "-M", "--stat=1000", "--stat-graph-width=20", "--subject-prefix=PATCH", "-o", staging]
            fp += [f"--to={a}" for a in lists]
            git([*edk2_git_options(tree_root), *fp, f"{base.commit}..{tip}"], cwd=repo,
                 env=ident_env(signer, dates[-1]))
            cover = staging / COVER_LETTER
            cover.write_text(_fill_cover(cover.read_text(encoding="utf-8"), series), encoding="utf-8")
            patches = sorted(p for p in staging.glob("*.patch") if p.name != COVER_LETTER)
            if len(patches) != len(series.commits):
                raise OvmfgenError(f"git format-patch wrote {len(patches)} patches for {len(series.commits)} commits")

            # edk2's checks: each patch file, and the commits (adds the one-package-per-commit rule).
            git(["read-tree", tip], cwd=repo)    # PatchCheck lists *.dec files with `git ls-files`
            checks = patchcheck(patches, tree_root, cwd=staging)
            checks += [replace(c, name=f"commits 1-{len(series.commits)}")
                       for c in patchcheck([f"{base.commit}..{tip}"], tree_root, cwd=repo)]
            bad = [c for c in checks if not c.clean]
            if bad:
                first = bad[0]
                reason = next((ln.strip(" *") for ln in first.output.splitlines()
                               if ln.startswith((" *", "WARNING"))), "")
                raise OvmfgenError(f"PatchCheck.py rejects {first.name}: {reason or first.output.strip()[-200:]}")
        replace_dir(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OvmfgenError(f"cannot write the series to {display_path(out_dir)}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    moved = tuple(out_dir / p.name for p in patches)
    return Generated(out_dir, out_dir / COVER_LETTER, moved, series, base, tuple(checks))


def check_writable(out: Path) -> None:
    """Fail early (one line) when the series cannot be written to ``out`` (replaced as a whole)."""
    for where in (out, *out.parents):
        if where.exists():
            if not where.is_dir():
                shown = "" if where == out else f" ({display_path(where)} is a file)"
                raise OvmfgenError(f"cannot write the series to {display_path(out)}: not a directory{shown}")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent):
            pass
    except OSError as exc:
        raise OvmfgenError(f"cannot write the series to {display_path(out)}: {exc.strerror or exc}") from None


def default_output_dir(r: Resolved) -> Path:
    """``dist/patches/<platform>/`` (``dist/patches/<platform>/<tag>/`` for another tree than the default)."""
    return r.layout.patches_dir(r.platform.name, path_part(r.tree.tag))


def generate(r: Resolved, out_dir: Path | None = None, signer: Ident | None = None,
             validate_platform: bool = True) -> Generated:
    """Validate the resolved platform and write its upstream series for its edk2 tree to ``out_dir``
    (default: ``default_output_dir``), signed off by ``signer`` (default: git's user)."""
    signer = signer or default_signoff()
    out = Path(out_dir) if out_dir is not None else default_output_dir(r)
    check_writable(out)
    if validate_platform:
        validate(r)
    series = plan_series(r)
    tree = r.tree
    base = ensure_base(tree.root, tree.digest, tree.tag, tree.release_date,
                       checkout_commit(tree.root, tree.identity))
    return write_series(series, base, signer, out, tree.root)
