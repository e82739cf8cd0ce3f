"""``invoke import`` on files anywhere: no edk2 tree needed, the workspace found from the package, errors
at the DSC/FDF line (tests/invalid/import/: every case fails with exactly the message on its first line)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.importer import import_command, workspace_of
from ovmfgen.platform.load import load_platform

CASES_DIR = REPO_ROOT / "tests" / "invalid" / "import"
CASES = sorted(p for p in CASES_DIR.iterdir() if p.suffix in (".dsc", ".fdf") and not p.name.startswith("_"))


def _expected(case: Path) -> str:
    first = case.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{case.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_invalid_import_case(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             isolated_cache: Path) -> None:
    """No edk2 tree (empty cache): the import parses only, and each error names the input line."""
    monkeypatch.chdir(REPO_ROOT)
    other = ".fdf" if case.suffix == ".dsc" else ".dsc"
    partner = case.with_suffix(other) if case.with_suffix(other).is_file() else CASES_DIR / f"_ok{other}"
    dsc, fdf = (case, partner) if case.suffix == ".dsc" else (partner, case)
    out = tmp_path / "out.yaml"
    with pytest.raises(OvmfgenError) as info:
        import_command(str(dsc.relative_to(REPO_ROOT)), str(fdf.relative_to(REPO_ROOT)), str(out))
    assert str(info.value) == _expected(case)
    assert not out.exists()


def test_enough_invalid_import_cases() -> None:
    assert len(CASES) >= 10


def test_the_valid_pair_imports_without_a_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               isolated_cache: Path) -> None:
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "ok.yaml"
    import_command("tests/invalid/import/_ok.dsc", "tests/invalid/import/_ok.fdf", str(out))
    platform = load_platform(out, platforms_dir=tmp_path)
    assert platform.upstream is not None and platform.upstream.dsc == "import/_ok.dsc"
    assert platform.fd_name == "OVMF"


def test_import_anywhere_finds_the_workspace_and_file_relative_includes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edk2_tree) -> None:
    """CloudHv copied into a workspace of its own: its FD is not OVMF, its FDF includes a file beside it,
    and nothing needs the edk2 tree (the cache is emptied after the files are copied)."""
    src = edk2_tree.root / "OvmfPkg"
    pkg = tmp_path / "ws" / "OvmfPkg"
    (pkg / "CloudHv").mkdir(parents=True)
    (pkg / "OvmfPkg.dec").write_text("[Defines]\n")
    for name in ("CloudHvX64.dsc", "CloudHvX64.fdf", "CloudHvDefines.fdf.inc"):
        shutil.copy(src / "CloudHv" / name, pkg / "CloudHv" / name)
    monkeypatch.setenv("OVMFGEN_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("OVMFGEN_EDK2", raising=False)
    assert workspace_of(pkg / "CloudHv" / "CloudHvX64.dsc") == (tmp_path / "ws").resolve()
    out = tmp_path / "platforms" / "cloudhv.yaml"
    out.parent.mkdir()
    import_command(str(pkg / "CloudHv" / "CloudHvX64.dsc"), str(pkg / "CloudHv" / "CloudHvX64.fdf"), str(out))
    text = out.read_text()
    assert "include: OvmfPkg/CloudHv/CloudHvDefines.fdf.inc" in text
    platform = load_platform(out, platforms_dir=out.parent)
    assert platform.fd_name == "CLOUDHV" and platform.dsc_path == "OvmfPkg/CloudHv/CloudHvX64.dsc"
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("tree"))


def test_packages_path_serves_includes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       isolated_cache: Path) -> None:
    """An !include found only in $PACKAGES_PATH is kept as written (EDK2 resolves it there too)."""
    ws, extra = tmp_path / "ws", tmp_path / "extra"
    (ws / "MyPkg").mkdir(parents=True)
    (ws / "MyPkg" / "MyPkg.dec").write_text("")
    (extra / "Other").mkdir(parents=True)
    (extra / "Other" / "Libs.dsc.inc").write_text("[LibraryClasses]\n")
    (ws / "MyPkg" / "Libs.dsc.inc").write_text("")  # beside the DSC too: the packages path comes first
    dsc = (CASES_DIR / "_ok.dsc").read_text().replace("[Components]", "!include Other/Libs.dsc.inc\n[Components]")
    (ws / "MyPkg" / "My.dsc").write_text(dsc)
    (ws / "MyPkg" / "My.fdf").write_text((CASES_DIR / "_ok.fdf").read_text())
    out = tmp_path / "my.yaml"
    monkeypatch.setenv("PACKAGES_PATH", str(extra))
    import_command(str(ws / "MyPkg" / "My.dsc"), str(ws / "MyPkg" / "My.fdf"), str(out))
    assert "include: Other/Libs.dsc.inc" in out.read_text()
    monkeypatch.delenv("PACKAGES_PATH")
    (extra / "Other" / "Libs.dsc.inc").unlink()
    (ws / "MyPkg" / "Other").mkdir()
    (ws / "MyPkg" / "Other" / "Libs.dsc.inc").write_text("")
    import_command(str(ws / "MyPkg" / "My.dsc"), str(ws / "MyPkg" / "My.fdf"), str(out))
    assert "include: MyPkg/Other/Libs.dsc.inc" in out.read_text()


def test_missing_input_is_named(tmp_path: Path, isolated_cache: Path) -> None:
    with pytest.raises(OvmfgenError) as info:
        import_command(str(tmp_path / "No.dsc"), str(tmp_path / "No.fdf"), str(tmp_path / "x.yaml"))
    assert str(info.value) == f"error: no such DSC: {tmp_path / 'No.dsc'}"


def test_edk2_shorthand_needs_no_basetools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edk2_tree) -> None:
    """``edk2/...`` names a file in the default tree even where its BaseTools were never built."""
    fake = tmp_path / "edk2-checkout"
    (fake / "OvmfPkg" / "Microvm").mkdir(parents=True)
    (fake / "OvmfPkg" / "OvmfPkg.dec").write_text("[Defines]\n")
    for name in ("MicrovmX64.dsc", "MicrovmX64.fdf"):
        shutil.copy(edk2_tree.root / "OvmfPkg" / "Microvm" / name, fake / "OvmfPkg" / "Microvm" / name)
    monkeypatch.setenv("OVMFGEN_EDK2", str(fake))  # no identity, no BaseTools: locate() refuses it
    monkeypatch.setenv("OVMFGEN_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "microvm.yaml"
    import_command("edk2/OvmfPkg/Microvm/MicrovmX64.dsc", "edk2/OvmfPkg/Microvm/MicrovmX64.fdf", str(out))
    platform = load_platform(out, platforms_dir=tmp_path)
    assert platform.dsc_path == "OvmfPkg/Microvm/MicrovmX64.dsc" and platform.fd_name == "MICROVM"
