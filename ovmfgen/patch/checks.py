"""edk2's own checks on the series: ``GetMaintainer.py`` (Cc:/To:) and ``PatchCheck.py``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.patch.git import git_env
from ovmfgen.run import CommandError, run


@dataclass(frozen=True)
class Recipients:
    """What GetMaintainer.py says for one commit: people (Cc:) and mailing lists (To:)."""

    people: tuple[str, ...]
    lists: tuple[str, ...]


def get_maintainers(repo: Path, commit: str, tree_root: Path) -> Recipients:
    """Run edk2's ``BaseTools/Scripts/GetMaintainer.py`` on ``commit`` (Maintainers.txt from ``repo``'s worktree)."""
    script = tree_root / "BaseTools" / "Scripts" / "GetMaintainer.py"
    proc = run([sys.executable, script, commit], cwd=repo, env=git_env(), check=False)
    if proc.returncode != 0:
        raise CommandError([sys.executable, str(script), commit], proc.returncode, proc.stdout)
    people, lists = [], []
    for line in proc.stdout.splitlines():
        if not line.startswith("  "):
            continue
        address = line.strip()
        if "<" in address and ">" in address:
            people.append(address[: address.index(">") + 1])
        elif address:
            lists.append(address)
    return Recipients(tuple(sorted(set(people))), tuple(sorted(set(lists))))


@dataclass(frozen=True)
class CheckResult:
    """PatchCheck.py's verdict on one patch file (or on the commit range)."""

    name: str
    ok: bool
    output: str

    @property
    def warnings(self) -> tuple[str, ...]:
        """PatchCheck's WARNING lines (a long body line, a new binary file): reported, not fatal upstream."""
        return tuple(ln.strip() for ln in self.output.splitlines() if ln.startswith("WARNING"))

    @property
    def clean(self) -> bool:
        """Passed with no warning: what this module requires of its own series."""
        return self.ok and not self.warnings


def patchcheck(targets: Sequence[str | Path], tree_root: Path, cwd: Path | None = None) -> list[CheckResult]:
    """Run the tree's ``BaseTools/Scripts/PatchCheck.py`` (python3) on each target: a patch file or a rev range."""
    script = tree_root / "BaseTools" / "Scripts" / "PatchCheck.py"
    results = []
    for target in targets:
        proc = run([sys.executable, script, str(target)], cwd=cwd, env=git_env(), check=False)
        # PatchCheck exits -1 (255) on a problem; it prints "passed all checks" for a good message and code.
        results.append(CheckResult(Path(str(target)).name, proc.returncode == 0, proc.stdout))
    return results
