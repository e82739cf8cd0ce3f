"""ovmfgen.builder (plan, manifest, diagnose, publish, command) and the request and variant rules without an edk2 build: input hash, variants, manifest, failure summaries, lock,
atomic publish, the stuart command line and the stuart settings module's build parameters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ovmfgen import paths
from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import diagnose as build_diagnose
from ovmfgen.builder import manifest as build_manifest
from ovmfgen.builder import plan as build_plan
from ovmfgen.builder import publish as build_publish
from ovmfgen.builder import stuart as build_stuart
from ovmfgen.builder import workspace as build_workspace
from ovmfgen.builder.child.pathfree import source_date_epoch
from ovmfgen.builder.plan import plan
from ovmfgen.platform import located as platform_located
from ovmfgen.platform.resolve import resolve, variant_suffix
from ovmfgen.request import make_request
from ovmfgen.builder.stuart import Progress
from ovmfgen.edk2.tree import Edk2Tree
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import Layout

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


def _hash(layout: Layout, **kw) -> str:
    return plan(resolve(make_request("xen-pvh", **kw), layout)).input_hash


# ---------------------------------------------------------------------------------------------
# Input hash


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


# ---------------------------------------------------------------------------------------------
# Options and variants


def test_request_normalisation() -> None:
    r = make_request("xen-pvh", target="release", fd_size="4m", defines=["B=2", "A"], features=["shell=false"],
                     jobs="3")
    assert (r.target, r.fd_size, r.jobs) == ("RELEASE", 4, 3)
    assert r.defines == (("A", "TRUE"), ("B", "2"))
    assert r.features == (("shell", "false"),)
    assert make_request("xen-pvh", defines=["FD_SIZE_1MB=TRUE"]).fd_size == 1
    assert make_request("xen-pvh", features=["fd_size=4"]).fd_size == 4
    for kw in ({"target": "FAST"}, {"fd_size": "3M"}, {"defines": ["1X=2"]}, {"defines": ["A=b c"]},
               {"defines": ["A=b=c"]}, {"fd_size": "2M", "defines": ["FD_SIZE_4MB=TRUE"]}, {"jobs": "0"}):
        with pytest.raises(OvmfgenError):
            make_request("xen-pvh", **kw)


def test_dist_dir_rule(layout: Layout, fake_env: dict) -> None:
    d = layout.dist_root / "xen-pvh"

    def dist(**kw: object) -> Path:
        return resolve(make_request("xen-pvh", **kw), layout).dist

    assert dist() == d / "DEBUG"
    assert dist(target="release") == d / "RELEASE"
    assert dist(fd_size="2M", features=["debug_output=debugcon"]) == d / "DEBUG"
    assert dist(fd_size="4M") == d / "DEBUG-4M"
    assert dist(features=["debug_output=hypervisor-console"]) == d / "DEBUG-hvcon"
    assert dist(fd_size="1M", features=["shell=false", "debug_output=hypervisor-console"]) == d / "DEBUG-1M-hvcon-noshell"
    with_define = dist(defines=["SOURCE_DEBUG_ENABLE=TRUE"])
    assert with_define.name.startswith("DEBUG-D") and len(with_define.name) == len("DEBUG-D") + 8
    assert dist(defines=["SOURCE_DEBUG_ENABLE=FALSE"]) != with_define
    assert variant_suffix({"fd_size": "2"}, 2, {"odd_feature": "some value"}, {}) == "oddfeature-somevalue"


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


# ---------------------------------------------------------------------------------------------
# The stuart command and the settings module


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


def test_settings_module_build_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """stuart_platform.PlatformBuilder composes edk2's `build` arguments, --pcd included, shell-safe."""
    import shlex

    from edk2toolext.environment.var_dict import VarDict

    from ovmfgen.builder.child import stuart_platform

    monkeypatch.setattr(sys, "argv", ["stuart_build", "--workspace", "/ws"])
    b = stuart_platform.PlatformBuilder()
    assert b.GetWorkspaceRoot() == "/ws"
    b.env = VarDict()
    b.Pcds = build_plan.pcd_arguments("edk2-x-ovmfgen-1", "02/21/2025")
    for key, value in {"TARGET": "DEBUG", "TOOL_CHAIN_TAG": "GCC5", "ACTIVE_PLATFORM": "OvmfPkg/XenOvmf.dsc",
                       "TARGET_ARCH": "X64", "MAX_CONCURRENT_THREAD_NUMBER": "2", "BUILDREPORTING": "TRUE",
                       "BUILDREPORT_FILE": "/ws/Build/R.TXT", "BUILDREPORT_TYPES": "FLASH",
                       "BLD_*_FD_SIZE_2MB": "TRUE"}.items():
        b.env.SetValue(key, value, "test")
    params = b.BuildParameters()
    assert params == ["-p", "OvmfPkg/XenOvmf.dsc", "-b", "DEBUG", "-t", "GCC5", "-n", "2", "-a", "X64",
                      "-y", "/ws/Build/R.TXT", "-Y", "FLASH", "-D", "FD_SIZE_2MB=TRUE",
                      "--pcd", b.Pcds[0], "--pcd", b.Pcds[1]]
    # RunCmd hands the string to a shell: it must split back into exactly these arguments.
    assert shlex.split(shlex.join(params)) == params


