"""ovmfgen.builder.manifest: manifest.json's schema, FV usage from the build report and the log."""

from __future__ import annotations

import json
import textwrap

from helpers import FAKE_TOOLS
from ovmfgen.builder import manifest as build_manifest
from ovmfgen.builder import plan as build_plan
from ovmfgen.builder.plan import plan
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.paths import Layout


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
