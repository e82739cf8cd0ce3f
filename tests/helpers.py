"""Helpers shared by test modules (import them from here, never from a sibling test file).

``tests/`` is on pytest's ``pythonpath`` (pyproject.toml), so a test module says ``from helpers import ...``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml

from ovmfgen import paths
from ovmfgen.builder import plan as build_plan
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.tree import Edk2Tree
from ovmfgen.paths import Layout
from ovmfgen.platform import located as platform_located
from ovmfgen.nightly import history, matrix

TESTS = Path(__file__).resolve().parent
# Who signs the patch series in the tests.
SIGNER = "Test Submitter <submitter@example.com>"
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


def shadow_tree(tree: Edk2Tree, dest: Path, name: str, edits: dict[str, tuple[bytes, bytes]]) -> Edk2Tree:
    """A checkout past ``tree`` without copying it: ``dest`` mirrors ``tree.root`` through symbolic links, but
    for the files ``edits`` changes (path -> (old, new): real copies with ``old`` replaced by ``new``, once).
    It is named ``name`` (``git describe`` of a checkout, e.g. ``edk2-stable202605-1-gabcdef1``)."""
    def mirror(src: Path, dst: Path, changed: set[str]) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            inner = {c.split("/", 1)[1] for c in changed if c.startswith(entry.name + "/")}
            if inner:
                mirror(entry, dst / entry.name, inner)
            elif entry.name in changed:
                shutil.copy2(entry, dst / entry.name)
            else:
                (dst / entry.name).symlink_to(entry)

    mirror(tree.root, dest, set(edits))
    for rel, (old, new) in edits.items():
        data = (dest / rel).read_bytes()
        assert old in data, f"{rel}: {old!r} not found"
        (dest / rel).write_bytes(data.replace(old, new, 1))
    return Edk2Tree(dest, tree.basetools, {**tree.identity, "tag": name, "commit": None})


def linked_git_checkout(tree: Edk2Tree, dest: Path) -> tuple[Path, str]:
    """A git checkout one commit past ``tree``'s release whose files are ``tree``'s (``shadow_tree``: symbolic
    links; git tracks one file of its own, tagged with the release then changed): it is named by git, as a
    developer's checkout is, and never set up. Returns its root and ``git describe`` (``TAG-1-gHASH``)."""
    root = shadow_tree(tree, dest, tree.tag, {}).root
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "commit.gpgsign=false", "-C", str(root), *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    (root / "NEXT.txt").write_text("release\n")
    git("init", "-q")
    git("add", "NEXT.txt")
    git("commit", "-q", "-m", "release")
    git("tag", tree.tag)
    (root / "NEXT.txt").write_text("upstream\n")
    git("commit", "-q", "-a", "-m", "OvmfPkg: upstream change")
    return root, git("describe", "--tags")


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


def boot_log(name: str) -> str:
    """A firmware log captured from a real boot (tests/data/boot/NAME)."""
    return (DATA / "boot" / name).read_bytes().decode("utf-8")


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


# --- a fake edk2 tree and tool versions for plans without a real tree (import the fixtures: noqa F401) ---

FAKE_IDENTITY = {"schema": 1, "tag": "edk2-stable202502", "commit": "f" * 40, "release_date": "2025-02-21",
                 "source": "debian"}
FAKE_TOOLS = {"gcc": "gcc (Debian 12.2.0-14) 12.2.0", "binutils": "GNU ld 2.40", "nasm": "NASM version 2.16.01",
              "iasl": "ASL+ Optimizing Compiler/Disassembler version 20200925"}


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """A private copy of platforms/ and overrides/ with empty build/ and dist/ roots."""
    (tmp_path / "platforms").mkdir()
    for yaml_file in paths.PLATFORMS_DIR.glob("*.yaml"):  # platforms/common/ is shared by load_platform
        shutil.copy(yaml_file, tmp_path / "platforms")
    shutil.copytree(paths.OVERRIDES_DIR, tmp_path / "overrides")
    for d in ("build", "dist"):
        (tmp_path / d).mkdir()
    return Layout(tmp_path / "platforms", tmp_path / "overrides", tmp_path / "build", tmp_path / "dist")


