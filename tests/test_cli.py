"""The command layer: one line per error, and SIGTERM stops what a command started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ovmfgen import cli
from ovmfgen.errors import Location, OvmfgenError

REPO = Path(__file__).resolve().parents[1]


def test_an_ovmfgen_error_is_one_line_and_exit_1(capsys):
    def fail() -> None:
        raise OvmfgenError("broken", Location("platforms/x.yaml", 12, 5))

    with pytest.raises(SystemExit) as exc:
        cli.guard(fail)
    assert exc.value.code == 1
    assert capsys.readouterr().err == "platforms/x.yaml:12:5: error: broken\n"


def test_guard_restores_the_sigterm_handler():
    before = signal.getsignal(signal.SIGTERM)
    assert cli.guard(lambda: signal.getsignal(signal.SIGTERM)) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_stops_the_child_a_command_started(tmp_path: Path):
    """A command killed with SIGTERM runs its ``finally``: the child it started (as a nested Xen run's
    QEMU) is stopped, and the command says so in one line with exit status 143."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import signal, sys
        from pathlib import Path
        from ovmfgen import cli
        from ovmfgen.run import popen, stop, wait

        def command():
            proc = popen(["sleep", "300"])
            try:
                Path({str(pid_file)!r}).write_text(str(proc.pid))
                while wait(proc, 1.0) is None:
                    pass
            finally:
                stop(proc, signals=(signal.SIGKILL,))

        cli.guard(command)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert parent.poll() is None and time.monotonic() < deadline, "the command did not start its child"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=30)
    assert parent.returncode == 143
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM)"
    assert "Traceback" not in err
    # The child is gone (reaped by stop(); a zombie would still have a /proc entry with state Z).
    assert not Path(f"/proc/{child}").exists()


@pytest.mark.parametrize("task", ["import", "elf", "check-elf"])
def test_a_task_with_required_options_shows_its_help_and_names_what_is_missing(task: str) -> None:
    shown = subprocess.run([sys.executable, "-m", "ovmfgen", task, "--help"], cwd=REPO, capture_output=True, text=True)
    assert shown.returncode == 0 and "Usage:" in shown.stdout, shown.stdout + shown.stderr
    bare = subprocess.run([sys.executable, "-m", "ovmfgen", task], cwd=REPO, capture_output=True, text=True)
    assert bare.returncode == 1 and bare.stderr.splitlines() == [
        f"error: invoke {task} needs " + {"import": "--dsc, --fdf, --output", "elf": "--fd, --output",
                                          "check-elf": "--elf"}[task] + f" (invoke {task} --help)"]
