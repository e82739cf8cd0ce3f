"""The published ``manifest.json`` (read, compare: the no-op check; make) and the FV usage it records."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ovmfgen.builder.noop import outputs_intact, read_manifest
from ovmfgen.builder.plan import Plan, sha256_bytes
from ovmfgen.edk2.conventions import ARCH, fd_size_label
from ovmfgen.run import quote

MANIFEST_SCHEMA = 1


def up_to_date(p: Plan) -> bool:
    """The published artifacts were built from exactly these inputs and are intact."""
    manifest = read_manifest(p.dist)
    return bool(manifest) and manifest.get("input_hash") == p.input_hash and outputs_intact(p.dist, manifest)


MANIFEST_KEYS = (
    "schema", "platform", "target", "toolchain", "arch", "fd_size", "defines", "features", "version_string",
    "release_date", "input_hash", "inputs", "edk2", "tools", "outputs", "fv_usage", "elf", "measurements",
    "build_seconds", "stuart_command", "jobs", "ccache", "secure_boot",
)


def make_manifest(p: Plan, outputs: Mapping[str, bytes], fv_usage: Mapping[str, dict], elf_info: dict | None,
                  seconds: float, secure_boot: dict | None = None, measurements: dict | None = None) -> dict:
    """The manifest.json content (keys: ``MANIFEST_KEYS``); ``measurements``: a TPM build's predicted PCRs."""
    ident = p.edk2_identity
    return {
        "schema": MANIFEST_SCHEMA,
        "platform": p.platform.name,
        "target": p.request.target,
        "toolchain": p.toolchain,
        "arch": ARCH,
        "fd_size": fd_size_label(p.fd_size),
        "defines": dict(sorted(p.defines.items())),
        "features": dict(sorted(p.features.items())),
        "version_string": p.version_string,
        "release_date": p.release_date,
        "input_hash": p.input_hash,
        "inputs": p.inputs,
        "edk2": {"tag": ident.get("tag"), "commit": ident.get("commit"), "source": ident.get("source"),
                 "release_date": ident.get("release_date"), "digest": p.inputs["edk2"]},
        "tools": dict(p.tools),
        "outputs": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in outputs.items()},
        "fv_usage": {k: dict(v) for k, v in fv_usage.items()},
        "elf": elf_info,
        "measurements": measurements,
        "build_seconds": round(seconds, 1),
        "stuart_command": quote(p.stuart_argv()),
        "jobs": p.request.jobs or os.cpu_count() or 1,
        "ccache": p.request.ccache,
        "secure_boot": secure_boot,
    }
