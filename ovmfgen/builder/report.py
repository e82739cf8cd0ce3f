"""What a build says about its flash layout: the firmware volumes of the ``-Y FLASH`` build report (their
addresses and how full they are) and the build log's "FV Space Information"."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ovmfgen.builder.diagnose import strip_log_prefix

_FD_NAME = re.compile(r"^FD Name:\s*(\S+)")
_BASE = re.compile(r"^Base Address:\s*(0x[0-9A-Fa-f]+)")
_SIZE = re.compile(r"^Size:\s+(0x[0-9A-Fa-f]+)")
_FV_NAME = re.compile(r"^Fv Name:\s*(\S+)(?:\s+\(([\d.]+)% Full\))?")
_OCCUPIED = re.compile(r"^Occupied Size:\s+(0x[0-9A-Fa-f]+)")
_FREE = re.compile(r"^Free Size:\s+(0x[0-9A-Fa-f]+)")
_LOG_FV = re.compile(r"^(\S+) \[(\d+)%Full\] (\d+) \(0x[0-9a-fA-F]+\) total, (\d+) \(0x[0-9a-fA-F]+\) used, "
                     r"(\d+) \(0x[0-9a-fA-F]+\) free")


@dataclass(frozen=True)
class ReportVolume:
    """One firmware volume as a ``-Y FLASH`` build report lists it (a volume nested in another, or placed
    in several FDs, is listed once per place)."""
    fd: str | None                 # the FD whose section lists it
    name: str
    address: int | None            # the FD's base + the region's offset (None for a nested volume)
    size: int | None               # the last "Size:" before it (the region's, or the FD's)
    percent_full: float | None
    used: int | None
    free: int | None


def report_volumes(text: str) -> list[ReportVolume]:
    """Every firmware volume of a ``-Y FLASH`` build report, in the report's order: the one reading of it."""
    volumes: list[dict] = []
    fd: str | None = None
    fd_base = offset = size = None
    nested = False                 # inside a "Nested FV" section: its base is within the outer volume
    current: dict | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := _FD_NAME.match(line):
            fd, fd_base, offset, current, nested = m.group(1), None, None, None, False
        elif line in ("Fd Region", "Nested FV"):
            nested = line == "Nested FV"
        elif m := _BASE.match(line):
            if fd_base is None:
                fd_base = int(m.group(1), 16)
            else:
                offset = int(m.group(1), 16)
        elif m := _SIZE.match(line):
            size = int(m.group(1), 16)
        elif m := _FV_NAME.match(line):
            current = {"fd": fd, "name": m.group(1), "size": size, "used": None, "free": None,
                       "address": fd_base + offset if None not in (fd_base, offset) and not nested else None,
                       "percent_full": float(m.group(2)) if m.group(2) else None}
            volumes.append(current)
        elif current is not None and (m := _OCCUPIED.match(line)):
            current["used"] = int(m.group(1), 16)
        elif current is not None and (m := _FREE.match(line)):
            current["free"] = int(m.group(1), 16)
            current = None
    return [ReportVolume(**v) for v in volumes]


def fv_usage_from_report(text: str) -> dict[str, dict]:
    """Per FV: size, used, free (bytes) and percent full, from a ``-Y FLASH`` build report (each FV where
    the report first lists it with how full it is)."""
    usage: dict[str, dict] = {}
    for v in report_volumes(text):
        if v.percent_full is not None and v.name not in usage:
            usage[v.name] = {"size": v.size, "used": v.used, "free": v.free, "percent_full": v.percent_full}
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


def fv_bases_from_report(text: str, fd: str = "MEMFD") -> dict[str, int]:
    """FV name -> its address, for the volumes of FD ``fd`` in a ``-Y FLASH`` build report (FD base +
    region offset): where SEC puts the volumes it decompresses."""
    bases: dict[str, int] = {}
    for v in report_volumes(text):
        if v.fd == fd and v.address is not None:
            bases.setdefault(v.name, v.address)
    return bases
