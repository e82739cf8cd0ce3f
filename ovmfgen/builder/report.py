"""What a build says about its flash layout: the firmware volumes of the ``-Y FLASH`` build report (their
addresses and how full they are) and the build log's "FV Space Information"."""

from __future__ import annotations

import re

from ovmfgen.builder.diagnose import strip_log_prefix

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


_FD_NAME = re.compile(r"^FD Name:\s*(\S+)")
_BASE = re.compile(r"^Base Address:\s*(0x[0-9A-Fa-f]+)")
_FV_NAME = re.compile(r"^Fv Name:\s*(\S+)")


def fv_bases_from_report(text: str, fd: str = "MEMFD") -> dict[str, int]:
    """FV name -> its address, for the volumes of FD ``fd`` in a ``-Y FLASH`` build report (FD base +
    region offset): where SEC puts the volumes it decompresses."""
    bases: dict[str, int] = {}
    current: str | None = None
    fd_base: int | None = None
    region: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _FD_NAME.match(line)
        if m:
            current, fd_base, region = m.group(1), None, None
            continue
        if current != fd:
            continue
        m = _BASE.match(line)
        if m:
            if fd_base is None:
                fd_base = int(m.group(1), 16)
            else:
                region = int(m.group(1), 16)
            continue
        m = _FV_NAME.match(line)
        if m and fd_base is not None and region is not None:
            bases.setdefault(m.group(1), fd_base + region)
    return bases
