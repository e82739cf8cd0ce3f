"""What a maintainer does with the series: ``git am`` onto a pristine tree and build after every commit."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ovmfgen import elf
from ovmfgen.builder.diagnose import summarize_failure
from ovmfgen.edk2 import conventions
from ovmfgen.edk2.conventions import ARCH, TARGETS, toolchain_tag
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import write_if_changed
from ovmfgen.patch.git import BASE_IDENT, RAW_ATTRIBUTES, BaseRepo, checkout_commit, ensure_base, git
from ovmfgen.patch.series import Ident
from ovmfgen.patch.write import COVER_LETTER
from ovmfgen.platform.model import Platform
from ovmfgen.platform.resolve import Resolved
from ovmfgen.run import CommandError, run



def patch_files(patch_dir: Path) -> list[Path]:
    """The patches of a series directory in order, cover letter excluded."""
    found = sorted(p for p in Path(patch_dir).glob("[0-9][0-9][0-9][0-9]-*.patch") if p.name != COVER_LETTER)
    if not found:
        raise OvmfgenError(f"no patches in {display_path(patch_dir)}")
    return found


def apply_series(base: BaseRepo, patches: Sequence[Path], dest: Path, committer: Ident) -> list[str]:
    """Clone the base into ``dest`` (a pristine copy of the pinned tree) and ``git am`` the patches.

    ``--keep-cr``: edk2's files are CRLF (edk2's SetupGit.py sets am.keepcr). Returns the new commits,
    oldest first.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(["clone", "-q", "-c", "core.autocrlf=false", base.git_dir, dest])
    (dest / ".git" / "info").mkdir(exist_ok=True)
    (dest / ".git" / "info" / "attributes").write_text(RAW_ATTRIBUTES, encoding="utf-8")
    env = {"GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}
    try:
        git(["am", "-q", "--keep-cr", *[p.resolve() for p in patches]], cwd=dest, env=env)
    except CommandError as exc:
        raise OvmfgenError(f"git am does not apply the series to {base.commit[:12]} (the pinned tree): "
                           f"{exc.tail(3).strip()}") from None
    return git(["rev-list", "--reverse", f"{base.commit}..HEAD"], cwd=dest).split()


@dataclass(frozen=True)
class StepResult:
    """What building the tree after one commit gave."""

    index: int              # 1-based position in the series
    commit: str
    subject: str
    status: str             # "built" | "nothing to build" | "failed"
    seconds: float
    detail: str
    fd: Path | None = None

    @property
    def ok(self) -> bool:
        """A step passes when it built (and the FD checked out) or had nothing to build."""
        return self.status != "failed"

    def line(self, total: int) -> str:
        """One report line: ``[2/3] subject: built in 212 s (...)``."""
        took = f" in {self.seconds:.0f} s" if self.status != "nothing to build" else ""
        return f"[{self.index}/{total}] {self.subject}: {self.status}{took}" + (f" ({self.detail})" if self.detail else "")


StepOutcome = tuple[str, str, "Path | None"]   # status, detail, FD


def check_each(repo: Path, commits: Sequence[str], step: Callable[[Path, int], StepOutcome],
               progress: Callable[[str], None] | None = None) -> list[StepResult]:
    """Check out every commit of ``commits`` in turn in ``repo`` and run ``step(repo, index)`` on it.

    One workspace for all commits, so a build step is incremental after the first (git checkout only
    touches the files a commit changes). ``progress`` gets a line before and after each step. Every commit is checked even after a failure, so the report
    says which ones are broken; the tip is checked out again at the end.
    """
    results = []
    tip = git(["rev-parse", "HEAD"], cwd=repo).strip()
    try:
        for i, commit in enumerate(commits, 1):
            git(["checkout", "-q", "--detach", commit], cwd=repo)
            subject = git(["log", "-1", "--format=%s", commit], cwd=repo).strip()
            if progress is not None:
                progress(f"[{i}/{len(commits)}] {subject}: checking ...")
            start = time.monotonic()
            try:
                status, detail, fd = step(repo, i)
            except OvmfgenError as exc:
                status, detail, fd = "failed", exc.message, None
            results.append(StepResult(i, commit, subject, status, time.monotonic() - start, detail, fd))
            if progress is not None:
                progress(results[-1].line(len(commits)))
    finally:
        git(["checkout", "-q", "--detach", tip], cwd=repo)
    return results


def build_env(workspace: Path, basetools: Path, conf_dir: Path) -> dict[str, str]:
    """The environment of a plain upstream ``build`` in ``workspace`` (what edksetup.sh would set up)."""
    # Written only when they change: the next (incremental) build then sees the same Conf.
    for name in ("target", "tools_def", "build_rule"):
        write_if_changed(conf_dir / f"{name}.txt", (basetools / "Conf" / f"{name}.template").read_bytes())
    return conventions.build_env(workspace, basetools, conf_dir)


def edk2_build_step(platform: Platform, basetools: Path, work: Path, target: str = "DEBUG",
                    jobs: int | None = None) -> Callable[[Path, int], StepOutcome]:
    """A ``check_each`` step: plain upstream ``build -p <dsc> -a X64 -t <tag> -b TARGET``, then ``check_elf``
    (``<tag>``: the tree's tool chain tag, GCC on both known trees).

    A commit without the platform DSC has nothing to build. Logs go to ``work/build-<n>.log``.
    """
    if target not in TARGETS:
        raise OvmfgenError(f"target '{target}' is not one of {', '.join(TARGETS)}")
    output_dir = platform.header_field("OUTPUT_DIRECTORY") or f"Build/{platform.dsc_name}"

    def step(repo: Path, index: int) -> StepOutcome:
        if not (repo / platform.dsc_path).is_file():
            return "nothing to build", f"no {platform.dsc_path} yet", None
        env = build_env(repo, basetools, work / "Conf")
        tag = toolchain_tag(repo)
        log = work / f"build-{index}.log"
        argv = ["build", "-p", platform.dsc_path, "-a", ARCH, "-t", tag, "-b", target,
                "-n", str(jobs or os.cpu_count() or 1)]
        proc = run(argv, cwd=repo, env=env, stdout_path=log, check=False, timeout=3 * 3600)
        if proc.returncode != 0:
            return "failed", f"build exit {proc.returncode}: {_first_error(log)}; log {display_path(log)}", None
        fd = repo / output_dir / f"{target}_{tag}" / "FV" / f"{platform.fd_name}.fd"
        if not fd.is_file():
            return "failed", f"build succeeded but wrote no {display_path(fd)}", None
        findings = elf.check_elf(fd.read_bytes())
        bad = [f for f in findings if not f.ok]
        if bad:
            return "failed", f"{fd.name} fails check-elf: {bad[0].rule}: {bad[0].detail}", fd
        return "built", f"{fd.name} is a PVH ELF: check-elf {len(findings)}/{len(findings)} ok", fd

    return step


def _first_error(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    try:
        return summarize_failure(text).message
    except Exception:  # noqa: BLE001 - the summary is a convenience; fall back to the log's error lines
        errors = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()]
        return errors[0] if errors else (text.strip().splitlines() or ["empty log"])[-1]


@dataclass(frozen=True)
class Verification:
    """``git am`` + per-commit builds of a series in a pristine clone of the pinned tree."""

    repo: Path
    commits: tuple[str, ...]
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        """Every step passed."""
        return all(s.ok for s in self.steps)

    @property
    def fd(self) -> Path | None:
        """The FD built at the tip of the series (the last step that built one)."""
        return next((s.fd for s in reversed(self.steps) if s.fd is not None), None)


def verify_series(patch_dir: Path, work: Path, r: Resolved, each: bool = True, target: str = "DEBUG",
                  jobs: int | None = None, progress: Callable[[str], None] | None = None) -> Verification:
    """Apply the series in ``patch_dir`` to a pristine clone of the resolved platform's edk2 tree in
    ``work`` and build it.

    ``each``: build after every commit (bisectability); otherwise only at the tip. Nothing of ovmfgen is
    involved in the build: upstream's ``build`` with EDK_TOOLS_PATH = the pinned BaseTools, WORKSPACE =
    the clone, Conf from the BaseTools templates.
    """
    tree, platform = r.tree, r.platform
    base = ensure_base(tree.root, tree.digest, tree.tag, tree.release_date,
                       checkout_commit(tree.root, tree.identity))
    work = Path(work)
    repo = work / "edk2"
    commits = apply_series(base, patch_files(patch_dir), repo, Ident(*BASE_IDENT))
    step = edk2_build_step(platform, tree.basetools, work, target=target, jobs=jobs)
    chosen = commits if each else commits[-1:]
    steps = check_each(repo, chosen, step, progress)
    if not each:
        steps = [replace(s, index=len(commits)) for s in steps]
    return Verification(repo, tuple(commits), tuple(steps))
