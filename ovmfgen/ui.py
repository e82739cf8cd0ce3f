"""Progress output for people: short ``ovmfgen: ...`` lines on stderr, and logging set-up."""

from __future__ import annotations

import logging
import os
import sys

_configured = False


def setup_logging(verbose: bool = False) -> None:
    """Send ovmfgen's log (commands run, their cwd) to stderr; quiet unless ``verbose``/OVMFGEN_VERBOSE."""
    global _configured
    if _configured:
        return
    _configured = True
    verbose = verbose or bool(os.environ.get("OVMFGEN_VERBOSE"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ovmfgen: %(message)s"))
    root = logging.getLogger("ovmfgen")
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def say(message: str, prefix: bool = True) -> None:
    """One progress line for people (``prefix=False``: a located ``path:line:col: note: ...`` line as is)."""
    print(f"ovmfgen: {message}" if prefix else message, file=sys.stderr, flush=True)


def is_interactive() -> bool:
    """True on a terminal outside CI (progress bars allowed); plain periodic lines otherwise."""
    return sys.stderr.isatty() and not os.environ.get("CI")
