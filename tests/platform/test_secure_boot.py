"""Feature secure_boot as the command line gives it: what it implies, what it refuses (one line each)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ovmfgen.paths import REPO_ROOT
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.load import load_platform


def test_a_key_set_implies_the_4m_layout_and_no_shell() -> None:
    platform = load_platform("xen-pvh", feature_overrides={"secure_boot": "test"})
    features = dict(platform.features)
    assert (features["fd_size"], features["shell"], features["secure_boot"]) == ("4", "false", "test")
    assert platform.secure_boot.store_offset == 0x1000
    assert platform.elf.reserved_for(4096) == 0x1000          # the header keeps one page
    assert platform.elf.reserved_for(2048) == 0xE000          # other sizes as before
    assert platform.key_sets == ("microsoft", "test")


def test_off_changes_nothing() -> None:
    assert load_platform("xen-pvh", feature_overrides={"secure_boot": "off"}).secure_boot is None
    assert load_platform("xen-pvh").elf.reserved_for(4096) == 0x40000


@pytest.mark.parametrize("overrides, message", [
    ({"secure_boot": "test", "fd_size": "2"}, "error: --fd-size 2M: Secure Boot needs the 4 MiB layout (its 10 KiB "
     "limit per authenticated variable is smaller than a current dbx): use --fd-size 4M or leave it out"),
    ({"secure_boot": "test", "shell": "true"}, "error: --feature shell=true: a Secure Boot image has no Shell (the "
     "Shell bypasses Secure Boot; edk2 leaves it out of such images too)"),
    ({"secure_boot": "tset"}, "error: --feature secure_boot: 'tset' is not a key set of this platform (key sets: "
     "microsoft, test; or 'off')"),
    ({"secure_boot": "Bad Name"}, "error: --feature secure_boot=Bad Name: 'Bad Name' is not a value of feature "
     "secure_boot ('off' or the name of one of the platform's key sets: lower-case letters, digits, '-')"),
])
def test_contradictions_are_one_line(overrides, message) -> None:
    with pytest.raises(OvmfgenError) as info:
        load_platform("xen-pvh", feature_overrides=overrides)
    assert str(info.value) == message


def test_a_platform_without_key_sets_refuses_secure_boot() -> None:
    with pytest.raises(OvmfgenError, match="this platform has no 'secure_boot:' section"):
        load_platform("qemu-x64", feature_overrides={"secure_boot": "test"})


def test_the_packagers_define_is_refused_naming_the_feature(edk2_tree) -> None:
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "build", "--platform", "xen-pvh", "--define",
                           "SECURE_BOOT_ENABLE=TRUE"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == ("error: --define SECURE_BOOT_ENABLE=TRUE: ovmfgen builds this as a feature: write "
                           "--feature secure_boot=VALUE instead ('off' or a key set: microsoft, test)\n")
