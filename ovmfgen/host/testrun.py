"""``invoke test``: make sure the machine is set up, then run pytest over tests/ (streamed, not captured)."""

from __future__ import annotations

import os
import sys

from ovmfgen import paths
from ovmfgen.edk2.fetch import TARBALLS_ENV
from ovmfgen.edk2.install import ensure_release
from ovmfgen.edk2.releases import NEWEST_TAG
from ovmfgen.errors import OvmfgenError
from ovmfgen.run import run
from ovmfgen.ui import say
from ovmfgen.apt import ensure_apt_packages
from ovmfgen.host.setup import setup_all

# What only the tests need: a browser to open the nightly report the way a person would; the UKI stub
# Debian ships (systemd-boot-efi: EFI binaries only, no dependencies), whose PE checksum the OS-disk
# code must reproduce (tests/test_osdisk.py; the product takes its stub from the downloaded package).
TEST_APT_PACKAGES = ("chromium", "systemd-boot-efi")

# pytest's exit codes (pytest.ExitCode), for the error line.
PYTEST_EXIT = {1: "tests failed", 2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


class TestsFailed(OvmfgenError):
    """pytest exited non-zero; ``exit_code`` is its status (the CLI exits with it)."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(f"pytest: {PYTEST_EXIT.get(exit_code, 'failed')} (exit {exit_code})")


def pytest_argv(keyword: str | None = None, fast: bool = False) -> list[str]:
    """The pytest command line: all of tests/ (integration and xen included) unless ``fast``."""
    argv = [sys.executable, "-m", "pytest", str(paths.REPO_ROOT / "tests")]
    if fast:
        argv += ["-m", "not integration and not xen"]
    else:
        # The full run is CI's: its log then says where the minutes went (the budget is 60).
        argv += ["--durations=25"]
    if keyword:
        argv += ["-k", keyword]
    return argv


def run_tests(keyword: str | None = None, fast: bool = False) -> None:
    """Run ``setup_all()`` (a quick no-op once ready), then pytest; raise TestsFailed unless it passes.

    With ``$OVMFGEN_EDK2_TARBALLS`` set (CI), the newest known tree is set up too.

    Exit 5 (no tests collected) counts as a failure: a run that tested nothing has not passed.
    """
    setup_all()
    if os.environ.get(TARBALLS_ENV):
        # CI: the integration tests build and boot the newest tree too (from the tarball directory).
        tree, did = ensure_release(NEWEST_TAG)
        if did:
            say(f"set up edk2 {tree.tag} ({tree.identity['source']}) at {tree.root}")
    if not fast:
        ensure_apt_packages(TEST_APT_PACKAGES)
    proc = run(pytest_argv(keyword, fast), cwd=paths.REPO_ROOT, capture=False, check=False)
    if proc.returncode != 0:
        raise TestsFailed(proc.returncode)
