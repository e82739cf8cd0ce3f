"""Validation: every tests/invalid/*.yaml case fails with exactly the message on its first line.

Most cases fail while loading (YAML, shape, features, fragments): they run without an edk2 tree (the
autouse isolation gives them an empty cache). The cases in ``TREE_CASES`` load fine and fail only when
checked against the edk2 tree (paths, library classes, PCD declarations, FD layout): they need it.
validate checks the configuration being built, as EDK2 does: a branch its defines leave out, or an
architecture not built, is not checked; the ``DEFINE_CASES`` are refused because their define
selects the broken branch, pass with it off, and are refused again with ``--define`` turning it on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen.platform.resolve import resolved
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.load import load_platform
from ovmfgen.paths import REPO_ROOT, Layout
from ovmfgen.platform import validate as v
from ovmfgen.platform.validate import validate
from ovmfgen.request import Request

INVALID = sorted((REPO_ROOT / "tests" / "invalid").glob("*.yaml"))
TREE_CASES = frozenset({
    "header-region-mismatch", "header-region-too-small", "inf-not-found", "library-instance-not-found",
    "missing-library-class", "no-reserved-header-region", "override-escapes", "region-past-fd-end",
    "override-per-tree-missing", "regions-overlap", "undeclared-pcd", "undeclared-pcd-active-branch",
    "inf-not-found-active-branch", "missing-library-class-by-define",
})
# Refused because their YAML define MINI_SWITCH = TRUE selects a branch (one adding a broken statement,
# or, for the library class, one leaving its mapping out); valid with it FALSE.
DEFINE_CASES = ("inf-not-found-active-branch", "undeclared-pcd-active-branch", "missing-library-class-by-define")
LOAD_CASES = [p for p in INVALID if p.stem not in TREE_CASES]
MINI = REPO_ROOT / "tests" / "data" / "platforms" / "mini.yaml"


def expected_message(path: Path) -> str:
    # Only the first line is text: a case may hold bytes that are not UTF-8 further down.
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_enough_invalid_cases() -> None:
    assert len(INVALID) >= 20


def test_tree_cases_exist() -> None:
    assert TREE_CASES <= {p.stem for p in INVALID}


@pytest.mark.parametrize("case", LOAD_CASES, ids=[p.stem for p in LOAD_CASES])
def test_invalid_case_fails_while_loading(case: Path, isolated_cache: Path) -> None:
    """No edk2 tree: the cache is empty and OVMFGEN_EDK2 unset, so these cannot have used one."""
    with pytest.raises(OvmfgenError) as info:
        load_platform(case, platforms_dir=case.parent)
    assert str(info.value) == expected_message(case)
    assert not isolated_cache.exists() or not any(isolated_cache.iterdir())


TREE_CASE_PATHS = sorted(p for p in INVALID if p.stem in TREE_CASES)


@pytest.mark.parametrize("case", TREE_CASE_PATHS, ids=[p.stem for p in TREE_CASE_PATHS])
def test_invalid_case_fails_against_the_tree(case: Path, edk2_tree) -> None:
    platform = load_platform(case, platforms_dir=case.parent)  # loads: the problem is only visible to validate
    with pytest.raises(OvmfgenError) as info:
        validate(resolved(platform, edk2_tree), use_cache=False)
    assert str(info.value) == expected_message(case)


def _switched_off(case: Path, directory: Path) -> tuple[Path, str]:
    """``case`` with its YAML define MINI_SWITCH = FALSE, written to ``directory``; and the message it
    expects, located in that copy (the statement's line and column do not move)."""
    text = case.read_text()
    assert text.count("define: MINI_SWITCH = TRUE") == 1
    copy = directory / case.name
    copy.write_text(text.replace("define: MINI_SWITCH = TRUE", "define: MINI_SWITCH = FALSE"))
    message = expected_message(case)
    where = f"tests/invalid/{case.name}:"
    assert message.startswith(where)
    return copy, f"{copy}:{message.removeprefix(where)}"


@pytest.mark.parametrize("name", DEFINE_CASES)
def test_inactive_branch_is_checked_once_a_define_turns_it_on(name: str, tmp_path: Path, edk2_tree) -> None:
    """The branch off (its YAML define FALSE): not built, so not checked; the same platform with
    ``--define MINI_SWITCH=TRUE`` (the build's -D wins over the DSC's DEFINE, as in EDK2) is refused at the
    same statement, also after the default build's pass was remembered (the define is in the cache key,
    as the target is)."""
    copy, message = _switched_off(REPO_ROOT / "tests" / "invalid" / f"{name}.yaml", tmp_path)
    platform = load_platform(copy, platforms_dir=tmp_path)
    off = resolved(platform, edk2_tree)
    validate(off)
    on = resolved(platform, edk2_tree, request=Request(platform=platform.name, defines=(("MINI_SWITCH", "TRUE"),)))
    for use_cache in (True, False):
        with pytest.raises(OvmfgenError) as info:
            validate(on, use_cache=use_cache)
        assert str(info.value) == message
    release = resolved(platform, edk2_tree, request=Request(platform=platform.name, target="RELEASE"))
    assert len({v._cache_key(off), v._cache_key(on), v._cache_key(release)}) == 3


def test_cli_define_turning_on_a_broken_branch_is_refused(tmp_path: Path, edk2_tree, real_cache: None) -> None:
    """`invoke build --define` refuses before building (one located line); `invoke render` of the same
    platform, whose default build leaves the branch out, writes its files."""
    copy, message = _switched_off(REPO_ROOT / "tests" / "invalid" / "inf-not-found-active-branch.yaml", tmp_path)
    build = subprocess.run([sys.executable, "-m", "ovmfgen", "build", "--platform", str(copy),
                            "--define", "MINI_SWITCH=TRUE"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert (build.returncode, build.stdout, build.stderr) == (1, "", message + "\n")
    out = tmp_path / "out"
    render = subprocess.run([sys.executable, "-m", "ovmfgen", "render", "--platform", str(copy), "--output", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert render.returncode == 0, render.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Mini.dsc", "Mini.fdf"]
    assert "OvmfPkg/NoSuchDriver/NoSuchDriver.inf" in (out / "Mini.dsc").read_text()


@pytest.mark.parametrize(("header", "arches", "refused"), [
    ("Components.X64", "[X64]", True), ("Components.AARCH64", "[X64, AARCH64]", False),
    ("Components.X64, Components.AARCH64", "[X64, AARCH64]", True),
    ("Components.IA32", "[X64]", False), ("Components.IA32", "[IA32, X64]", True),
])
def test_only_the_built_arch_is_checked(header: str, arches: str, refused: bool, tmp_path: Path, edk2_tree) -> None:
    """A component of a section for an architecture not built (AARCH64; IA32 when the DSC does not
    support it) is not checked."""
    section = f"  - {header}:\n      - OvmfPkg/NoSuchDriver/NoSuchDriver.inf\n"
    text = MINI.read_text().replace("fdf:\n", section + "fdf:\n", 1)
    assert text.count("supported_architectures: [X64]") == 1
    text = text.replace("supported_architectures: [X64]", f"supported_architectures: {arches}")
    (tmp_path / "mini.yaml").write_text(text)
    r = resolved(load_platform(tmp_path / "mini.yaml", platforms_dir=tmp_path), edk2_tree)
    if refused:
        with pytest.raises(OvmfgenError, match="component INF not found .*: OvmfPkg/NoSuchDriver/NoSuchDriver.inf"):
            validate(r, use_cache=False)
    else:
        validate(r, use_cache=False)


def test_section_for_arch() -> None:
    assert v.section_for_arch("Components") and v.section_for_arch("PcdsFixedAtBuild.common")
    assert v.section_for_arch("LibraryClasses.X64.DXE_DRIVER")
    assert v.section_for_arch("Components.AARCH64, Components.X64")
    assert not v.section_for_arch("Components.AARCH64") and not v.section_for_arch("LibraryClasses.IA32.PEIM")
    # A DSC that supports IA32 (OvmfPkgIa32X64's PEI phase): its IA32 sections are checked too.
    assert v.section_for_arch("LibraryClasses.IA32.PEIM", ("IA32", "X64"))


def test_minimal_platform_is_valid(edk2_tree) -> None:
    platform = load_platform(MINI, platforms_dir=MINI.parent)
    validate(resolved(platform, edk2_tree), use_cache=False)


def test_xen_pvh_is_valid(edk2_tree) -> None:
    platform = load_platform("xen-pvh")
    validate(resolved(platform, edk2_tree), use_cache=False)


def test_cli_error_is_one_line_and_writes_nothing(tmp_path: Path, edk2_tree, real_cache: None) -> None:
    case = REPO_ROOT / "tests" / "invalid" / "missing-library-class.yaml"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "render", "--platform", str(case), "--output", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip() == expected_message(case)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()


def test_validation_cache_is_keyed_on_content(tmp_path: Path, edk2_tree) -> None:
    # A passing validation is remembered; a change to the platform must run the checks again.
    ov_root = tmp_path / "overrides" / "mini"
    layout = Layout(overrides_dir=ov_root.parent)
    platform = load_platform(MINI, platforms_dir=MINI.parent)
    key = v._cache_key(resolved(platform, edk2_tree, layout))
    broken = MINI.read_text().replace("RegisterFilterLib: ", "RegisterFilterLibX: ")
    (tmp_path / "mini.yaml").write_text(broken)
    other = load_platform(tmp_path / "mini.yaml", platforms_dir=tmp_path)
    assert v._cache_key(resolved(other, edk2_tree, layout)) != key


def test_validate_uses_the_layouts_overrides(tmp_path: Path, edk2_tree) -> None:
    """Overrides are checked in the layout's overrides/<platform>/, never in the repository's."""
    rel = "OvmfPkg/Include/Dsc/OvmfTpmDefines.dsc.inc"
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    (platforms / "mini.yaml").write_text(MINI.read_text() + f"\noverrides:\n  - {rel}\n")
    platform = load_platform(platforms / "mini.yaml", platforms_dir=platforms)
    layout = Layout(platforms, tmp_path / "overrides", tmp_path / "build", tmp_path / "dist")
    assert not (Layout().overrides_for("mini") / rel).exists()
    with pytest.raises(OvmfgenError, match=f"override not found: overrides/mini/{rel}"):
        validate(resolved(platform, edk2_tree, layout), use_cache=False)
    (layout.overrides_for("mini") / rel).parent.mkdir(parents=True)
    (layout.overrides_for("mini") / rel).write_bytes((edk2_tree.root / rel).read_bytes())
    validate(resolved(platform, edk2_tree, layout), use_cache=False)
    with pytest.raises(OvmfgenError, match="override not found"):
        validate(resolved(platform, edk2_tree), use_cache=False)  # the repository's: not there



@pytest.mark.parametrize("name", ["alias-bomb", "deep-nesting", "not-utf8"])
def test_cli_on_input_that_used_to_hang_or_crash(tmp_path: Path, real_cache: None, name: str) -> None:
    """`invoke render` as a new user runs it: exit 1, the one located line, no traceback, nothing written
    (these three ran for minutes, ended in a RecursionError, or had no line:col)."""
    case = REPO_ROOT / "tests" / "invalid" / f"{name}.yaml"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "render", "--platform", str(case), "--output", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected_message(case) + "\n")
    assert not out.exists()