def test_settings_module_puts_the_path_free_wrappers_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build: gcc and GenFw wrappers first on PATH (chained to the gcc found before), the release's
    SOURCE_DATE_EPOCH set and ELF_PACKAGE_METADATA gone from the environment the build inherits."""
    from edk2toolext.environment import shell_environment

    from ovmfgen.builder.child import stuart_platform

    tools = tmp_path / "basetools"
    genfw = tools / "BinWrappers" / "PosixLike" / "GenFw"
    genfw.parent.mkdir(parents=True)
    genfw.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", os.environ["PATH"])        # restored after the test
    monkeypatch.setenv("ELF_PACKAGE_METADATA", '{"type":"deb"}')
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    shell = shell_environment.GetEnvironment()
    checkpoint = shell.checkpoint()
    try:
        b = stuart_platform.PlatformBuilder()
        b.Workspace, b.Edk2, b.EdkToolsPath = str(tmp_path / "ws"), str(tmp_path / "tree"), str(tools)
        b.SourceDateEpoch = 1740096000
        before = shutil.which("gcc")
        assert b._path_free(shell)
        bin_dir = tmp_path / "ws" / ".ovmfgen" / "pathfree"
        assert os.environ["PATH"].split(os.pathsep)[0] == str(bin_dir)
        assert shutil.which("gcc") == str(bin_dir / "gcc") and shutil.which("GenFw") == str(bin_dir / "GenFw")
        gcc = (bin_dir / "gcc").read_text()
        assert f"exec {before} " in gcc and f"-ffile-prefix-map={tmp_path / 'tree'}/=" in gcc
        assert str(genfw) in (bin_dir / "GenFw").read_text()
        assert os.environ["SOURCE_DATE_EPOCH"] == "1740096000" and "ELF_PACKAGE_METADATA" not in os.environ
        assert b._path_free(shell)  # a second build: the wrapper does not chain to itself
        assert f"exec {before} " in (bin_dir / "gcc").read_text()
    finally:
        shell.restore_checkpoint(checkpoint)
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def test_stack_cookies_come_from_the_seed(tmp_path: Path) -> None:
    """The cookie lists BaseTools would draw at random, derived instead (same seed, same firmware)."""
    from edk2toolext.environment.var_dict import VarDict

    from ovmfgen.builder.child import stuart_platform

    v64 = stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 64)
    v32 = stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 32)
    assert len(v64) == len(v32) == 100 and len(set(v64)) == len(set(v32)) == 100
    assert all(0 <= v < 2**64 - 1 for v in v64) and all(0 <= v < 2**32 - 1 for v in v32)  # secrets.randbelow's range
    assert max(v64) > 2**63  # the whole range is used, not only small numbers
    assert v64 == stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 64)
    assert set(v64).isdisjoint(stuart_platform.stack_cookie_values("xen-pvh/RELEASE", 64))

    # PlatformPreBuild writes them where edk2's build looks (BUILD_OUTPUT_BASE), before build runs.
    out = tmp_path / "Build" / "XenOvmf" / "DEBUG_GCC5"
    b = stuart_platform.PlatformBuilder()
    b.env = VarDict()
    b.env.SetValue("BUILD_OUTPUT_BASE", str(out), "test")
    b.StackCookieSeed = "xen-pvh/DEBUG"
    assert b.PlatformPreBuild() == 0
    assert json.loads((out / "StackCookieValues64.json").read_text()) == v64
    assert json.loads((out / "StackCookieValues32.json").read_text()) == v32
    stamp = (out / "StackCookieValues64.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert b.PlatformPreBuild() == 0
    assert (out / "StackCookieValues64.json").stat().st_mtime_ns == stamp  # unchanged: not rewritten
    b.StackCookieSeed = "other"
    b.PlatformPreBuild()
    assert json.loads((out / "StackCookieValues64.json").read_text()) == \
        stuart_platform.stack_cookie_values("other", 64)
    b.StackCookieSeed = None  # no seed: edk2's own random lists
    shutil.rmtree(out)
    assert b.PlatformPreBuild() == 0 and not out.exists()


# ---------------------------------------------------------------------------------------------
# Manifest


def test_manifest_schema(layout: Layout, fake_env: dict) -> None:
    p = plan(resolve(make_request("xen-pvh"), layout))
    outputs = {"OVMF.fd": b"\xff" * 4096, "ovmf.elf": b"\x7fELF" + b"\0" * 60, "build.log": b"log\n"}
    fv = {"DXEFV": {"size": 10, "used": 4, "free": 6, "percent_full": 40.0}}
    m = build_manifest.make_manifest(p, outputs, fv, {"base": "0x100000"}, 123.46)
    assert tuple(m) == build_manifest.MANIFEST_KEYS
    assert m["platform"] == "xen-pvh" and m["target"] == "DEBUG" and m["fd_size"] == "2M"
    assert m["input_hash"] == p.input_hash and m["edk2"]["commit"] == "f" * 40
    assert m["tools"] == FAKE_TOOLS and m["build_seconds"] == 123.5
    assert m["outputs"]["OVMF.fd"] == {"sha256": build_plan.sha256_bytes(outputs["OVMF.fd"]), "size": 4096}
    assert m["fv_usage"] == fv and m["version_string"] == p.version_string
    assert json.loads(json.dumps(m)) == m
    # outputs_intact checks size and content.
    d = layout.dist_root / "x"
    d.mkdir()
    for name, data in outputs.items():
        (d / name).write_bytes(data)
    assert build_manifest.outputs_intact(d, m)
    (d / "build.log").write_bytes(b"LOG\n")  # same size, other content
    assert not build_manifest.outputs_intact(d, m)
    (d / "build.log").unlink()
    assert not build_manifest.outputs_intact(d, m)


REPORT = textwrap.dedent("""\
    Firmware Device (FD)
    FD Name:            OVMF
    Base Address:       0xFFE00000
    Size:               0x200000 (2048K)
    >------<
    Fd Region
    Type:               FV
    Base Address:       0x20000
    Size:               0x1AC000 (1712K)
    Fv Name:            FVMAIN_COMPACT (71.0% Full)
    Occupied Size:      0x12FF90 (1216K)
    Free Size:          0x7C070 (496K)
    Offset     Module
    >------<
    Nested FV
    Type:               FV
    Base Address:       0x0
    Size:               0xE0000 (896K)
    Fv Name:            PEIFV (21.6% Full)
    Occupied Size:      0x30728 (194K)
    Free Size:          0xAF8D8 (702K)
    Firmware Device (FD)
    FD Name:            OVMF_CODE
    Size:               0x1AC000 (1712K)
    Fv Name:            FVMAIN_COMPACT (71.0% Full)
    Occupied Size:      0x1 (0K)
    Free Size:          0x1 (0K)
    """)


def test_fv_usage_from_report_and_log() -> None:
    usage = build_manifest.fv_usage_from_report(REPORT)
    assert usage == {
        "FVMAIN_COMPACT": {"size": 0x1AC000, "used": 0x12FF90, "free": 0x7C070, "percent_full": 71.0},
        "PEIFV": {"size": 0xE0000, "used": 0x30728, "free": 0xAF8D8, "percent_full": 21.6},
    }
    log = ("INFO - FV Space Information\n"
           "INFO - SECFV [10%Full] 212992 (0x34000) total, 22224 (0x56d0) used, 190768 (0x2e930) free\n")
    assert build_manifest.fv_usage_from_log(log) == {
        "SECFV": {"size": 212992, "used": 22224, "free": 190768, "percent_full": 10.0}}


# ---------------------------------------------------------------------------------------------
# Failure summaries

WS = "/w/build/xen-pvh"
EDK2 = "/c/edk2/tree"

GCC_FAILURE = f"""\
INFO - Building ... {EDK2}/MdePkg/Library/BasePrintLib/BasePrintLib.inf [X64]
INFO - "gcc" -MMD -MF {WS}/Build/XenOvmf/DEBUG_GCC5/X64/MdePkg/Library/BasePrintLib/BasePrintLib/OUTPUT/PrintLib.obj.deps -c {EDK2}/MdePkg/Library/BasePrintLib/PrintLib.c
INFO - Building ... {EDK2}/MdePkg/Library/BaseLib/BaseLib.inf [X64]
INFO - {WS}/OvmfPkg/Fancy/Fancy.c: In function 'FancyEntry':
INFO - {WS}/OvmfPkg/Fancy/Fancy.c:42:3: error: 'Broken' undeclared (first use in this function)
INFO -    42 |   Broken = 1;
INFO -       |   ^~~~~~
INFO - {WS}/OvmfPkg/Fancy/Fancy.c:43:1: error: expected ';' before '}}' token
INFO - make: *** [GNUmakefile:352: {WS}/Build/XenOvmf/DEBUG_GCC5/X64/OvmfPkg/Fancy/Fancy/OUTPUT/Fancy.obj] Error 1
INFO -
INFO - build.py...
INFO -  : error 7000: Failed to execute command
INFO - \tmake tbuild [{WS}/Build/XenOvmf/DEBUG_GCC5/X64/OvmfPkg/Fancy/Fancy]
INFO -
INFO - build.py...
INFO -  : error F002: Failed to build module
INFO - \t{WS}/OvmfPkg/Fancy/Fancy.inf [X64, GCC5, DEBUG]
INFO -
INFO - - Failed -
ERROR - Compiler #error from {WS}/OvmfPkg/Fancy/Fancy.c 'Broken' undeclared
CRITICAL - Build failed
ERROR - Error
"""

AUTOGEN_FAILURE = f"""\
INFO - Processing meta-data .......
INFO - build.py...
INFO - {WS}/OvmfPkg/XenOvmf.dsc(512): error 4000: Instance of library class [NoSuchLib] is not found
INFO - \tin [{EDK2}/OvmfPkg/XenPlatformPei/XenPlatformPei.inf] [X64]
INFO - \tconsumed by module [{EDK2}/OvmfPkg/XenPlatformPei/XenPlatformPei.inf]
INFO -
INFO - - Failed -
CRITICAL - Build failed
"""


def test_summary_of_a_gcc_error() -> None:
    roots = (Path(WS), Path(EDK2))
    f = build_diagnose.summarize_failure(GCC_FAILURE, roots)
    assert f.module == "OvmfPkg/Fancy/Fancy.inf"
    assert f.message == "'Broken' undeclared (first use in this function)"
    assert str(f.location) == "OvmfPkg/Fancy/Fancy.c:42:3"
    # An override is reported where the user edits it.
    mapped = build_diagnose.summarize_failure(GCC_FAILURE, roots, {"OvmfPkg/Fancy/Fancy.c": paths.REPO_ROOT / "overrides/x/F.c"})
    assert str(mapped.location) == "overrides/x/F.c:42:3"
    text = str(build_cmd.BuildFailed(f.one_line("xen-pvh DEBUG", "build/x/build-DEBUG.log"), f.location))
    assert text == ("OvmfPkg/Fancy/Fancy.c:42:3: error: xen-pvh DEBUG: 'Broken' undeclared (first use in this "
                    "function) (module OvmfPkg/Fancy/Fancy.inf, log build/x/build-DEBUG.log)")


def test_summary_of_an_autogen_error() -> None:
    f = build_diagnose.summarize_failure(AUTOGEN_FAILURE, (Path(WS), Path(EDK2)))
    assert f.message.startswith("AutoGen error 4000: Instance of library class [NoSuchLib] is not found")
    assert "OvmfPkg/XenPlatformPei/XenPlatformPei.inf" in f.message
    assert str(f.location) == "OvmfPkg/XenOvmf.dsc:512"


def test_summary_of_a_command_line_pcd_error() -> None:
    """A real edk2 message with no location (from a malformed --pcd)."""
    log = ("INFO - build.py...\n"
           "INFO -  : error 3000: PCD [gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString] Value \"L\"\"x\"\"\",  "
           "Type: VOID*, Value: L\"\"x\"\", Syntax error, the rest of expression cannot be evaluated: [x]\n"
           "INFO - \nINFO - - Failed -\n")
    f = build_diagnose.summarize_failure(log)
    assert f.message.startswith("AutoGen error 3000: PCD [gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString]")
    assert f.location is None and f.module is None


def test_summary_without_edk2_output() -> None:
    f = build_diagnose.summarize_failure("SECTION - Kicking off build\nCRITICAL - ParseDscFile failed\nERROR - Error\n")
    assert f.message == "stuart: ParseDscFile failed"
    assert build_diagnose.summarize_failure("").message.startswith("the build failed")


def test_progress_counts_modules(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    prog = Progress("xen-pvh DEBUG", interactive=False, stream=out, every=0)
    prog.feed("INFO - ....... done!", lambda: 3)
    prog.feed(f"INFO - Building ... {EDK2}/A/A.inf [X64]")
    prog.feed(f"INFO - Building ... {EDK2}/B/B.inf [X64]")
    prog.feed(f"INFO - Building ... {EDK2}/B/B.inf [X64]")
    assert (prog.done, prog.total) == (2, 3)
    assert "2/3 modules (66%)" in out.getvalue().splitlines()[-1]
    prog.feed("INFO - Generating FVMAIN_COMPACT FV")
    assert prog.phase == "GenFds"
    tty = io.StringIO()
    bar = Progress("x", interactive=True, stream=tty)
    bar.total = 4
    bar.done = 2
    bar.show(force=True)
    bar.close()
    assert "\r" in tty.getvalue() and "[##############..............] " in tty.getvalue()
    ws = tmp_path / "X64"
    for mod in ("a/A", "b/B"):
        (ws / mod).mkdir(parents=True)
        (ws / mod / "GNUmakefile").write_text("")
    assert build_stuart.count_module_makefiles(ws) == 2


# ---------------------------------------------------------------------------------------------
# Lock

# argv: lock, output file, seconds to hold, [a file to wait for first: imports done, then contend].
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from ovmfgen.builder.workspace import workspace_lock
while len(sys.argv) > 4 and not Path(sys.argv[4]).exists():
    time.sleep(0.005)
with workspace_lock(Path(sys.argv[1]), "test"):
    Path(sys.argv[2]).write_text(str(time.time()))
    time.sleep(float(sys.argv[3]))
    Path(sys.argv[2]).write_text(Path(sys.argv[2]).read_text() + " " + str(time.time()))
"""


