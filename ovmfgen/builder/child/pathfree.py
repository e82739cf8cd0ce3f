"""Path-free builds: the same firmware bytes from any workspace path and any cache path.

Two clean builds of one platform, tree and target from two places differ only where a build path
reaches the output. On xen-pvh three places did (a DEBUG pair on edk2-stable202502 before these
fixes: 102 of 102 EFI images differed), and each has a fix here that leaves the edk2 tree and the
generated DSC/FDF untouched:

* **GenFw's CodeView entry.** GenFw writes the name of the ``.dll`` it converts, as given on its
  command line (an absolute path from edk2's build rules), into each image's debug directory: every
  DEBUG image holds the workspace path; RELEASE's ``--zero`` clears the bytes but keeps their number,
  so what follows moves with the path's length. ``genfw_wrapper`` is a ``GenFw`` first on PATH that
  runs the real one from the workspace with workspace-relative names: the entry then reads
  ``Build/<platform>/<target>_<tag>/X64/.../DEBUG/X.dll`` wherever the workspace is.
* **``__FILE__`` and debug paths.** ASSERT and DEBUG macros expand ``__FILE__`` into the image (edk2
  tree sources such as MdePkg's SafeString.c hold the cache path, workspace sources the workspace
  path). ``gcc_wrapper`` is a ``gcc`` first on PATH that adds ``-ffile-prefix-map=<root>/=`` for the
  workspace and each PACKAGES_PATH root, so names read ``MdePkg/Library/BaseLib/SafeString.c``.
* **The environment.** ``build_environment`` sets ``SOURCE_DATE_EPOCH`` to the edk2 release's date
  (only ``__DATE__``/``__TIME__`` would read it, and no source uses them today) and drops
  ``ELF_PACKAGE_METADATA`` (as Debian's builds do: a link must not stamp the builder's package notes).

Why wrappers and not build options: ``-ffile-prefix-map`` needs the absolute roots, and the
generated files hold no absolute paths (a DSC ``[BuildOptions]`` line would carry them); GenFw has no
option for the name it records. The wrappers live in ``<workspace>/.ovmfgen/pathfree/``, are written
by the stuart settings module on every build, and the stuart command stays rerunnable by hand.

Standard library only, no ovmfgen imports: the stuart settings module loads this file by path.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone

WRAPPER_DIR = os.path.join(".ovmfgen", "pathfree")     # inside the workspace
DROPPED_ENV = ("ELF_PACKAGE_METADATA",)                # must not reach a link (Debian unsets it too)


def prefix_map_flags(roots: Iterable[str]) -> list[str]:
    """``-ffile-prefix-map=<root>/=`` for each root, spelt as given and resolved, deepest root last.

    GCC tries the last matching map first, so a root nested in another (a tree inside the workspace)
    is stripped to its own relative names.
    """
    spellings = set()
    for root in roots:
        for spelling in (os.path.abspath(root), os.path.realpath(root)):
            spellings.add(spelling.rstrip("/") or "/")
    ordered = sorted(spellings, key=lambda s: (s.count("/"), len(s), s))
    return [f"-ffile-prefix-map={s}/=" for s in ordered if s != "/"]


def gcc_wrapper(next_gcc: str, flags: Sequence[str]) -> str:
    """A ``/bin/sh`` gcc that runs ``next_gcc`` (ccache's, the link cache's or the real one) with ``flags`` first."""
    return ("#!/bin/sh\n"
            "# ovmfgen (build/child/pathfree.py): no build path in the firmware (__FILE__, debug paths)\n"
            f"exec {shlex.quote(next_gcc)} {' '.join(shlex.quote(f) for f in flags)} \"$@\"\n")


def genfw_wrapper(real_genfw: str, workspace: str) -> str:
    """A ``/bin/sh`` GenFw that runs ``real_genfw`` in ``workspace`` with the file names under it made relative.

    A relative argument that names an existing file (or follows ``-o``) is first made absolute from
    the caller's directory; then every ``<workspace>/...`` argument loses that prefix. Option values
    that are not files (``-e PEIM``) pass unchanged.
    """
    ws = os.path.abspath(workspace).rstrip("/")
    return ("#!/bin/sh\n"
            "# ovmfgen (build/child/pathfree.py): GenFw records the .dll name it is given in the image's\n"
            "# CodeView entry, so it runs from the workspace with workspace-relative names.\n"
            f"ws={shlex.quote(ws)}\n"
            "prev=\n"
            "n=$#\n"
            "while [ \"$n\" -gt 0 ]; do\n"
            "  a=$1; shift; n=$((n - 1))\n"
            "  case $a in\n"
            "    /*|-*) ;;\n"
            "    *) if [ -e \"$a\" ] || [ \"$prev\" = -o ]; then a=$PWD/$a; fi ;;\n"
            "  esac\n"
            "  prev=$a\n"
            "  case $a in \"$ws\"/*) a=${a#\"$ws\"/} ;; esac\n"
            "  set -- \"$@\" \"$a\"\n"
            "done\n"
            f"cd \"$ws\" && exec {shlex.quote(real_genfw)} \"$@\"\n")


def source_date_epoch(release_date: str) -> int:
    """``YYYY-MM-DD`` (the edk2 release's date) -> seconds since the epoch at 00:00 UTC that day."""
    day = date.fromisoformat(release_date.strip())
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def build_environment(environ: Mapping[str, str], epoch: int | None) -> tuple[dict[str, str], list[str]]:
    """What to set and what to unset in the build's environment: (``{name: value}``, ``[names]``)."""
    setting = {"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else {}
    return setting, [name for name in DROPPED_ENV if name in environ]


def write_executable(path: str, text: str) -> None:
    """Write ``text`` to ``path`` as an executable script (temp file + rename), unless it is already there."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text and os.access(path, os.X_OK):
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)


def install_wrappers(workspace: str, packages_path: Sequence[str], next_gcc: str, real_genfw: str) -> str:
    """Write the gcc and GenFw wrappers into ``<workspace>/.ovmfgen/pathfree/``; returns that directory."""
    bin_dir = os.path.join(os.path.abspath(workspace), WRAPPER_DIR)
    write_executable(os.path.join(bin_dir, "gcc"),
                     gcc_wrapper(next_gcc, prefix_map_flags([workspace, *packages_path])))
    write_executable(os.path.join(bin_dir, "GenFw"), genfw_wrapper(real_genfw, workspace))
    return bin_dir
