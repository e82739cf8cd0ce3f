"""edk2/modules: what comes along into the workspace when an override replaces a module's source."""

from __future__ import annotations

from pathlib import Path

from ovmfgen.edk2.modules import module_companions, module_dir


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_an_overridden_source_brings_its_module_and_what_it_includes_from_outside(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "OvmfPkg/OvmfPkg.dec": b"",
        "OvmfPkg/Sec/SecMain.inf": b"[Sources]\n SecMain.c\n",
        "OvmfPkg/Sec/SecMain.c": b"upstream\n",
        "OvmfPkg/Sec/X64/SecEntry.nasm": b'%include "../../IntelTdx/Sec/X64/Aps.nasm"\n#include <Base.h>\n',
        "OvmfPkg/IntelTdx/Sec/X64/Aps.nasm": b'%include "Defs.inc"\n  %include "../../../Outside.inc"\n',
        "OvmfPkg/Outside.inc": b"\n",
        "OvmfPkg/Include/Dsc/X.dsc.inc": b"",
        "OvmfPkg/Unrelated/Unrelated.inf": b"",
    })
    assert module_dir("OvmfPkg/Sec/SecMain.c", root) == "OvmfPkg/Sec"
    assert module_dir("OvmfPkg/Sec/X64/SecEntry.nasm", root) == "OvmfPkg/Sec"
    assert module_dir("OvmfPkg/Include/Dsc/X.dsc.inc", root) is None   # the package is reached first
    got = module_companions(["OvmfPkg/Sec/SecMain.c"], root)
    assert list(got) == ["OvmfPkg/IntelTdx/Sec/X64/Aps.nasm", "OvmfPkg/Outside.inc", "OvmfPkg/Sec/SecMain.inf",
                         "OvmfPkg/Sec/X64/SecEntry.nasm"]
    assert got["OvmfPkg/Sec/SecMain.inf"] == b"[Sources]\n SecMain.c\n"
    assert module_companions(["OvmfPkg/Include/Dsc/X.dsc.inc"], root) == {}
