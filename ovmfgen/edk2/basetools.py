"""BaseTools for an edk2 tree: copied out of the tree into the cache and built there (the tree stays read-only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ovmfgen.cacheentry import staged
from ovmfgen.edk2 import tree as edk2
from ovmfgen.errors import OvmfgenError
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say


def build_basetools(tree_root: Path, directory: Path) -> Path:
    """Copy ``tree_root``/BaseTools to ``directory``/basetools and build its C tools there.

    The edk2 tree itself is never written to. Returns EDK_TOOLS_PATH.
    """
    final = directory / edk2.BASETOOLS_DIR
    with staged(final) as staging:
        bt = staging / "BaseTools"
        shutil.copytree(tree_root / "BaseTools", bt, symlinks=True)
        jobs = str(max(1, os.cpu_count() or 1))
        say(f"building BaseTools (make -j{jobs}, without BrotliCompress) in {final}")
        argv = ["make", "-C", bt / "Source" / "C", f"-j{jobs}", f"EDK2_PATH={tree_root}",
                f"APPLICATIONS={' '.join(edk2.BASETOOLS_APPLICATIONS)}"]
        try:
            run(argv, stdout_path=staging / "build.log", timeout=3600)
        except CommandError as exc:
            log = exc.save_log(edk2.edk2_cache() / "basetools.log")
            raise OvmfgenError(f"BaseTools build failed: {exc.first_error()} (full log: {log})") from None
        missing = [a for a in edk2.BASETOOLS_APPLICATIONS if not (bt / "Source" / "C" / "bin" / a).is_file()]
        if missing:
            raise OvmfgenError(f"BaseTools build produced no {', '.join(missing)}")
        (staging / edk2.BASETOOLS_MARKER).write_text(
            json.dumps({"edk2_root": str(tree_root), "applications": list(edk2.BASETOOLS_APPLICATIONS)}) + "\n")
    return final / "BaseTools"
