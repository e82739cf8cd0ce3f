"""ovmfgen.builder.plan: the input hash (what makes a build a no-op), the version stamps, the variants'
workspaces, the stuart command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FAKE_IDENTITY, FAKE_TOOLS
from ovmfgen import paths
from ovmfgen.builder import plan as build_plan
from ovmfgen.builder.child.pathfree import source_date_epoch
from ovmfgen.builder.plan import plan
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import Layout


def _hash(layout: Layout, **kw) -> str:
    return plan(resolve(make_request("xen-pvh", **kw), layout)).input_hash


def test_input_hash_is_stable(layout: Layout, fake_env: dict) -> None:
    a = plan(resolve(make_request("xen-pvh"), layout))
    b = plan(resolve(make_request("xen-pvh"), layout))
    assert a.input_hash == b.input_hash and len(a.input_hash) == 64
    # Knobs that do not change the firmware do not change the hash.
    assert _hash(layout, jobs=1) == _hash(layout, jobs=7) == a.input_hash
    assert _hash(layout, ccache=True) == a.input_hash
    # The explicit default is the default.
    assert _hash(layout, fd_size="2M") == a.input_hash
    assert _hash(layout, features=["debug_output=debugcon"]) == a.input_hash


@pytest.mark.parametrize("change", [
    {"target": "RELEASE"},
    {"fd_size": "4M"},
    {"defines": ["SOURCE_DEBUG_ENABLE=TRUE"]},
    {"features": ["debug_output=hypervisor-console"]},
    {"features": ["shell=false"]},
    {"version_string": "my-build-1"},
    {"release_date": "01/02/2030"},
])
def test_input_hash_sees_each_option(layout: Layout, fake_env: dict, change: dict) -> None:
    assert _hash(layout, **change) != _hash(layout)


def test_input_hash_sees_identity_tools_version_overrides_and_yaml(layout: Layout, fake_env: dict,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    base = _hash(layout)
    fake_env["identity"]["commit"] = "e" * 40
    assert _hash(layout) != base
    fake_env["identity"] = dict(FAKE_IDENTITY)
    assert _hash(layout) == base
    fake_env["tools"]["nasm"] = "NASM version 2.16.03"
    assert _hash(layout) != base
    fake_env["tools"] = dict(FAKE_TOOLS)
    monkeypatch.setattr(build_plan, "__version__", "9.9.9")
    assert _hash(layout) != base
    monkeypatch.setattr(build_plan, "__version__", "0.1.0")
    assert _hash(layout) == base

    # A YAML edit changes the rendered DSC, hence the hash.
    yaml_path = layout.platforms_dir / "xen-pvh.yaml"
    original = yaml_path.read_text()
    yaml_path.write_text(original.replace("description: >-", "description: >-\n  Edited.", 1))
    edited = _hash(layout)
    assert edited != base
    yaml_path.write_text(original)

    # An override file: its presence and its content.
    ov_rel = "OvmfPkg/Include/Dsc/OvmfTpmDefines.dsc.inc"
    yaml_path.write_text(original.replace("\noverrides:\n", f"\noverrides:\n  - {ov_rel}\n", 1))
    target = layout.overrides_dir / "xen-pvh" / ov_rel
    target.parent.mkdir(parents=True)
    target.write_text("# one\n")
    one = _hash(layout)
    target.write_text("# two\n")
    two = _hash(layout)
    assert len({base, one, two}) == 3


def test_version_stamps(layout: Layout, fake_env: dict) -> None:
    p = plan(resolve(make_request("xen-pvh"), layout))
    assert p.version_string == "edk2-stable202502-ovmfgen-0.1.0"
    assert p.release_date == "02/21/2025"
    assert p.inputs["version_string"] == p.version_string and p.inputs["release_date"] == p.release_date
    q = plan(resolve(make_request("xen-pvh", version_string="v1", release_date="03/04/2026"), layout))
    assert (q.version_string, q.release_date) == ("v1", "03/04/2026")
    for bad in ('has"quote', "a=b", "back\\slash"):
        with pytest.raises(OvmfgenError):
            make_request("xen-pvh", version_string=bad)
    assert build_plan.smbios_date("2025-02-21") == "02/21/2025"
    assert build_plan.pcd_arguments("v", "d") == [
        "gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString=Lv\\0",
        "gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareReleaseDateString=Ld\\0",
    ]


def test_plan_places_variants_apart(layout: Layout, fake_env: dict) -> None:
    default = plan(resolve(make_request("xen-pvh"), layout))
    hvcon = plan(resolve(make_request("xen-pvh", features=["debug_output=hypervisor-console"]), layout))
    big = plan(resolve(make_request("xen-pvh", fd_size="4M"), layout))
    assert default.workspace == layout.build_root / "xen-pvh"
    assert default.dist == layout.dist_root / "xen-pvh" / "DEBUG"
    assert hvcon.workspace == layout.build_root / "xen-pvh.hvcon" and hvcon.dist.name == "DEBUG-hvcon"
    assert big.workspace == layout.build_root / "xen-pvh.4M" and big.dist.name == "DEBUG-4M"
    # The variant's DSC really differs (what the Xen boot test needs).
    assert b"DEBUG_ON_HYPERVISOR_CONSOLE" in hvcon.rendered["OvmfPkg/XenOvmf.dsc"]
    assert big.defines["FD_SIZE_4MB"] == "TRUE" and "FD_SIZE_2MB" not in big.defines
    assert default.defines == {"FD_SIZE_2MB": "TRUE"}


def test_stuart_command_line(layout: Layout, fake_env: dict) -> None:
    p = plan(resolve(make_request("xen-pvh", jobs=3, defines=["SOURCE_DEBUG_ENABLE=TRUE"]), layout))
    argv = p.stuart_argv()
    assert Path(argv[0]).name == "stuart_build"
    assert argv[1:3] == ["-c", str(build_plan.STUART_PLATFORM)]

    def opt(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert opt("--workspace") == str(p.workspace) and p.workspace.name.startswith("xen-pvh.D")  # -D: a variant
    assert opt("--edk2") == str(p.edk2_root) and opt("--edk-tools-path") == str(p.edk2_tools)
    assert opt("--dsc") == "OvmfPkg/XenOvmf.dsc" and opt("--arch") == "X64" and opt("--name") == "XenOvmf"
    pcds = [argv[i + 1] for i, a in enumerate(argv) if a == "--pcd"]
    assert pcds == build_plan.pcd_arguments(p.version_string, p.release_date)
    for item in ("TARGET=DEBUG", "TOOL_CHAIN_TAG=GCC5", "MAX_CONCURRENT_THREAD_NUMBER=3",
                 "BLD_*_FD_SIZE_2MB=TRUE", "BLD_*_SOURCE_DEBUG_ENABLE=TRUE"):
        assert item in argv
    assert opt("--stack-cookie-seed") == "xen-pvh/DEBUG"
    # SOURCE_DATE_EPOCH: the tree's release date (child/pathfree.py), never the wall clock.
    assert int(opt("--source-date-epoch")) == p.source_date_epoch == source_date_epoch(p.edk2_identity["release_date"])
    assert "--ccache-dir" not in argv and "--link-cache-dir" not in argv
    cc = plan(resolve(make_request("xen-pvh", ccache=True), layout)).stuart_argv()
    assert cc[cc.index("--ccache-dir") + 1] == str(build_plan.ccache_dir())
    assert cc[cc.index("--link-cache-dir") + 1] == str(build_plan.link_cache_dir())


def test_recipe_modules_exist() -> None:
    """Every module the no-op hash covers is a real file (a moved module would silently drop out)."""
    root = Path(build_plan.__file__).resolve().parent.parent
    missing = [name for name in build_plan.RECIPE_MODULES if not (root / name).is_file()]
    assert not missing
    assert "builder/command.py" in build_plan.RECIPE_MODULES


def test_a_define_no_file_of_the_platform_reads_is_refused_in_one_line(edk2_tree, tmp_path: Path) -> None:
    # Fedora and Alpine pass TPM switches to OvmfXen builds: without the TPM feature no file of the platform
    # reads TPM1_ENABLE; TPM2_ENABLE is the feature's own switch (next test).
    env = {**os.environ, "OVMFGEN_VERBOSE": ""}
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "build", "--platform", "xen-pvh", "--define",
                           "TPM1_ENABLE=TRUE", "--define", "SMM_REQUIRE=FALSE"], cwd=paths.REPO_ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --define TPM1_ENABLE=TRUE: no file of platform xen-pvh reads TPM1_ENABLE "
                               "(it reads: ")
    # The list names what the platform reads, the DSC's own switches and its includes' (NetworkPkg's).
    for name in ("SMM_REQUIRE", "DEBUG_ON_HYPERVISOR_CONSOLE", "NETWORK_TLS_ENABLE", "FD_SIZE_IN_KB"):
        assert f" {name}," in lines[0] or f" {name})" in lines[0]
    assert "Traceback" not in proc.stderr


def test_tpm2_enable_is_refused_with_the_feature_to_write(edk2_tree) -> None:
    # With the TPM feature on, upstream's includes read TPM2_ENABLE: still refused, the feature decides.
    env = {**os.environ, "OVMFGEN_VERBOSE": ""}
    for extra in ([], ["--feature", "tpm=tpm2"]):
        proc = subprocess.run([sys.executable, "-m", "ovmfgen", "build", "--platform", "xen-pvh", "--define",
                               "TPM2_ENABLE=TRUE", *extra], cwd=paths.REPO_ROOT, capture_output=True, text=True, env=env)
        assert (proc.returncode, proc.stderr) == (1, "error: --define TPM2_ENABLE=TRUE: ovmfgen builds this as a "
                                                     "feature: write --feature tpm=VALUE instead ('off' or 'tpm2')\n")