def test_lock_serialises_two_processes(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "ws.lock"
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    # The second process is started first and waits for the first to hold the lock: its own start-up
    # (imports) cannot outlast the first's hold on a loaded machine.
    second = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock), str(tmp_path / "b"), "0",
                               str(tmp_path / "a")], env=env, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock), str(tmp_path / "a"), "1.5"], env=env)
    _, second_stderr = second.communicate(timeout=60)
    second = subprocess.CompletedProcess(second.args, second.returncode, "", second_stderr)
    assert first.wait(timeout=60) == 0 and second.returncode == 0, second.stderr
    assert "waiting for lock" in second.stderr and f"(pid {first.pid})" in second.stderr
    a_start, a_end = map(float, (tmp_path / "a").read_text().split())
    b_start = float((tmp_path / "b").read_text().split()[0])
    assert b_start >= a_end > a_start


# ---------------------------------------------------------------------------------------------
# Atomic publish


def _files(tag: str) -> dict[str, bytes]:
    return {"OVMF.fd": tag.encode() * 100, "ovmf.elf": tag.encode() * 50, "manifest.json": b'{"t": "%s"}' % tag.encode()}


def _read(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(build_publish, "_exchange", lambda a, b: False)  # the fsutil.replace_dir fallback
    final = tmp_path / "dist" / "xen-pvh" / "DEBUG"
    build_publish.publish(_files("old"), final)
    assert _read(final) == _files("old")
    build_publish.publish(_files("new"), final)
    assert _read(final) == _files("new")
    assert sorted(p.name for p in final.parent.iterdir()) == ["DEBUG"]


def test_failure_mid_publish_leaves_the_old_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "dist" / "xen-pvh" / "DEBUG"
    build_publish.publish(_files("old"), final)
    before = _read(final)

    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:  # dies after the first file is staged
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(build_publish.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        build_publish.publish(_files("new"), final)
    assert _read(final) == before
    assert sorted(p.name for p in final.parent.iterdir()) == ["DEBUG"]  # no staging left behind

    # The swap itself failing also leaves the old artifacts.
    monkeypatch.setattr(build_publish.os, "fsync", real_fsync)

    def failing_exchange(a: Path, b: Path) -> bool:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(build_publish, "_exchange", failing_exchange)
    with pytest.raises(OSError):
        build_publish.publish(_files("new"), final)
    assert _read(final) == before


def test_recover_after_a_killed_publish(tmp_path: Path) -> None:
    final = tmp_path / "dist" / "xen-pvh" / "DEBUG"
    final.parent.mkdir(parents=True)
    # Killed between replace_dir's two renames: only the old copy exists, plus a half-written staging dir.
    old = final.parent / ".DEBUG.old"
    old.mkdir()
    (old / "OVMF.fd").write_bytes(b"good")
    staging = final.parent / ".DEBUG.staging-999999"
    staging.mkdir()
    (staging / "OVMF.fd").write_bytes(b"half")
    build_publish.recover_dist(final)
    assert (final / "OVMF.fd").read_bytes() == b"good"
    assert sorted(p.name for p in final.parent.iterdir()) == ["DEBUG"]


# ---------------------------------------------------------------------------------------------
# The no-op path and the workspace


def test_noop_when_published_manifest_matches(layout: Layout, fake_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(resolve(make_request("xen-pvh"), layout))
    files = {"OVMF.fd": b"fd", "ovmf.elf": b"elf", "build.log": b"log"}
    manifest = build_manifest.make_manifest(p, files, {}, None, 1.0)
    build_publish.publish({**files, "manifest.json": json.dumps(manifest).encode()}, p.dist)

    def no_build(*a, **k):
        raise AssertionError("must not build")

    monkeypatch.setattr(build_cmd, "run_stuart", no_build)
    monkeypatch.setattr(build_cmd, "validate", no_build)
    result = build_cmd.build(resolve(make_request("xen-pvh"), layout))
    assert result.noop and result.dist == p.dist
    # A changed input is not a no-op (and the build is attempted: here it is refused).
    with pytest.raises(AssertionError, match="must not build"):
        build_cmd.build(resolve(make_request("xen-pvh", version_string="other"), layout))
    # Nor is a damaged artifact.
    (p.dist / "ovmf.elf").write_bytes(b"ELF")
    with pytest.raises(AssertionError, match="must not build"):
        build_cmd.build(resolve(make_request("xen-pvh"), layout))


def test_the_stamped_noop_answers_without_resolving(layout: Layout, fake_env: dict,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`invoke build`'s entry: once the full path found the build up to date, the same call is answered from
    the stamp (nothing loaded); a damaged artifact or an edited platform goes back to the full path."""
    from ovmfgen.builder import entry as build_entry
    from ovmfgen.platform import resolve as platform_resolve

    p = plan(resolve(make_request("xen-pvh"), layout))
    files = {"OVMF.fd": b"fd", "ovmf.elf": b"elf", "build.log": b"log"}
    manifest = build_manifest.make_manifest(p, files, {}, None, 1.0)
    build_publish.publish({**files, "manifest.json": json.dumps(manifest).encode()}, p.dist)
    assert build_entry.build_command(layout, platform="xen-pvh") == p.dist   # full path: up to date, stamped
    resolved_calls = []
    real_resolve = platform_resolve.resolve
    monkeypatch.setattr(platform_resolve, "resolve", lambda *a, **k: resolved_calls.append(a) or real_resolve(*a, **k))
    assert build_entry.build_command(layout, platform="xen-pvh") == p.dist
    assert resolved_calls == []                                             # answered by the stamp
    (p.dist / "ovmf.elf").write_bytes(b"ELF")
    with pytest.raises(AssertionError, match="must not build"):
        monkeypatch.setattr(build_cmd, "run_stuart", lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not build")))
        monkeypatch.setattr(build_cmd, "validate", lambda *a, **k: None)
        build_entry.build_command(layout, platform="xen-pvh")
    assert len(resolved_calls) == 1                                         # the damaged artifact: full path


def test_a_per_tree_override_takes_the_copy_of_the_tree_it_builds(layout: Layout, fake_env: dict) -> None:
    # xen-pvh ships no per-tree file (its fixes are patches that apply to both trees): give it one.
    sec = "OvmfPkg/XenOvmfExtra/PerTree.h"
    yaml_path = layout.platforms_dir / "xen-pvh.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("\noverrides:\n", f"\noverrides:\n  - {{path: {sec}, per_tree: true, "
                                                       "commit: {subject: 'OvmfPkg: x', body: x}}\n", 1))
    copies = {tag: f"// {tag}\r\n".encode() for tag in ("edk2-stable202502", "edk2-stable202605")}
    for tag, data in copies.items():
        (layout.overrides_dir / "xen-pvh" / tag / sec).parent.mkdir(parents=True)
        (layout.overrides_dir / "xen-pvh" / tag / sec).write_bytes(data)
    hashes = set()
    for tag, data in copies.items():
        fake_env["identity"]["tag"] = tag
        p = plan(resolve(make_request("xen-pvh"), layout))
        assert p.overrides[sec] == data
        hashes.add(p.input_hash)
    assert len(hashes) == 2
    fake_env["identity"]["tag"] = "edk2-stable209912"
    with pytest.raises(OvmfgenError) as info:
        plan(resolve(make_request("xen-pvh"), layout))
    assert str(info.value).endswith("error: override not found: overrides/xen-pvh/edk2-stable209912/"
                                    f"{sec} (per_tree: one copy per edk2 tree; none for "
                                    "edk2-stable209912)")
    assert info.value.location is not None and info.value.location.line > 0


def test_prepare_workspace_writes_and_prunes_overrides(layout: Layout, fake_env: dict) -> None:
    yaml_path = layout.platforms_dir / "xen-pvh.yaml"
    original = yaml_path.read_text()
    ov_rel = "OvmfPkg/Include/Dsc/OvmfTpmDefines.dsc.inc"
    yaml_path.write_text(original.replace("\noverrides:\n", f"\noverrides:\n  - {ov_rel}\n", 1))
    src = layout.overrides_dir / "xen-pvh" / ov_rel
    src.parent.mkdir(parents=True)
    src.write_text("# override\n")
    p = plan(resolve(make_request("xen-pvh"), layout))
    written = build_workspace.prepare_workspace(p)
    # The whole-file overrides, the files the patch override changes (and their modules' other files:
    # none in this fake tree), the new override.
    assert set(written) == {"OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf", "OvmfPkg/Sec/SecMain.c", ov_rel,
                            "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",
                            "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"}
    assert (p.workspace / ov_rel).read_text() == "# override\n"
    assert build_workspace.prepare_workspace(p) == []  # unchanged: nothing rewritten (EDK2 sees no change)
    yaml_path.write_text(original)
    q = plan(resolve(make_request("xen-pvh"), layout))
    build_workspace.prepare_workspace(q)
    assert not (q.workspace / ov_rel).exists()  # would otherwise still shadow edk2's file


def test_ccache_missing_is_one_clear_line(layout: Layout, fake_env: dict, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(build_cmd, "CCACHE_MASQUERADE", tmp_path / "no-ccache")
    with pytest.raises(OvmfgenError, match=r"--ccache needs Debian's ccache .*invoke setup"):
        build_cmd.build(resolve(make_request("xen-pvh", ccache=True), layout))


@pytest.mark.parametrize("task", ["build", "render"])
def test_task_help_is_help(task: str) -> None:
    """`--help` after the task shows its options (not taken as the platform's name)."""
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", task, "--help"], cwd=paths.REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: python -m ovmfgen [--core-opts] " + task) and "--platform" in proc.stdout


def test_recipe_modules_exist() -> None:
    """Every module the no-op hash covers is a real file (a moved module would silently drop out)."""
    root = Path(build_plan.__file__).resolve().parent.parent
    missing = [name for name in build_plan.RECIPE_MODULES if not (root / name).is_file()]
    assert not missing
    assert "builder/command.py" in build_plan.RECIPE_MODULES


def test_a_define_no_file_of_the_platform_reads_is_refused_in_one_line(edk2_tree, tmp_path: Path) -> None:
    # Fedora and Alpine pass TPM switches to OvmfXen builds: no file of the platform reads them.
    env = {**os.environ, "OVMFGEN_VERBOSE": ""}
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "build", "--platform", "xen-pvh", "--define",
                           "TPM2_ENABLE=TRUE", "--define", "SMM_REQUIRE=FALSE"], cwd=paths.REPO_ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --define TPM2_ENABLE=TRUE: no file of platform xen-pvh reads TPM2_ENABLE "
                               "(it reads: ")
    # The list names what the platform reads, the DSC's own switches and its includes' (NetworkPkg's).
    for name in ("SMM_REQUIRE", "DEBUG_ON_HYPERVISOR_CONSOLE", "NETWORK_TLS_ENABLE", "FD_SIZE_IN_KB"):
        assert f" {name}," in lines[0] or f" {name})" in lines[0]
    assert "Traceback" not in proc.stderr


def test_a_changed_set_of_overrides_makes_edk2_resolve_every_module_again(layout: Layout, fake_env: dict) -> None:
    p = plan(resolve(make_request("xen-pvh"), layout))
    stamp = p.workspace / "Build" / "XenOvmf" / "DEBUG_GCC5" / "X64" / "OvmfPkg" / "Sec" / "SecMain" / "AutoGenTimeStamp"
    stamp.parent.mkdir(parents=True)
    stamp.write_text("old place\n")
    build_workspace.prepare_workspace(p)                  # new overrides: the stamps go
    assert not stamp.exists()
    stamp.write_text("new place\n")
    build_workspace.prepare_workspace(p)                  # the same overrides: edk2's incremental AutoGen stays
    assert stamp.exists()
