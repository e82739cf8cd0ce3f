"""Running the stuart child: the exact command, its output teed to the log, progress while edk2 builds."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ovmfgen.builder.diagnose import BUILDING, strip_log_prefix
from ovmfgen.builder.plan import Plan
from ovmfgen.edk2.conventions import ARCH
from ovmfgen.fsutil import Lock
from ovmfgen.errors import OvmfgenError
from ovmfgen.run import PIPE, STDOUT, popen, quote, stop
from ovmfgen.ui import is_interactive, say

PROGRESS_EVERY_S = 15.0                  # plain progress lines (no TTY / CI)


class Progress:
    """Modules built / total while edk2 runs: a bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, label: str, interactive: bool | None = None, stream: IO[str] | None = None,
                 every: float = PROGRESS_EVERY_S) -> None:
        self.label = label
        self.interactive = is_interactive() if interactive is None else interactive
        self.stream = stream or sys.stderr
        self.every = every
        self.start = time.monotonic()
        self.done = 0
        self.total: int | None = None
        self.phase = "AutoGen"
        self._seen: set[tuple[str, str]] = set()
        self._last_print = 0.0
        self._drawn = False
        self._counted = False
        self._lock = threading.Lock()

    def feed(self, line: str, count_modules: object = None) -> None:
        """Update from one console line; ``count_modules`` () -> total, called when AutoGen is done."""
        s = strip_log_prefix(line).strip()
        m = BUILDING.match(s)
        if m or (s.endswith("done!") and self.phase == "AutoGen"):
            # AutoGen is over (its "..... done!" may come before or after other lines): count once.
            self.phase = "make"
            if not self._counted and callable(count_modules):
                self._counted = True
                self.total = count_modules() or self.total
        if m:
            key = (m.group(1), m.group(2))
            if key not in self._seen:
                self._seen.add(key)
                self.done += 1
        elif s.startswith(("Generating ", "Fd File Name:")) or s.startswith("GenFds"):
            self.phase = "GenFds"
        self.show()

    def text(self) -> str:
        """The current state in words."""
        elapsed = int(time.monotonic() - self.start)
        total = self.total if self.total and self.total >= self.done else None
        count = f"{self.done}/{total}" if total else f"{self.done}"
        pct = f" ({100 * self.done // total}%)" if total else ""
        return f"{self.label}: {self.phase}, {count} modules{pct}, {elapsed // 60}:{elapsed % 60:02d}"

    def bar(self, width: int = 28) -> str:
        """``[#####.....] 120/260 modules`` for a terminal."""
        total = self.total if self.total and self.total >= self.done else None
        filled = int(width * self.done / total) if total else 0
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.text()}"

    def show(self, force: bool = False) -> None:
        """Redraw the bar (terminal) or print a line every ``every`` seconds (plain)."""
        with self._lock:
            self._show(force)

    def _show(self, force: bool) -> None:
        now = time.monotonic()
        if self.interactive:
            if force or now - self._last_print >= 0.2:
                self.stream.write("\r\x1b[Kovmfgen: " + self.bar())
                self.stream.flush()
                self._drawn = True
                self._last_print = now
        elif force or now - self._last_print >= self.every:
            self.stream.write(f"ovmfgen: {self.text()}\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        """End the bar's line."""
        if self.interactive and self._drawn:
            self.show(force=True)
            self.stream.write("\n")
            self.stream.flush()


def count_module_makefiles(build_arch_dir: Path) -> int:
    """Modules AutoGen prepared: one GNUmakefile per module under ``<BUILD_OUTPUT_BASE>/<ARCH>``."""
    n = 0
    for _root, _dirs, files in os.walk(build_arch_dir):
        if "GNUmakefile" in files:
            n += 1
    return n


def run_stuart(p: Plan, lock: Lock | None = None, progress: Progress | None = None) -> tuple[int, str]:
    """Run the stuart command, teeing its output to ``p.log_path``; returns (exit status, log text)."""
    argv = p.stuart_argv()
    say(f"stuart command (rerunnable as is): {quote(argv)}")
    p.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # stream lines as they come: progress depends on it
    pass_fds = (lock.fd,) if lock is not None else ()
    if lock is not None:
        os.set_inheritable(lock.fd, True)  # the workspace stays locked while stuart runs, whatever happens to us
    arch_dir = p.output_base / ARCH
    prog = progress or Progress(f"{p.platform.name} {p.request.target}")
    try:
        # Its own session: on an interrupt we stop stuart *and* edk2's build/make/gcc under it.
        proc = popen(argv, cwd=p.workspace, env=env, stdout=PIPE, stderr=STDOUT,
                     errors="replace", bufsize=1, pass_fds=pass_fds, start_new_session=True)
    except OSError as exc:
        raise OvmfgenError(f"cannot start stuart_build: {exc}") from None
    chunks: list[str] = []
    done = threading.Event()

    def tick() -> None:  # keep the bar/lines moving through long silent steps (LTO links, GenFds)
        while not done.wait(1.0):
            prog.show()

    ticker = threading.Thread(target=tick, name="ovmfgen-progress", daemon=True)
    ticker.start()
    try:
        with open(p.log_path, "w", encoding="utf-8", errors="replace") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                chunks.append(line)
                prog.feed(line, lambda: count_module_makefiles(arch_dir))
            rc = proc.wait()
    except BaseException:
        stop(proc, group=True)  # stuart and edk2's build/make/gcc under it
        raise
    finally:
        done.set()
        ticker.join()
        prog.close()
        if lock is not None:
            os.set_inheritable(lock.fd, False)
    return rc, "".join(chunks)
