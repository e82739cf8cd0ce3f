"""ovmfgen.boot.command (invoke boot): the published build found through the resolved platform, option checks,
the log tails of a failed boot, one SEC stack for both entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import boot_log
from ovmfgen.boot import command as boot_command
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.boot.command import BootError
from ovmfgen.boot.verdict import classify_log
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import Layout


# --- boot_command's checks that need no QEMU -------------------------------------------------------

def test_boot_command_without_published_image(tmp_path, real_cache):
    layout = Layout(dist_root=tmp_path)
    with pytest.raises(OvmfgenError, match=r"no published firmware at .*xen-pvh/DEBUG/ovmf.elf.*invoke build"):
        boot_command.boot_command(layout=layout)
    with pytest.raises(OvmfgenError, match=r"xen-pvh/DEBUG-4M-hvcon/ovmf.elf: run `invoke build --platform xen-pvh "
                                           r"--target DEBUG --fd-size 4M --feature debug_output=hypervisor-console`"):
        boot_command.boot_command(fd_size="4M", features=["debug_output=hypervisor-console"], layout=layout)


def test_boot_finds_the_variant_build_through_the_layout(tmp_path, real_cache):
    """--fd-size/--feature/--target name the same dist directory the build published to."""
    layout = Layout(dist_root=tmp_path)
    for kw, rel in [({}, "DEBUG"), ({"fd_size": "4M"}, "DEBUG-4M"), ({"target": "RELEASE"}, "RELEASE"),
                    ({"features": ["debug_output=hypervisor-console"]}, "DEBUG-hvcon"),
                    ({"fd_size": "2M"}, "DEBUG")]:  # the platform's default size: no suffix
        elf = tmp_path / "xen-pvh" / rel / "ovmf.elf"
        elf.parent.mkdir(parents=True, exist_ok=True)
        elf.write_bytes(b"ELF")
        assert resolve(make_request("xen-pvh", **kw), layout).published() == elf


def test_boot_command_rejects_release_and_bad_options(tmp_path):
    with pytest.raises(OvmfgenError, match="RELEASE build prints no DEBUG log"):
        boot_command.boot_command(target="RELEASE")
    with pytest.raises(OvmfgenError, match="unknown boot entry 'hvm'"):
        boot_command.boot_command(entry="hvm")
    with pytest.raises(OvmfgenError, match="unknown boot host 'kvm'"):
        boot_command.boot_command(on="kvm")


def test_boot_error_carries_the_tail():
    err = BootError("boot failed: pvh STALLED", "--- last lines ---\nBooting from ca00:003c")
    assert str(err) == "error: boot failed: pvh STALLED"
    assert err.tail().endswith("Booting from ca00:003c")
    assert isinstance(err, OvmfgenError)


def test_boot_command_wants_the_same_sec_stack_on_both_entries(tmp_path: Path, monkeypatch):
    from dataclasses import replace

    image = tmp_path / "ovmf.elf"
    image.write_bytes(b"x")
    logs = {"pvh": classify_log(boot_log("pvh-reached.log"), "pvh"), "reset": classify_log(boot_log("reset-reached.log"), "reset")}
    monkeypatch.setattr(boot_command, "boot_qemu", lambda path, entry, out_dir: logs[entry])
    assert [r.entry for r in boot_command.boot_command(image=image)] == ["pvh", "reset"]
    logs["reset"] = replace(logs["reset"], sec_stack=0x830000)
    with pytest.raises(OvmfgenError, match=r"SEC's stack differs between the entries \(pvh 0x820000, reset 0x830000\)"):
        boot_command.boot_command(image=image)
