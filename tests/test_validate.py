"""Validation: every tests/invalid/*.yaml case fails with exactly the message on its first line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.load import load_platform
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.validate import validate

INVALID = sorted((REPO_ROOT / "tests" / "invalid").glob("*.yaml"))
MINI = REPO_ROOT / "tests" / "data" / "platforms" / "mini.yaml"


def expected_message(path: Path) -> str:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_enough_invalid_cases() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("case", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_case(case: Path, edk2_tree) -> None:
    with pytest.raises(OvmfgenError) as info:
        validate(load_platform(case, platforms_dir=case.parent), edk2_root=edk2_tree.root, use_cache=False)
    assert str(info.value) == expected_message(case)


def test_minimal_platform_is_valid(edk2_tree) -> None:
    validate(load_platform(MINI, platforms_dir=MINI.parent), edk2_root=edk2_tree.root, use_cache=False)


def test_xen_pvh_is_valid(edk2_tree) -> None:
    validate(load_platform("xen-pvh"), edk2_root=edk2_tree.root, use_cache=False)


def test_cli_error_is_one_line_and_writes_nothing(tmp_path: Path, edk2_tree) -> None:
    case = REPO_ROOT / "tests" / "invalid" / "missing-library-class.yaml"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "render", "--platform", str(case), "--output", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip() == expected_message(case)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()


def test_validation_cache_is_keyed_on_content(tmp_path: Path, edk2_tree, monkeypatch: pytest.MonkeyPatch) -> None:
    # A passing validation is remembered; a change to the platform must run the checks again.
    import ovmfgen.paths
    import ovmfgen.platform.validate as v

    monkeypatch.setattr(ovmfgen.paths, "BUILD_DIR", tmp_path)
    platform = load_platform(MINI, platforms_dir=MINI.parent)
    key = v._cache_key(platform, edk2_tree.digest)
    broken = MINI.read_text().replace("RegisterFilterLib: ", "RegisterFilterLibX: ")
    (tmp_path / "mini.yaml").write_text(broken)
    other = load_platform(tmp_path / "mini.yaml", platforms_dir=tmp_path)
    assert v._cache_key(other, edk2_tree.digest) != key
