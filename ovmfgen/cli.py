"""The command layer shared by tasks.py (invoke) and ``python -m ovmfgen``.

Every entry point goes through ``guard`` so a user-facing error is one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from ovmfgen.errors import OvmfgenError
from ovmfgen.ui import setup_logging

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so every ``finally`` runs (QEMU runs stopped, temp dirs removed)."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def required(task: str, **options: object) -> None:
    """One line naming the options of ``invoke TASK`` that were not given (invoke's own positional
    arguments would make ``invoke TASK --help`` fail instead of showing the help)."""
    missing = [f"--{name.replace('_', '-')}" for name, value in options.items() if value in (None, "")]
    if missing:
        raise OvmfgenError(f"invoke {task} needs {', '.join(missing)} (invoke {task} --help)")


def guard(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``fn``; turn ``OvmfgenError`` into one ``path:line:col: error: ...`` line and exit 1.

    SIGTERM (a CI timeout, ``kill``, the nightly stopping a job) unwinds ``fn`` like Ctrl-C does, so the
    children it started (a nested Xen run's QEMU, builds) are stopped by their ``finally`` blocks instead
    of being left running; the exit status is then 143.
    """
    setup_logging()
    # Python's default for SIGTERM is to die at once, without unwinding: replace it while fn runs.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
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
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        if main and previous is not None:  # None: a handler set outside Python, which cannot be put back
            signal.signal(signal.SIGTERM, previous)
