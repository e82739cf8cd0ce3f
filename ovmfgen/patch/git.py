"""git plumbing for the series: the environment, the base snapshot repository and commits made without a checkout."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ovmfgen import paths
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.patch.series import Ident
from ovmfgen.run import run
from ovmfgen.ui import say

BASE_SCHEMA = 1             # bump when the way the base snapshot is made changes
BASE_MARKER = "ovmfgen-base"
BASE_REF = "refs/heads/base"
# Identity of the base snapshot commit (never shown in a patch: --zero-commit, no --base).
BASE_IDENT = ("ovmfgen", "ovmfgen@localhost.invalid")
# Files an earlier build may have left in a tree that is not pristine: never part of the base.
BASE_EXCLUDES = (
    ":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc", ":(exclude)Build",
    ":(exclude)Conf/target.txt", ":(exclude)Conf/tools_def.txt", ":(exclude)Conf/build_rule.txt",
    ":(exclude)Conf/.cache",
)

# edk2's SetupGit.py settings that shape `git format-patch` output (diff order, hunk headers, abbrev).
INI_XFUNCNAME = r"^\[[A-Za-z0-9_., ]+]"


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every git command: the user's and the system's git configuration shut out.

    (Their ``format.*``/``diff.*`` settings would change the patch files; ``core.autocrlf`` the blobs.)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
    env.update(extra or {})
    return env


def git(args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
         env: Mapping[str, str] | None = None, check: bool = True) -> str:
    proc = run(["git", *args], cwd=cwd, env=git_env(env), check=check)
    return proc.stdout


def edk2_git_options(tree_root: Path) -> list[str]:
    """``-c`` options for the diff settings edk2's BaseTools/Scripts/SetupGit.py configures."""
    conf = tree_root / "BaseTools" / "Conf"
    return ["-c", "core.abbrev=12", "-c", "diff.algorithm=patience", "-c", "diff.renames=copies",
            "-c", f"diff.orderFile={conf / 'diff.order'}", "-c", f"core.attributesFile={conf / 'gitattributes'}",
            "-c", f"diff.ini.xfuncname={INI_XFUNCNAME}", "-c", "core.whitespace=cr-at-eol",
            "-c", "core.autocrlf=false", "-c", "core.safecrlf=false"]


