"""An edk2 checkout nobody pinned: the 202605 tree as a git repository, tagged, with upstream-like commits.

``make_checkout(tarball, dest)`` unpacks the release tarball, commits it and tags the commit
``edk2-stable202605``, then adds the commits of ``UPSTREAM_COMMITS`` on top, so ``git describe --tags``
says ``edk2-stable202605-3-g<sha>``. Each commit stands for one kind of drift the nightly meets:

1. a renamed function in a file xen-pvh does not patch (XenPlatformPei's ClearCache.c): nothing to
   say, the build takes it;
2. upstream fixes the bug one of xen-pvh's 202605-only patches fixes (the Nocheck INF now lists
   MemDebugLogLib): that patch no longer applies, and ovmfgen says so in one line;
3. a changed PCD in OvmfXen.dsc: ``invoke diff`` shows it as a difference nobody explained.

Also runnable: ``python tests/integration/checkout.py TARBALL DEST``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

TAG = "edk2-stable202605"
TOPDIR = "edk2-stable202605"
_ENV = {"GIT_AUTHOR_NAME": "Upstream Dev", "GIT_AUTHOR_EMAIL": "dev@example.invalid",
        "GIT_COMMITTER_NAME": "Upstream Dev", "GIT_COMMITTER_EMAIL": "dev@example.invalid"}


def _git(root: Path, *args: str, date: str = "2026-05-08T12:00:00+00:00") -> str:
    env = {**os.environ, **_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    proc = subprocess.run(["git", "-C", str(root), "-c", "core.autocrlf=false", "-c", "commit.gpgsign=false",
                           *args], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def _edit(root: Path, rel: str, old: bytes, new: bytes, count: int = 1) -> None:
    path = root / rel
    data = path.read_bytes()
    assert data.count(old) >= 1, f"{rel}: {old!r} not found"
    path.write_bytes(data.replace(old, new, count if count > 0 else -1))


def _rename_clear_cache(root: Path) -> str:
    path = root / "OvmfPkg/XenPlatformPei/ClearCache.c"
    path.write_bytes(re.sub(rb"\bClearCache\b", b"ClearCacheOnProcessor", path.read_bytes()))
    return "OvmfPkg/XenPlatformPei: Rename ClearCache() to ClearCacheOnProcessor()"


def _fix_nocheck_inf(root: Path) -> str:
    _edit(root, "OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf",
          b"  DebugPrintErrorLevelLib\r\n", b"  DebugPrintErrorLevelLib\r\n  MemDebugLogLib\r\n")
    return "OvmfPkg/PlatformDebugLibIoPort: Nocheck instance needs MemDebugLogLib"


def _change_xen_dsc_pcd(root: Path) -> str:
    _edit(root, "OvmfPkg/OvmfXen.dsc", b"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|FALSE",
          b"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|TRUE")
    return "OvmfPkg/OvmfXen: Report status codes on the serial port"


UPSTREAM_COMMITS = (_rename_clear_cache, _fix_nocheck_inf, _change_xen_dsc_pcd)


def make_checkout(tarball: Path, dest: Path) -> Path:
    """The checkout at ``dest`` (made once; a complete one is reused): HEAD is edk2-stable202605-3-g<sha>."""
    root = dest / "edk2"
    done = dest / ".complete"
    if done.is_file() and (root / ".git").is_dir():
        return root
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / ".unpack"
    with tarfile.open(tarball) as tar:
        tar.extractall(staging, filter="tar")
    (staging / TOPDIR).rename(root)
    staging.rmdir()
    _git(root, "init", "-q", "-b", "master")
    # No background `git gc --auto` after the commits: it would prune loose objects while ovmfgen reads the tree.
    _git(root, "config", "gc.auto", "0")
    _git(root, "add", "-A", "-f", ".")
    _git(root, "commit", "-q", "-m", "edk2-stable202605")
    _git(root, "tag", TAG)
    for i, change in enumerate(UPSTREAM_COMMITS, start=1):
        subject = change(root)
        _git(root, "commit", "-q", "-a", "-m", subject, date=f"2026-06-0{i}T12:00:00+00:00")
    done.write_text(_git(root, "describe", "--tags", "HEAD") + "\n")
    return root


if __name__ == "__main__":
    print(make_checkout(Path(sys.argv[1]), Path(sys.argv[2])))