def patch_preimage(*diffs: bytes) -> dict[str, bytes]:
    """Files unified diffs apply to (the lines their hunks keep or remove, in the order of the hunks' old
    line numbers, across diffs): a fake tree the platform's patch overrides apply to at an offset, as they
    do to the real tree, even where two of them change the same file."""
    hunks: dict[str, list[tuple[int, bytes]]] = {}
    for diff in diffs:
        current = None
        for line in diff.splitlines(keepends=True):
            if line.startswith(b"+++ b/"):
                current = line[6:].rstrip(b"\r\n").decode()
            elif line.startswith(b"@@") and current is not None:
                hunks.setdefault(current, []).append((int(line.split()[1].split(b",")[0][1:]), b""))
            elif line.startswith((b"--- ", b"diff ", b"index ")):
                continue
            elif current is not None and line[:1] in (b" ", b"-") and hunks.get(current):
                start, text = hunks[current][-1]
                hunks[current][-1] = (start, text + line[1:])
    return {rel: b"".join(text for _, text in sorted(parts)) for rel, parts in hunks.items()}


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """locate() and the tool versions, fixed (and changeable by the test through the returned dict)."""
    state = {"identity": dict(FAKE_IDENTITY), "tools": dict(FAKE_TOOLS)}
    root = tmp_path / "edk2"
    (root / "BaseTools" / "Conf").mkdir(parents=True)
    (root / "BaseTools" / "Conf" / "tools_def.template").write_text("*_GCC5_*_*_FAMILY = GCC\n")
    patches = [p.read_bytes() for p in sorted((paths.OVERRIDES_DIR / "xen-pvh").rglob("*.patch"))]
    for rel, data in patch_preimage(*patches).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    def fake_locate(repo_root=None):
        return Edk2Tree(root=root, basetools=tmp_path / "bt" / "BaseTools", identity=dict(state["identity"]))

    monkeypatch.setattr(platform_located, "locate", fake_locate)
    monkeypatch.setattr(build_plan, "tool_versions", lambda: dict(state["tools"]))
    return state


# --- boot/xen: a captured QEMU abort, the initramfs reader, a PVH ELF on disk ---

QEMU_72_ABORT = """\
qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]
**
ERROR:../accel/tcg/tcg-accel-ops.c:83:tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())
Bail out! ERROR:../accel/tcg/tcg-accel-ops.c:83:tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())
"""


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    out, pos = {}, 0
    while True:
        hdr = data[pos:pos + 110]
        assert hdr[:6] == b"070701"
        f = [int(hdr[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos: pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, body)


def pvh_elf_file(tmp_path: Path) -> Path:
    """A small but well-formed PVH ELF (ovmfgen.elf's header around a fake 1 MiB FD) on disk."""
    from ovmfgen import elf as elfmod

    fd = bytearray(b"\xff" * (1 << 20))
    image = tmp_path / "ovmf.elf"
    image.write_bytes(elfmod.pvh_header(len(fd)) + bytes(fd[len(elfmod.pvh_header(len(fd))):]))
    return image


def sb_template_image(size: int = 4 << 20) -> bytes:
    """A 4 MiB image holding xen-pvh's empty Secure Boot variable store where its FDF puts it: the
    DATA bytes of the rendered FDF's region at the store offset, 0xFF elsewhere, an ELF magic at 0."""
    import re as _re
    from ovmfgen.platform.load import load_platform
    from ovmfgen.platform.render import render
    platform = load_platform("xen-pvh", feature_overrides={"secure_boot": "test"})
    fdf = render(platform).files()["XenOvmf.fdf"].decode()
    offset = platform.secure_boot.store_offset
    block = fdf.split(f"0x{offset:x}|0x0003f000", 1)[1].split("DATA = {", 1)[1].split("}", 1)[0]
    data = bytes(int(h, 16) for h in _re.findall(r"0x([0-9A-Fa-f]{2})", _re.sub(r"#.*", "", block)))
    image = bytearray(b"\xff" * size)
    image[0:4] = b"\x7fELF"
    image[offset:offset + len(data)] = data
    return bytes(image)
