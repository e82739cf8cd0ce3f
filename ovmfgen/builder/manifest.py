"""The published ``manifest.json`` (read, compare: the no-op check; make) and the FV usage it records."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from ovmfgen.builder.diagnose import strip_log_prefix
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


_REPORT_FV = re.compile(r"^Fv Name:\s+(\S+)\s+\(([\d.]+)% Full\)")
_REPORT_SIZE = re.compile(r"^Size:\s+(0x[0-9A-Fa-f]+)")
_REPORT_OCCUPIED = re.compile(r"^Occupied Size:\s+(0x[0-9A-Fa-f]+)")
_REPORT_FREE = re.compile(r"^Free Size:\s+(0x[0-9A-Fa-f]+)")
_LOG_FV = re.compile(r"^(\S+) \[(\d+)%Full\] (\d+) \(0x[0-9a-fA-F]+\) total, (\d+) \(0x[0-9a-fA-F]+\) used, "
                     r"(\d+) \(0x[0-9a-fA-F]+\) free")


def fv_usage_from_report(text: str) -> dict[str, dict]:
    """Per FV: size, used, free (bytes) and percent full, from a ``-Y FLASH`` build report."""
    usage: dict[str, dict] = {}
    size: int | None = None
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _REPORT_SIZE.match(line)
        if m:
            size = int(m.group(1), 16)
            continue
        m = _REPORT_FV.match(line)
        if m:
            current = m.group(1)
            if current not in usage:
                usage[current] = {"size": size, "used": None, "free": None, "percent_full": float(m.group(2))}
            else:
                current = None  # the same FV again inside another FD
            continue
        if current:
            m = _REPORT_OCCUPIED.match(line)
            if m:
                usage[current]["used"] = int(m.group(1), 16)
                continue
            m = _REPORT_FREE.match(line)
            if m:
                usage[current]["free"] = int(m.group(1), 16)
                current = None
    return dict(sorted(usage.items()))


def fv_usage_from_log(text: str) -> dict[str, dict]:
    """The same from the build log's "FV Space Information" lines (when there is no report)."""
    usage = {}
    for raw in text.splitlines():
        m = _LOG_FV.match(strip_log_prefix(raw).strip())
        if m:
            usage[m.group(1)] = {"size": int(m.group(3)), "used": int(m.group(4)), "free": int(m.group(5)),
                                 "percent_full": float(m.group(2))}
    return dict(sorted(usage.items()))
