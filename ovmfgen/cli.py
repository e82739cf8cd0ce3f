"""The command layer shared by tasks.py (invoke) and ``python -m ovmfgen``.

Every entry point goes through ``guard`` so a user-facing error is one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from ovmfgen.errors import OvmfgenError
from ovmfgen.ui import setup_logging

T = TypeVar("T")


def guard(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``fn``; turn ``OvmfgenError`` into one ``path:line:col: error: ...`` line and exit 1."""
    setup_logging()
    try:
        return fn(*args, **kwargs)
    except OvmfgenError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        tail = getattr(exc, "tail", None)
        if callable(tail):
            text = tail()
            if text:
                print(text, file=sys.stderr)
        raise SystemExit(getattr(exc, "exit_code", 1)) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
