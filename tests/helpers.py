"""Helpers shared by test modules (import them from here, never from a sibling test file).

``tests/`` is on pytest's ``pythonpath`` (pyproject.toml), so a test module says ``from helpers import ...``.
"""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import yaml

from ovmfgen.edk2 import tree as edk2
from ovmfgen.nightly import history, matrix

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"

# A stand-in for BaseTools/Source/C/GNUmakefile: "builds" each of $(APPLICATIONS) into bin/, recording
# EDK2_PATH, so a test can see that the build ran out of the tree with the right arguments.
FAKE_BASETOOLS_MAKEFILE = """\
all: $(addprefix bin/,$(APPLICATIONS))
bin/%:
\tmkdir -p bin && echo "$(EDK2_PATH)" > $@
.PHONY: all
"""


def fake_edk2_files(files_per_dir: int = 3) -> dict[str, bytes]:
    """The files of a tiny edk2-like tree (OvmfPkg/, the required submodules, a fake BaseTools)."""
    files: dict[str, bytes] = {
        "OvmfPkg/OvmfXen.dsc": b"[Defines]\n  PLATFORM_NAME = OvmfXen\n",
        "MdePkg/Include/Uefi.h": b"/* fake */\n",
        "BaseTools/Source/C/GNUmakefile": FAKE_BASETOOLS_MAKEFILE.encode(),
        "BaseTools/BinWrappers/PosixLike/GenFw": b"#!/bin/sh\n",
        ".gitmodules": b'[submodule "x"]\n\tpath = BaseTools/Source/C/BrotliCompress/brotli\n'
                       b'[submodule "y"]\n\tpath = CryptoPkg/Library/OpensslLib/openssl\n',
    }
    for sub in edk2.REQUIRED_SUBMODULES:
        files[f"{sub}/README"] = b"submodule content\n"
    for i in range(files_per_dir):
        files[f"MdePkg/Library/Fake/file{i:05d}.c"] = f"int f{i};\n".encode() * 64
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` under ``root`` (plus the empty brotli submodule directory)."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "BaseTools/Source/C/BrotliCompress/brotli").mkdir(parents=True, exist_ok=True)
    return root


def make_tar_xz(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """Write a .tar.xz holding ``members`` (name -> content) and empty ``dirs``."""
    with tarfile.open(path, "w:xz", preset=0) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_night(root: Path, date: str, names: list[str], status: str = "passed") -> Path:
    night = root / date
    cells = []
    for name in names:
        d = night / "cells" / name
        d.mkdir(parents=True)
        (d / "cell.log").write_text(f"log of {name}\n")
        cells.append({"name": name, "status": status, "steps": [], "log": f"cells/{name}/cell.log"})
    history.write_summary(night, history.make_summary(date, cells, None, "nightly.yaml", 1, 10.0))
    return night


def matrix_of(cells: list[dict], **top) -> matrix.Matrix:
    """The matrix of this data, composed as nightly.yaml is (YAML nodes with their locations)."""
    return matrix.parse_matrix(yaml.compose(yaml.safe_dump({"cells": cells, **top})), "test.yaml")


def etc_apt(tmp_path: Path, sources_list: str = "", parts: dict[str, str] | None = None) -> Path:
    """A fake /etc/apt with a sources.list and sources.list.d/ files."""
    d = tmp_path / "etc-apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list").write_text(textwrap.dedent(sources_list))
    for name, text in (parts or {}).items():
        (d / "sources.list.d" / name).write_text(textwrap.dedent(text))
    return d
