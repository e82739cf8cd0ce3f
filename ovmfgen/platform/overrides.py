"""What a platform's overrides make of the edk2 tree's files: whole-file copies and patches, in order.

An ``overrides:`` entry is a whole file (``path: P``: overrides/<platform>/[<tag>/]P replaces the
tree's P) or a unified diff (``patch: NAME.patch``: overrides/<platform>/[<tag>/]NAME.patch applied
with ``git apply`` to the files it names). Entries take effect in the order the YAML lists them, each
on what the ones before it left: a patch changes the tree's file, or a whole-file override's copy of
it. A few-line fix is then a few-line diff, which says what it changes and fails with one line when
a new tree no longer has its context, instead of a full copy that would silently revert the tree's
other changes to the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ovmfgen.edk2.releases import position
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.model import Override, Platform
from ovmfgen.run import run
from ovmfgen.ui import say

_TARGET_RE = re.compile(rb"^(---|\+\+\+) (\S+)", re.MULTILINE)


@dataclass(frozen=True)
class OverrideStep:
    """One ``overrides:`` entry's effect: the edk2 files it writes, with their bytes once it applied."""

    override: Override
    source: str                                # the entry's file, relative to overrides/<platform>/
    files: tuple[tuple[str, bytes], ...]       # edk2 path -> bytes, sorted by path


def override_source(ov: Override, overrides_root: Path, tag: str | None) -> str:
    """The entry's file relative to overrides/<platform>/ for the tree tagged ``tag``. A ``per_tree`` entry
    without a copy for a checkout past a release (``edk2-stable202605-3-g...``) takes the copy of the release
    it descends from, as a ``carried`` patch entry does."""
    source = ov.source(tag)
    if not ov.per_tree or not tag or (overrides_root / source).exists():
        return source
    pos = position(tag)
    if pos is not None and not pos.is_release and (overrides_root / ov.source(pos.release_tag)).exists():
        return ov.source(pos.release_tag)
    return source


def check_overrides(platform: Platform, overrides_root: Path, tag: str) -> None:
    """Every override must be a file inside ``overrides_root`` (the layout's overrides/<platform>/: no ``..``,
    absolute paths or escaping links). A ``per_tree`` override needs its copy for the tree tagged ``tag``
    (overrides/<platform>/<tag>/<path>)."""
    root = overrides_root
    for ov in platform.overrides:
        rel = ov.path
        if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
            raise OvmfgenError(f"override path must be relative to overrides/{platform.name}/: {rel}", ov.loc)
        if ".." in Path(rel).parts:
            raise OvmfgenError(f"override path must stay inside overrides/{platform.name}/: {rel}", ov.loc)
        rel = override_source(ov, root, tag)
        target = root / rel
        try:
            resolved = target.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            hint = f" (per_tree: one copy per edk2 tree; none for {tag})" if ov.per_tree else ""
            raise OvmfgenError(f"override not found: overrides/{platform.name}/{rel}{hint}", ov.loc) from None
        if not resolved.is_relative_to(root.resolve()):
            raise OvmfgenError(f"override overrides/{platform.name}/{rel} is a link leaving overrides/", ov.loc)
        if not resolved.is_file():
            raise OvmfgenError(f"override must be a file: overrides/{platform.name}/{rel}", ov.loc)


def patch_targets(diff: bytes, where: str, ov: Override) -> tuple[str, ...]:
    """The tree-relative files a unified diff (``git diff``/``diff -u`` with a/ and b/ prefixes) changes.

    Only changes to existing files: a diff that creates, deletes or renames a file, or names a path
    leaving the tree, is an error located at the entry (``where`` is the diff's display path).
    """
    headers = [(m.group(1), m.group(2).decode("utf-8", "replace")) for m in _TARGET_RE.finditer(diff)]
    if not headers:
        raise OvmfgenError(f"override patch {where} is not a unified diff (no '---'/'+++' lines)", ov.loc)
    out: list[str] = []
    for (k1, old), (k2, new) in zip(headers[::2], headers[1::2]):
        if (k1, k2) != (b"---", b"+++") or not old.startswith("a/") or not new.startswith("b/"):
            raise OvmfgenError(f"override patch {where}: expected '--- a/PATH' then '+++ b/PATH', "
                               f"got '{old}' and '{new}'", ov.loc)
        rel = new[2:]
        if old[2:] != rel:
            raise OvmfgenError(f"override patch {where} renames, adds or deletes a file ({old} -> {new}): "
                               "a patch override only changes existing files", ov.loc)
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts:
            raise OvmfgenError(f"override patch {where} names a path outside the edk2 tree: {rel}", ov.loc)
        if rel not in out:
            out.append(rel)
    if len(headers) % 2:
        raise OvmfgenError(f"override patch {where}: a '---' line without its '+++' line", ov.loc)
    return tuple(sorted(out))


