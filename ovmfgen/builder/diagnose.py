"""Reading a failed build's log: the first real compiler/linker/AutoGen error, with its module."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.errors import Location, display_path

_LOG_PREFIX = re.compile(r"^(?:INFO|WARNING|ERROR|CRITICAL|DEBUG|SECTION|PROGRESS) - ")
BUILDING = re.compile(r"^Building \.\.\. (\S+\.inf) \[(\w+)\]")
_COMPILER_ERROR = re.compile(
    r"^(?P<file>/?[^\s:]+?):(?P<line>\d+)(?::(?P<col>\d+))?: (?:fatal )?error: (?P<msg>.+)$")
_LINKER_ERROR = re.compile(r"^(?P<where>.*?): (?P<msg>(?:undefined reference to|multiple definition of) .+)$")
_EDK2_ERROR = re.compile(r"^(?P<where>.*?)\s*:\s*error (?P<code>[0-9A-Fa-f]{4}): (?P<msg>.+)$")
_WHERE_LINE = re.compile(r"^(?P<path>.+?)\((?P<line>\d+)\)$")
_MAKE_DIR = re.compile(r"^\s*make tbuild \[(?P<dir>[^\]]+)\]")
_FAILED_MODULE = re.compile(r"^\s*(?P<inf>\S+\.inf) \[")
# Consequences of the first error, never the first error itself.
_FOLLOW_UP_CODES = {"7000", "F002"}
# stuart's closing words after any failure: they say nothing about the cause.
_GENERIC_STUART_ERRORS = {"Error", "Build failed", "Build Process Exception", "Pre Build failed",
                          "Post Build failed", "SetEnv failed"}


def strip_log_prefix(line: str) -> str:
    """A console line without stuart's ``LEVEL - `` prefix."""
    return _LOG_PREFIX.sub("", line, count=1)


@dataclass(frozen=True)
class Failure:
    """The first real error of a failed build."""

    message: str
    module: str | None = None
    location: Location | None = None

    def one_line(self, label: str, log: str) -> str:
        """The summary the CLI prints after the location (which OvmfgenError adds in front)."""
        module = f"module {self.module}, " if self.module else ""
        return f"{label}: {self.message} ({module}log {log})"


def _rel(path: str, roots: Sequence[Path]) -> str:
    p = Path(path)
    for root in roots:
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            continue
    return path


def summarize_failure(log_text: str, roots: Sequence[Path] = (), source_map: Mapping[str, Path] | None = None) \
        -> Failure:
    """The first real compiler/linker/AutoGen error in a stuart/edk2 build log, with its module.

    ``roots`` (workspace, edk2 tree) make paths relative; ``source_map`` maps such a relative path
    to the file a person edits (an override copied into the workspace -> overrides/<platform>/...).
    """
    lines = [strip_log_prefix(ln.rstrip("\r\n")) for ln in log_text.splitlines()]
    source_map = source_map or {}

    def locate(path: str, line: int = 0, col: int = 0) -> Location:
        rel = _rel(path, roots)
        shown = source_map.get(rel)
        return Location(display_path(shown) if shown else (rel if rel != path else display_path(path)), line, col)

    # The module that failed, from edk2's follow-up messages.
    module = None
    for i, line in enumerate(lines):
        if "error F002" in line and i + 1 < len(lines):
            m = _FAILED_MODULE.match(lines[i + 1])
            if m:
                module = _rel(m.group("inf"), roots)
                break
        if "error 7000" in line and i + 1 < len(lines) and module is None:
            m = _MAKE_DIR.match(lines[i + 1])
            if m:
                module = _rel(m.group("dir"), roots)

    for i, line in enumerate(lines):
        s = line.strip()
        m = _COMPILER_ERROR.match(s)
        if m and not s.startswith("make"):
            mod = module or _last_building(lines[:i], roots)
            return Failure(m.group("msg").strip(), mod,
                           locate(m.group("file"), int(m.group("line")), int(m.group("col") or 0)))
        m = _LINKER_ERROR.match(s)
        if m:
            return Failure(f"link error: {m.group('msg').strip()}", module or _last_building(lines[:i], roots))
        m = _EDK2_ERROR.match(s)
        if m and m.group("code").upper() not in _FOLLOW_UP_CODES:
            msg = m.group("msg").strip()
            detail = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(("\t", "    ")) else ""
            if detail and len(msg) + len(detail) < 200:
                msg = f"{msg} {detail}"
            where = m.group("where").strip()
            loc = None
            wm = _WHERE_LINE.match(where)
            if wm:
                loc = locate(wm.group("path"), int(wm.group("line")))
            elif where and where not in ("build.py...", "") and ("/" in where):
                loc = locate(where)
            return Failure(f"AutoGen error {m.group('code')}: {msg}", module, loc)
    # No compiler or edk2 error: stuart's own complaint (SetEnv, the DSC parse, a Python exception...).
    for i, raw in enumerate(log_text.splitlines()):
        m = re.match(r"^(CRITICAL|ERROR) - (.+)$", raw.strip())
        if m and m.group(2).strip() not in _GENERIC_STUART_ERRORS:
            return Failure(f"stuart: {m.group(2).strip()}", module)
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            last = next((ln.strip() for ln in lines[i + 1:] if ln and not ln.startswith((" ", "\t"))), "")
            return Failure(f"stuart crashed: {last or 'Python traceback'}", module)
    return Failure("the build failed without a recognisable error message", module)


def _last_building(lines: Sequence[str], roots: Sequence[Path]) -> str | None:
    for line in reversed(lines):
        m = BUILDING.match(line.strip())
        if m:
            return _rel(m.group(1), roots)
    return None
