"""ovmfgen.builder.diagnose: a failed build's first real error, located."""

from __future__ import annotations

from pathlib import Path

from ovmfgen import paths
from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import diagnose as build_diagnose


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
