"""The one subprocess wrapper: every external command ovmfgen runs goes through ``run``.

It logs the quoted command line and its working directory, never uses a shell, and on failure
raises ``CommandError`` carrying the tail of the command's output.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import atomic_write_bytes

log = logging.getLogger("ovmfgen.run")

# What callers of ``popen`` pass for its streams, so that no other module imports subprocess.
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
Process = subprocess.Popen

TAIL_LINES = 20


class CommandError(OvmfgenError):
    """A command exited non-zero (or could not be started)."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(f"command failed (exit {returncode}): {quote(argv)}")

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the command's combined output."""
        return "\n".join(self.output.splitlines()[-lines:])

    def first_error(self) -> str:
        """The most telling line of the output for a one-line message: apt's first ``E:``, else the last."""
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        for ln in lines:
            if ln.startswith("E:"):
                return ln
        return lines[-1] if lines else "no output"

    def save_log(self, log: Path) -> Path:
        """Keep the command line and its full output in ``log`` (atomically); return ``log``."""
        atomic_write_bytes(log, f"$ {quote(self.argv)}\n{self.output}".encode())
        return log


def quote(argv: Sequence[str | os.PathLike[str]]) -> str:
    """A copy-pasteable shell rendering of ``argv``."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    stdout_path: Path | None = None,
    timeout: float | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), logging the command and cwd.

    ``capture`` collects stdout+stderr (merged) as text in the result's ``stdout``; ``stdout_path``
    instead streams it to a file. With ``check`` a non-zero exit raises ``CommandError``.
    """
    args = [str(a) for a in argv]
    log.info("$ %s%s", quote(args), f"   (in {cwd})" if cwd else "")
    full_env = None if env is None else dict(env)
    try:
        if stdout_path is not None:
            with open(stdout_path, "w", encoding="utf-8", errors="replace") as fh:
                proc = subprocess.run(
                    args, cwd=cwd, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                    text=True, timeout=timeout, input=input_text, check=False,
                )
            output = Path(stdout_path).read_text(encoding="utf-8", errors="replace") if proc.returncode else ""
        else:
            proc = subprocess.run(
                args, cwd=cwd, env=full_env,
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.STDOUT if capture else None,
                text=True, errors="replace", timeout=timeout, input=input_text, check=False,
            )
            output = proc.stdout or ""
    except FileNotFoundError as exc:
        raise CommandError(args, 127, f"{args[0]}: not found ({exc.strerror})") from None
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise CommandError(args, -1, out + f"\n(timed out after {timeout} s)") from None
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, output)
    return proc


def popen(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **kwargs: object,
) -> subprocess.Popen[str]:
    """Start ``argv`` (no shell) for callers that stream output; logs like ``run``."""
    args = [str(a) for a in argv]
    log.info("$ %s%s", quote(args), f"   (in {cwd})" if cwd else "")
    return subprocess.Popen(args, cwd=cwd, env=None if env is None else dict(env), text=True, **kwargs)  # type: ignore[call-overload]


def wait(proc: subprocess.Popen[str], timeout: float | None = None) -> int | None:
    """Wait up to ``timeout`` seconds for ``proc``; its exit status, or None if it is still running."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def stop(
    proc: subprocess.Popen[str],
    *,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGKILL),
    grace: float = 5.0,
    group: bool = False,
) -> int:
    """Stop ``proc``: send each of ``signals`` in turn, waiting ``grace`` seconds after each.

    ``group`` signals the process group (for a child started with ``start_new_session``), so its
    own children stop too. Returns the exit status; after the last signal it waits without limit.
    """
    for n, sig in enumerate(signals):
        if proc.poll() is not None:
            break
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        if wait(proc, None if n == len(signals) - 1 else grace) is not None:
            break
    return proc.wait()
