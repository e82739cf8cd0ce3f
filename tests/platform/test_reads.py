"""reads: the -D names a platform's files and their !includes read."""

from __future__ import annotations

import pytest

from ovmfgen.errors import Location, OvmfgenError
from ovmfgen.platform.reads import UnreadSwitch, check_defines, check_features, names_read, refuse_feature_defines

DSC = b"""[Defines]
  DEFINE SECURE_BOOT_ENABLE = FALSE   # a DEFINE a -D may override
!include OvmfPkg/Include/Dsc/Net.dsc.inc
!include $(WORKSPACE)/OvmfPkg/Include/Dsc/Other.dsc.inc
!include OvmfPkg/Include/Dsc/Missing.dsc.inc
!ifdef $(SOURCE_DEBUG_ENABLE)
!endif
!ifndef  BARE_NAME
!endif
# !if $(COMMENTED_OUT) == TRUE
!if $(SECURE_BOOT_ENABLE) == TRUE
!endif
"""


def _tree(files: dict[str, bytes]):
    return files.get


def test_names_come_from_the_files_and_their_includes_transitively() -> None:
    tree = {
        "OvmfPkg/Include/Dsc/Net.dsc.inc": b"!if $(NETWORK_ENABLE)\r\n!include OvmfPkg/Include/Dsc/Deeper.inc\r\n!endif\r\n",
        "OvmfPkg/Include/Dsc/Deeper.inc": b"  NetworkPkg/X.inf  # $(NOT_READ)\n  $(NETWORK_TLS_ENABLE)\n",
        "OvmfPkg/Include/Dsc/Other.dsc.inc": b"!include OvmfPkg/Include/Dsc/Net.dsc.inc\n$(OTHER)\n",
    }
    read = names_read({"OvmfPkg/X.dsc": DSC, "OvmfPkg/X.fdf": b"$(FD_SIZE_IN_KB)\n"}, _tree(tree))
    assert read == {"WORKSPACE", "SOURCE_DEBUG_ENABLE", "BARE_NAME", "SECURE_BOOT_ENABLE", "NETWORK_ENABLE",
                    "NETWORK_TLS_ENABLE", "OTHER", "FD_SIZE_IN_KB"}


def test_a_define_nothing_reads_is_one_located_line() -> None:
    read = frozenset({"SMM_REQUIRE", "NETWORK_ENABLE"})
    check_defines("p", {"SMM_REQUIRE": "TRUE"}, read)
    with pytest.raises(OvmfgenError) as info:
        check_defines("p", {"SMM_REQUIRE": "TRUE", "E1000_ENABLE": "TRUE"}, read)
    assert str(info.value) == ("error: --define E1000_ENABLE=TRUE: no file of platform p reads E1000_ENABLE "
                               "(it reads: NETWORK_ENABLE, SMM_REQUIRE)")
    with pytest.raises(OvmfgenError) as info:
        check_defines("p", {"E1000_ENABLE": "TRUE"}, read, flag="define", where={"E1000_ENABLE": Location("nightly.yaml", 9, 7)})
    assert str(info.value).startswith("nightly.yaml:9:7: error: define E1000_ENABLE=TRUE: no file of platform p")


def test_a_define_a_feature_owns_is_refused_with_the_feature_to_write() -> None:
    # Read or not (upstream's TPM includes read TPM2_ENABLE), the -D is refused: the feature decides.
    values = {"tpm": "'off' or 'tpm2'", "secure_boot": "this platform has no Secure Boot"}
    refuse_feature_defines({"NETWORK_ENABLE": "TRUE"}, values)
    with pytest.raises(UnreadSwitch) as info:
        refuse_feature_defines({"NETWORK_ENABLE": "TRUE", "TPM2_ENABLE": "TRUE"}, values)
    assert str(info.value) == ("error: --define TPM2_ENABLE=TRUE: ovmfgen builds this as a feature: "
                               "write --feature tpm=VALUE instead ('off' or 'tpm2')")
    with pytest.raises(OvmfgenError) as info:
        refuse_feature_defines({"SECURE_BOOT_ENABLE": "TRUE"}, values, flag="define",
                               where={"SECURE_BOOT_ENABLE": Location("nightly.yaml", 4, 5)})
    assert str(info.value) == ("nightly.yaml:4:5: error: define SECURE_BOOT_ENABLE=TRUE: ovmfgen builds this as a "
                               "feature: write --feature secure_boot=VALUE instead (this platform has no Secure Boot)")


def test_a_feature_nothing_reads_is_one_line_naming_what_is_read() -> None:
    check_features("qemu-x64", {"timer": "acpi"}, ["fd_size", "timer"])
    with pytest.raises(UnreadSwitch) as info:
        check_features("qemu-x64", {"timer": "acpi", "debug_output": "hypervisor-console"}, ["timer", "fd_size"])
    assert str(info.value) == ("error: --feature debug_output=hypervisor-console: nothing in platform qemu-x64 "
                               "reads feature debug_output (it reads: fd_size, timer)")
    assert (info.value.kind, info.value.name, info.value.value) == ("feature", "debug_output", "hypervisor-console")
    where = {"shell": Location("nightly.yaml", 9, 7)}
    with pytest.raises(OvmfgenError) as info:
        check_features("m", {"shell": "false"}, [], flag="feature", where=where)
    assert str(info.value) == "nightly.yaml:9:7: error: feature shell=false: nothing in platform m reads feature shell " \
                              "(it reads: none)"


def test_resolve_refuses_a_feature_the_platform_does_not_read(edk2_tree) -> None:
    from ovmfgen.platform.resolve import resolve
    from ovmfgen.request import make_request

    with pytest.raises(UnreadSwitch) as info:
        resolve(make_request("qemu-x64", features=["debug_output=hypervisor-console"]))
    assert info.value.message.startswith("--feature debug_output=hypervisor-console: nothing in platform qemu-x64 reads")