def commit_date(release_date: str, minutes: int) -> str:
    """A git date ``minutes`` after midnight UTC of ``release_date`` (YYYY-MM-DD)."""
    try:
        day = datetime.strptime(release_date, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise OvmfgenError(f"edk2 release date '{release_date}' is not YYYY-MM-DD") from None
    return f"@{int((day + timedelta(minutes=minutes)).timestamp())} +0000"


def ident_env(ident: Ident, date: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": ident.name, "GIT_AUTHOR_EMAIL": ident.email, "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": ident.name, "GIT_COMMITTER_EMAIL": ident.email, "GIT_COMMITTER_DATE": date}


# Attributes that make git store and check out every file byte for byte (no EOL conversion, filters).
RAW_ATTRIBUTES = "* -text -filter -ident -eol -working-tree-encoding\n"


@dataclass(frozen=True)
class BaseRepo:
    """The bare repository holding the base snapshot of the edk2 tree (one commit, ``refs/heads/base``)."""

    git_dir: Path
    commit: str


def base_dir(tree_digest: str, tag: str) -> Path:
    """Where the base snapshot of the tree with identity ``tree_digest`` is kept in the cache."""
    return paths.cache_dir() / "patch" / f"base-{tag}-{tree_digest[:16]}-v{BASE_SCHEMA}.git"


def ensure_base(tree_root: Path, tree_digest: str, tag: str, release_date: str,
                commit: str | None = None) -> BaseRepo:
    """The base commit: a snapshot of ``tree_root`` in a bare repo in the cache (made once, ~15 s); for a
    checkout (``commit``: ``checkout_commit``), that commit itself, seen through the checkout's objects.

    The tree is only read (``git --work-tree``); its ``.gitignore`` files are overridden (``add -f``:
    upstream tracks generated files some of them name) and attributes switched off, so the snapshot
    holds the tree's bytes exactly. Made in a temporary directory and renamed into place.
    """
    final = base_dir(tree_digest, tag)
    marker = final / BASE_MARKER
    if marker.is_file():
        made = marker.read_text(encoding="utf-8").strip()
        if (commit is None or made == commit) and run(
                ["git", "--git-dir", final, "cat-file", "-e", f"{made}^{{commit}}"], env=git_env(),
                check=False).returncode == 0:
            return BaseRepo(final, made)
    if not (tree_root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{tree_root} is not an edk2 tree (no OvmfPkg/)")
    final.parent.mkdir(parents=True, exist_ok=True)
    if commit is not None:
        return _checkout_base(final, tree_root, commit)
    say(f"making the base commit: a snapshot of the edk2 tree ({tag}) in {display_path(final)} (once)")
    with _staged_base(final) as tmp:
        index = {"GIT_INDEX_FILE": str(tmp / "snapshot.index")}
        common = ["--git-dir", tmp, "--work-tree", tree_root, "-c", "core.autocrlf=false", "-c", "core.safecrlf=false"]
        git([*common, "add", "-A", "-f", "--", ".", *BASE_EXCLUDES], env=index)
        tree = git([*common, "write-tree"], env=index).strip()
        message = f"{tag}\n\nThe edk2 tree ovmfgen builds against, as a snapshot (no history).\n"
        env = ident_env(Ident(*BASE_IDENT), commit_date(release_date, 0))
        commit = run(["git", "--git-dir", tmp, "commit-tree", tree], env=git_env(env),
                     input_text=message).stdout.strip()
        _set_base(tmp, commit)
        (tmp / "snapshot.index").unlink(missing_ok=True)
        if marker.is_file():        # another ovmfgen finished first: keep its (identical) snapshot
            shutil.rmtree(tmp)
            return BaseRepo(final, marker.read_text(encoding="utf-8").strip())
    return BaseRepo(final, commit)


@contextmanager
def _staged_base(final: Path) -> Iterator[Path]:
    """A new bare base repository (raw attributes) made in a temporary directory beside ``final`` and
    renamed to ``final`` (an incomplete one there replaced) when the block ends, unless the block removed
    it; removed when the block raises."""
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=final.parent))
    try:
        git(["init", "-q", "--bare", tmp])
        (tmp / "info").mkdir(exist_ok=True)
        (tmp / "info" / "attributes").write_text(RAW_ATTRIBUTES, encoding="utf-8")
        yield tmp
        if tmp.exists():
            if final.exists():      # an incomplete one (no marker): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _set_base(git_dir: Path, commit: str) -> None:
    """Point a base repository's ``refs/heads/base`` (and HEAD) at ``commit`` and mark it complete."""
    git(["--git-dir", git_dir, "update-ref", BASE_REF, commit])
    git(["--git-dir", git_dir, "symbolic-ref", "HEAD", BASE_REF])
    (git_dir / BASE_MARKER).write_text(commit + "\n", encoding="utf-8")


def checkout_commit(tree_root: Path, identity: Mapping[str, object]) -> str | None:
    """The commit a series on this tree is based on when the tree is a git checkout (``$OVMFGEN_EDK2``, the
    submodule): the commit its identity names. None for a tree unpacked from a tarball (a snapshot then).

    The series must apply to that commit, so the checkout's tracked files must be that commit's: a checkout
    with uncommitted changes is refused in one line (the series would carry them unannounced).
    """
    commit = identity.get("commit")
    if identity.get("source") not in ("env", "submodule") or not isinstance(commit, str) or \
            not (tree_root / ".git").exists():
        return None
    if run(["git", "-C", tree_root, "diff", "--quiet", "HEAD", "--"], env=git_env(), check=False).returncode != 0:
        raise OvmfgenError(f"the edk2 checkout {tree_root} has uncommitted changes to tracked files: the series "
                           f"is based on its commit {commit[:12]}; commit or stash them first")
    return commit


def _checkout_base(final: Path, tree_root: Path, commit: str) -> BaseRepo:
    """The base repository of a checkout: a bare repo seeing the checkout's objects (alternates) with
    ``refs/heads/base`` at ``commit``, the checkout's own commit (no snapshot: the series' ``base-commit:``
    is a commit upstream and the developer both have)."""
    objects = Path(git(["-C", tree_root, "rev-parse", "--path-format=absolute", "--git-common-dir"]).strip())
    with _staged_base(final) as tmp:
        (tmp / "objects" / "info" / "alternates").write_text(str(objects / "objects") + "\n", encoding="utf-8")
        _set_base(tmp, commit)
    return BaseRepo(final, commit)


def work_repo(base: BaseRepo, where: Path) -> Path:
    """An empty repo at ``where`` that sees the base's objects (alternates): commits without a checkout."""
    git(["init", "-q", where])
    (where / ".git" / "objects" / "info" / "alternates").write_text(
        str((base.git_dir / "objects").resolve()) + "\n", encoding="utf-8")
    (where / ".git" / "info").mkdir(exist_ok=True)
    (where / ".git" / "info" / "attributes").write_text(RAW_ATTRIBUTES, encoding="utf-8")
    return where


def make_commit(repo: Path, parent: str, files: Sequence[tuple[str, bytes]], message: str, env: Mapping[str, str],
                 scratch: Path) -> str:
    """A commit on ``parent`` writing ``files``, through a private index (nothing checked out)."""
    index = {"GIT_INDEX_FILE": str(scratch / "commit.index")}
    git(["read-tree", parent], cwd=repo, env=index)
    for i, (rel, data) in enumerate(files):
        blob_file = scratch / f"blob{i}"
        blob_file.write_bytes(data)
        blob = git(["hash-object", "-w", "--no-filters", blob_file], cwd=repo).strip()
        existing = git(["ls-files", "-s", "--", rel], cwd=repo, env=index).split()
        mode = existing[0] if existing else "100644"     # a changed file keeps its mode
        git(["update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}"], cwd=repo, env=index)
    tree = git(["write-tree"], cwd=repo, env=index).strip()
    return run(["git", "commit-tree", tree, "-p", parent], cwd=repo, env=git_env(env),
               input_text=message).stdout.strip()
