"""ovmfgen.builder.manifest: manifest.json's schema, FV usage from the build report and the log."""

from __future__ import annotations

import json

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
