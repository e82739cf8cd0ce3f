"""The build workspace: its per-workspace lock and the rendered files + overrides written into it.

Locking
-------
A per-workspace ``fcntl`` lock serialises builds of the same workspace; the stuart child inherits
it, so a killed ovmfgen does not let a second build into a workspace still being written.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ovmfgen.builder.plan import STATE_DIR, Plan
from ovmfgen.fsutil import Lock, atomic_write_bytes, exclusive, write_if_changed


def workspace_lock(path: Path, what: str) -> contextlib.AbstractContextManager[Lock]:
    """Hold the workspace's lock at ``path``; say "waiting for lock" (with the holder's pid) when another
    build of ``what`` has it."""
    return exclusive(path, f"another build of {what} is running")


def prepare_workspace(p: Plan) -> list[str]:
    """Write the rendered files and overrides into the workspace (only where changed).

    Overrides the platform no longer lists are removed (they would still shadow edk2's files).
    Returns the workspace-relative paths written.
    """
    ws = p.workspace
    written = [rel for rel, data in p.rendered.items() if write_if_changed(ws / rel, data)]
    state = ws / STATE_DIR / "overrides.json"
    try:
        previous = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = []
    for rel in previous if isinstance(previous, list) else []:
        if rel not in p.overrides and rel not in p.rendered:
            (ws / rel).unlink(missing_ok=True)
    written += [rel for rel, data in p.overrides.items() if write_if_changed(ws / rel, data)]
    if sorted(p.overrides) != (sorted(previous) if isinstance(previous, list) else []):
        # A file that starts or stops shadowing the tree's changes where edk2 finds a module (its INF
        # and sources): edk2 skips a module's AutoGen while the files in its AutoGenTimeStamp are
        # unchanged, and those name the old place. Without the stamps it resolves every module again.
        for stamp in (ws / "Build").rglob("AutoGenTimeStamp") if (ws / "Build").is_dir() else ():
            stamp.unlink(missing_ok=True)
    atomic_write_bytes(state, (json.dumps(sorted(p.overrides), indent=1) + "\n").encode())
    return written
