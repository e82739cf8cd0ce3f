"""Which files must come along when an override replaces one source file of an edk2 module.

edk2 finds a module's INF in the first of WORKSPACE and PACKAGES_PATH that holds it, and then takes
every source the INF lists from that INF's directory only. An override of a module's source file
alone (overrides/<platform>/OvmfPkg/Sec/SecMain.c) is therefore never compiled: the INF is found in
the edk2 tree and so is its SecMain.c. So the workspace also gets the rest of that module's directory
from the tree (the INF, the other sources, and what they include by a relative path leaving the
directory), unchanged: the module then resolves in the workspace, with the override in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath


def module_dir(rel: str, edk2_root: Path) -> str | None:
    """The directory of the module ``rel`` (a tree-relative file) belongs to: the nearest directory above
    it holding an ``.inf``, below its package (the directory holding a ``.dec``); None if there is none."""
    parent = PurePosixPath(rel).parent
    while parent.parts:
        here = edk2_root / parent
        if any(here.glob("*.dec")):
            return None
        if any(here.glob("*.inf")):
            return parent.as_posix()
        parent = parent.parent
    return None


# A quoted include that climbs out of its directory (SecEntry.nasm: %include "../../IntelTdx/...").
_RELATIVE_INCLUDE = re.compile(rb'^\s*[%#]\s*include\s+"(\.\./[^"]+)"', re.MULTILINE)


def module_companions(overridden: Iterable[str], edk2_root: Path) -> dict[str, bytes]:
    """The tree's files (path -> bytes) that must sit beside the overridden source files: everything
    else in their modules' directories, and the files those include by a path climbing out of their
    directory (resolved from the including file, as the assembler and compiler do), sorted by path."""
    wanted = set(overridden)
    out: dict[str, bytes] = {}
    queue: list[str] = []
    for rel in sorted(wanted):
        directory = module_dir(rel, edk2_root)
        if directory is None:
            continue
        for path in sorted((edk2_root / directory).rglob("*")):
            other = path.relative_to(edk2_root).as_posix()
            if path.is_file() and other not in wanted and other not in out:
                out[other] = path.read_bytes()
                queue.append(other)
    root = edk2_root.resolve()
    while queue:
        rel = queue.pop()
        for inc in _RELATIVE_INCLUDE.findall(out[rel]):
            target = (edk2_root / PurePosixPath(rel).parent / inc.decode("utf-8", "replace")).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                continue
            other = target.relative_to(root).as_posix()
            if other not in wanted and other not in out:
                out[other] = target.read_bytes()
                queue.append(other)
    return dict(sorted(out.items()))
