"""ovmfgen.builder.report: the build report's and the build log's firmware volumes."""

from __future__ import annotations

import textwrap

from ovmfgen.builder import report as build_report

USAGE_REPORT = textwrap.dedent("""\
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
    usage = build_report.fv_usage_from_report(USAGE_REPORT)
    assert usage == {
        "FVMAIN_COMPACT": {"size": 0x1AC000, "used": 0x12FF90, "free": 0x7C070, "percent_full": 71.0},
        "PEIFV": {"size": 0xE0000, "used": 0x30728, "free": 0xAF8D8, "percent_full": 21.6},
    }
    log = ("INFO - FV Space Information\n"
           "INFO - SECFV [10%Full] 212992 (0x34000) total, 22224 (0x56d0) used, 190768 (0x2e930) free\n")
    assert build_report.fv_usage_from_log(log) == {
        "SECFV": {"size": 212992, "used": 22224, "free": 190768, "percent_full": 10.0}}


BASES_REPORT = """\
FD Name:            OVMF
Base Address:       0xFFE00000
Fd Region
Base Address:       0x20000
Fv Name:            PEIFV (21.6% Full)
>======<
Firmware Device (FD)
FD Name:            MEMFD
Base Address:       0x800000
Size:               0xB00000 (11264K)
FD Region
Type:               None
Base Address:       0x0
Fd Region
Type:               FV
Base Address:       0x20000
Size:               0xE0000 (896K)
Fv Name:            PEIFV (21.6% Full)
Fd Region
Type:               FV
Base Address:       0x100000
Fv Name:            DXEFV (40.1% Full)
"""


def test_the_addresses_are_memfds_from_the_build_report() -> None:
    assert build_report.fv_bases_from_report(BASES_REPORT) == {"PEIFV": 0x820000, "DXEFV": 0x900000}
    assert build_report.fv_bases_from_report("") == {}


def test_report_volumes_lists_every_place_a_volume_has() -> None:
    vols = build_report.report_volumes(USAGE_REPORT)
    assert [(v.fd, v.name, v.address, v.size, v.used) for v in vols] == [
        ("OVMF", "FVMAIN_COMPACT", 0xFFE20000, 0x1AC000, 0x12FF90),
        ("OVMF", "PEIFV", None, 0xE0000, 0x30728),     # nested in FVMAIN_COMPACT: no address of its own
        ("OVMF_CODE", "FVMAIN_COMPACT", None, 0x1AC000, 0x1),
    ]
    # A volume listed without how full it is still has its place (the addresses SEC uses).
    assert [(v.name, v.percent_full) for v in build_report.report_volumes(BASES_REPORT)] == [
        ("PEIFV", 21.6), ("PEIFV", 21.6), ("DXEFV", 40.1)]
    assert build_report.report_volumes("") == []
