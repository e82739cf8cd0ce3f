"""Reproducibility comparison: which FVs and EFI modules differ between two builds, and why."""

from __future__ import annotations

import struct
from pathlib import Path

from ovmfgen.nightly import repro as nightly_repro


def _elf(sections: dict[str, bytes], extra_comment: bytes = b"") -> bytes:
    """A minimal ELF64 LE file: the given SHF_ALLOC sections plus a non-allocated .comment."""
    names = b"\0" + b"\0".join(n.encode() for n in [*sections, ".comment", ".shstrtab"]) + b"\0"
    body, offsets = b"", []
    for data in [*sections.values(), extra_comment, names]:
        offsets.append(64 + len(body))
        body += data
    shoff = 64 + len(body)
    count = len(sections) + 3
    head = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0,
                                                                64, count, count - 1)
    shdrs = bytes(64)
    name_off = 1
    for k, (name, data) in enumerate([*sections.items(), (".comment", extra_comment), (".shstrtab", names)]):
        flags = 0x2 if name in sections else 0
        shdrs += struct.pack("<IIQQQQIIQQ", name_off, 3 if name == ".shstrtab" else 1, flags, 0, offsets[k],
                             len(data), 0, 0, 1, 0)
        name_off += len(name) + 1
    return head + body + shdrs


def _fake_build(root: Path, dxe: bytes, dll_text: bytes = b"code", comment: bytes = b"") -> tuple[Path, Path]:
    out, dist = root / "Build" / "RELEASE_GCC5", root / "dist"
    mod = "X64/MdeModulePkg/Core/Dxe/DxeMain"
    for rel, data in {"FV/SECFV.Fv": b"sec", "FV/DXEFV.Fv": dxe, "FV/Ffs/1234DxeCore/1234.ffs": dxe,
                      "FV/Ffs/5678Sec/5678.ffs": b"sec", f"{mod}/OUTPUT/DxeCore.efi": dxe,
                      f"{mod}/DEBUG/DxeCore.efi": dxe, "X64/DxeCore.efi": dxe,
                      f"{mod}/DEBUG/DxeCore.dll": _elf({".text": dll_text, ".data": b"data"}, comment),
                      "X64/SecMain/OUTPUT/SecMain.efi": b"sec"}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    dist.mkdir(parents=True)
    (dist / "OVMF.fd").write_bytes(b"sec" + dxe)
    (dist / "manifest.json").write_text(str(root))  # differs always: not a firmware output
    return out, dist


def test_elf_alloc_sections_reads_what_the_image_holds():
    data = _elf({".text": b"\x90\xc3", ".data": b"xy"}, b"GCC: (Debian 12.2.0-14)")
    assert nightly_repro.elf_alloc_sections(data) == {".text": b"\x90\xc3", ".data": b"xy"}
    assert nightly_repro.elf_alloc_sections(b"MZ not an elf") is None


def test_repro_comparison_names_the_fv_and_modules_that_differ_and_why(tmp_path: Path):
    a_out, a_dist = _fake_build(tmp_path / "a", b"dxe-1", comment=b"built in /a")
    same_out, same_dist = _fake_build(tmp_path / "ccc", b"dxe-1", comment=b"built in /ccc")
    same = nightly_repro.compare_build_outputs(a_out, same_out, a_dist, same_dist)
    assert same["identical"] and same["outputs"] == {"OVMF.fd": True} and same["modules"] == []

    # Same linked code, different PE image: the difference came from the ELF->PE conversion.
    b_out, b_dist = _fake_build(tmp_path / "bb", b"dxe-2", comment=b"built in /bb")
    diff = nightly_repro.compare_build_outputs(a_out, b_out, a_dist, b_dist)
    assert not diff["identical"] and diff["outputs"] == {"OVMF.fd": False}
    assert diff["fvs"] == ["DXEFV.Fv"]
    assert diff["modules"] == [{"module": "DxeCore", "path": "X64/MdeModulePkg/Core/Dxe/DxeMain/OUTPUT/DxeCore.efi",
                                "cause": "pe-conversion", "embeds": []}]
    assert (diff["modules_total"], diff["modules_differing"], diff["ffs_differing"]) == (2, 1, 1)
    assert diff["files"] == ["X64/MdeModulePkg/Core/Dxe/DxeMain/OUTPUT/DxeCore.efi", "FV/Ffs/1234DxeCore/1234.ffs"]
    detail = nightly_repro.repro_detail(diff)
    assert detail.startswith("OVMF.fd differ; FVs DXEFV; 1 of 2 EFI modules differ (DxeCore)")
    assert "GenFw" in detail

    # Different code: the compiler or linker produced something else.
    c_out, c_dist = _fake_build(tmp_path / "dddd", b"dxe-3", dll_text=b"other code")
    compiled = nightly_repro.compare_build_outputs(a_out, c_out, a_dist, c_dist)
    assert compiled["modules"][0]["cause"] == "compiled"
    assert "1 already differ as linked ELF" in nightly_repro.repro_detail(compiled)


def test_differing_modules_say_which_build_path_they_hold(tmp_path: Path):
    a_out, a_dist = _fake_build(tmp_path / "a", b"dxe /cache-a/edk2/tree/MdePkg/SafeString.c")
    b_out, b_dist = _fake_build(tmp_path / "b", b"dxe /cache-bb/edk2/tree/MdePkg/SafeString.c /ws-b/Build/X.dll")
    roots = {"workspace": ["/ws-a", "/ws-b"], "cache": ["/cache-a", "/cache-bb"]}
    cmp = nightly_repro.compare_build_outputs(a_out, b_out, a_dist, b_dist, roots=roots)
    assert cmp["modules"][0]["embeds"] == ["cache", "workspace"]
    detail = nightly_repro.repro_detail(cmp)
    assert "1 hold the cache path" in detail and "1 hold the workspace path" in detail
    assert nightly_repro.embedded_paths(b"nothing here", roots) == []


def test_the_second_build_gets_the_tree_at_another_cache_path(tmp_path: Path, monkeypatch):
    """moved_cache: the tree's cache directory hard-linked under another cache root; None for a tree elsewhere."""
    from ovmfgen.edk2 import tree as edk2_tree

    cache = tmp_path / "cache"
    tree_dir = cache / "edk2" / "edk2-stable202502"
    (tree_dir / "tree" / "OvmfPkg").mkdir(parents=True)
    (tree_dir / "tree" / "OvmfPkg" / "a.c").write_text("x")
    (tree_dir / "identity.json").write_text("{}")
    monkeypatch.setenv("OVMFGEN_CACHE", str(cache))

    class Tree:
        root = tree_dir / "tree"

    monkeypatch.setattr(edk2_tree, "locate", lambda tag: Tree)
    moved = nightly_repro.moved_cache(None, tmp_path / "other-cache-longer")
    copy = moved / "edk2" / "edk2-stable202502"
    assert (copy / "tree" / "OvmfPkg" / "a.c").read_text() == "x" and (copy / "identity.json").is_file()
    assert (copy / "tree" / "OvmfPkg" / "a.c").stat().st_ino == (Tree.root / "OvmfPkg" / "a.c").stat().st_ino

    class Elsewhere:
        root = tmp_path / "checkout"

    monkeypatch.setattr(edk2_tree, "locate", lambda tag: Elsewhere)
    assert nightly_repro.moved_cache(None, tmp_path / "c2") is None