def apply_patch(diff: bytes, base: dict[str, bytes], where: str, tag: str, ov: Override) -> dict[str, bytes]:
    """``base`` (path -> bytes, the files the diff changes) with the diff applied by ``git apply``.

    No fuzz, offsets only (git's default): a diff whose context is gone is one line naming the entry,
    the tree and git's own reason.
    """
    with tempfile.TemporaryDirectory(prefix="ovmfgen-patch-") as tmp:
        root = Path(tmp) / "tree"
        for rel, data in base.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        patch_file = Path(tmp) / "override.patch"
        patch_file.write_bytes(diff)
        # Outside any repository: git apply then patches the files under cwd. The ceiling keeps git
        # from finding a repository above the temporary directory (a TMPDIR inside a checkout).
        env = {**os.environ, "GIT_CEILING_DIRECTORIES": tmp, "LC_ALL": "C"}
        proc = run(["git", "apply", "--whitespace=nowarn", str(patch_file)], cwd=root, env=env, check=False)
        if proc.returncode != 0:
            # git's first line names the file and the line of the first hunk that no longer matches.
            lines = [ln.removeprefix("error: ").strip() for ln in (proc.stdout or "").splitlines() if ln.strip()]
            reason = lines[0] if lines else f"exit status {proc.returncode}"
            raise OvmfgenError(f"override patch {where} does not apply to {tag}: {reason} (git apply)", ov.loc)
        return {rel: (root / rel).read_bytes() for rel in sorted(base)}


def override_steps(platform: Platform, overrides_root: Path, tag: str, tree_root: Path) -> tuple[OverrideStep, ...]:
    """Each override entry of ``platform`` in order, applied on the tree at ``tree_root`` (tagged ``tag``)
    and on the entries before it; ``overrides_root`` is the layout's overrides/<platform>/."""
    current: dict[str, bytes] = {}
    steps = []
    for ov in platform.overrides:
        source = override_source(ov, overrides_root, tag)
        where = f"overrides/{platform.name}/{source}"
        try:
            data = (overrides_root / source).read_bytes()
        except OSError as exc:
            raise OvmfgenError(f"cannot read override {where}: {exc.strerror or exc}", ov.loc) from None
        if ov.patch:
            try:
                files = _patched(data, current, where, tag, tree_root, ov)
            except OvmfgenError as exc:
                if not ov.carried:
                    raise
                # A fix of an older release's upstream that no longer applies: upstream changed (most often:
                # fixed) what it fixes. Said in one line at the entry, never dropped silently.
                say(f"{exc.location or platform.name}: note: override patch {exc.message.removeprefix('override patch ')}"
                    f"; written for {ov.carried}, it is not applied to this later tree: if upstream fixed what it "
                    f"fixes, end its 'edk2:' at {ov.carried}, else rewrite it", prefix=False)
                continue
        else:
            files = {ov.path: data}
        current.update(files)
        steps.append(OverrideStep(ov, source, tuple(sorted(files.items()))))
    return tuple(steps)


def _patched(data: bytes, current: dict[str, bytes], where: str, tag: str, tree_root: Path,
             ov: Override) -> dict[str, bytes]:
    """The files the patch ``data`` makes of the tree's (or an earlier entry's) files."""
    base = {}
    for rel in patch_targets(data, where, ov):
        if rel in current:
            base[rel] = current[rel]
            continue
        try:
            base[rel] = (tree_root / rel).read_bytes()
        except OSError:
            raise OvmfgenError(f"override patch {where} changes {rel}, which {tag} does not have", ov.loc) from None
    return apply_patch(data, base, where, tag, ov)


def override_files(steps: tuple[OverrideStep, ...]) -> dict[str, bytes]:
    """Every file the overrides change (edk2 path -> its final bytes), sorted by path."""
    out: dict[str, bytes] = {}
    for step in steps:
        out.update(step.files)
    return dict(sorted(out.items()))


def override_sources(steps: tuple[OverrideStep, ...]) -> dict[str, tuple[str, ...]]:
    """edk2 path -> the overrides/<platform>/-relative files of the entries that changed it, in order."""
    out: dict[str, tuple[str, ...]] = {}
    for step in steps:
        for rel, _ in step.files:
            out[rel] = (*out.get(rel, ()), step.source)
    return dict(sorted(out.items()))
