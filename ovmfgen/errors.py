"""The one error type every stage raises, and how it is shown to people.

Stages raise ``OvmfgenError(message, location)``; only the CLI layer turns it into
``path:line:col: error: message`` and a non-zero exit status (no traceback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Location:
    """A place in an input file; ``path`` is shown relative to the repository when it lies inside it."""

    path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        if self.col <= 0:
            return f"{self.path}:{self.line}"
        return f"{self.path}:{self.line}:{self.col}"


class OvmfgenError(Exception):
    """A user-facing error: one line, optionally located in an input file."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return f"error: {self.message}"
        return f"{self.location}: error: {self.message}"


def display_path(path: str | Path, base: Path | None = None) -> str:
    """Return ``path`` relative to the repository (or ``base``) when inside it, else as given."""
    from ovmfgen.paths import REPO_ROOT

    p = Path(path)
    root = base or REPO_ROOT
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
