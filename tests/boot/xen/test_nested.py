"""ovmfgen.boot.xen.nested: the outer QEMU, the run's caps, invoke boot --on xen's checks and outputs, the guest sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from helpers import QEMU_72_ABORT, pvh_elf_file, read_newc
from ovmfgen.boot.xen import debian, guests, nested
from ovmfgen.errors import OvmfgenError


def test_qemu_argv(tmp_path):
    argv = nested.qemu_argv(Path("/c/xen-4.17"), Path("/t/vmlinuz"), Path("/t/dom0.cpio"), tmp_path / "s.log")
    assert argv[0] == "qemu-system-x86_64"
    joined = " ".join(argv)
    for piece in ("-accel tcg", "-icount shift=0,sleep=off", "-cpu max,-smap,-smep,-rdtscp", "-smp 2",
                  "-m 3072", "-no-reboot",
                  "-nodefaults", "-display none", "-vga none", "-monitor none", "-kernel /c/xen-4.17"):
        assert piece in joined
    assert argv[argv.index("-serial") + 1] == f"file:{tmp_path / 's.log'}"
    append = argv[argv.index("-append") + 1]
    assert "dom0_mem=1536M,max:1536M" in append and "console=com1" in append and "noreboot" in append
    assert argv[argv.index("-initrd") + 1] == \
        "/t/vmlinuz console=hvc0 earlyprintk=xen rdinit=/init,/t/dom0.cpio"
    retry = nested.qemu_argv(Path("/x"), Path("/t/v"), Path("/t/i"), Path("/s"), icount_shift=1)
    assert retry[retry.index("-icount") + 1] == "shift=1,sleep=off"
    assert nested.QEMU_ICOUNT_SHIFTS[0] != nested.QEMU_ICOUNT_SHIFTS[1]


def test_qemu_argv_per_xen_release(tmp_path):
    # 4.20: the host's QEMU with icount too, 3 GiB with 1536 MiB for dom0
    r = debian.XEN_420
    argv = nested.qemu_argv(Path("/tmp/r/xen-4.20"), Path("/tmp/r/vmlinuz"), Path("/tmp/r/i.cpio"),
                            Path("/tmp/r/s.log"), release=r)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-icount") + 1] == "shift=0,sleep=off"
    assert argv[argv.index("-m") + 1] == "3072"
    assert "dom0_mem=1536M,max:1536M" in argv[argv.index("-append") + 1]
    assert argv[argv.index("-serial") + 1] == "file:/tmp/r/s.log"
    # 4.17's line is what it was
    assert nested.qemu_argv(Path("/x"), Path("/v"), Path("/i"), Path("/s")) == nested.qemu_argv(
        Path("/x"), Path("/v"), Path("/i"), Path("/s"), release=debian.XEN_417)
    assert nested.xen_cmdline() == nested.XEN_CMDLINE


def test_qemu_argv_gives_dom0_one_copy_on_write_drive_per_disk(tmp_path):
    drives = [("d0-pvh-os", Path("/c/os-disk.img")), ("d1-hvm-os", Path("/c/os-disk.img")),
              ("d2-pvh-disk", Path("/home/u/a,b.img"))]
    argv = nested.qemu_argv(Path("/x"), Path("/v"), Path("/i"), Path("/s"), drives=drives)
    got = [(argv[i + 1], argv[i + 3]) for i, a in enumerate(argv) if a == "-drive"]
    assert got == [
        ("if=none,id=disk0,format=raw,snapshot=on,file.driver=file,file.filename=/c/os-disk.img",
         "virtio-blk-pci,drive=disk0,serial=d0-pvh-os"),
        ("if=none,id=disk1,format=raw,snapshot=on,file.driver=file,file.filename=/c/os-disk.img",
         "virtio-blk-pci,drive=disk1,serial=d1-hvm-os"),
        # QEMU splits options at commas: one in a path is doubled.
        ("if=none,id=disk2,format=raw,snapshot=on,file.driver=file,file.filename=/home/u/a,,b.img",
         "virtio-blk-pci,drive=disk2,serial=d2-pvh-disk")]
    assert [argv[i + 2] for i, a in enumerate(argv) if a == "-drive"] == ["-device"] * 3
    assert "-drive" not in nested.qemu_argv(Path("/x"), Path("/v"), Path("/i"), Path("/s"))
    with pytest.raises(OvmfgenError, match="bad drive serial 'a,b'"):
        nested.qemu_argv(Path("/x"), Path("/v"), Path("/i"), Path("/s"), drives=[("a,b", Path("/d"))])


def test_a_run_gives_each_disk_guest_its_drive_and_dom0_no_disk(tmp_path, monkeypatch):
    """One nested run's QEMU: a drive per guest with a disk, snapshot=on, the serial dom0's test looks for; dom0's
    initramfs carries no disk."""
    from ovmfgen.boot.xen import cache, watch
    mods = tmp_path / "modules"
    mods.mkdir()
    for m in debian.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(m.encode())
    for f in ("xen", "vmlinuz", "rootfs.cpio"):
        (tmp_path / f).write_bytes(b"cached")
    assets = cache.XenAssets(tmp_path / "xen", tmp_path / "vmlinuz", mods, tmp_path / "rootfs.cpio",
                             debian.XenVersions("4.17", "4.17", "linux-image", "6.1"))
    image = pvh_elf_file(tmp_path)
    os_disk, user = tmp_path / "os.img", tmp_path / "user disk.img"
    os_disk.write_bytes(b"OS-DISK-BYTES" * 100)
    user.write_bytes(b"USER-DISK-BYTES" * 100)
    gs = [guests.XenGuest("pvh", "shell", image), guests.XenGuest("pvh", "os", image, disk=os_disk),
          guests.XenGuest("hvm", "os", image, disk=os_disk), guests.XenGuest("pvh", "disk", image, disk=user)]
    seen = {}

    def fake_run(argv, qemu_log, serial, timeout, stall_s, tick_s):
        seen["argv"] = argv
        seen["initrd"] = Path(argv[argv.index("-initrd") + 1].split(",", 1)[1]).read_bytes()
        return nested.QemuRun(0, 1.0, None, watch.RunWatch())

    monkeypatch.setattr(nested, "_run_qemu", fake_run)
    results, _ = nested._attempt(gs, tmp_path / "out", assets, 100.0, 256, 0, guests.GuestDeadline(), 60.0, "7.2")
    argv = seen["argv"]
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert drives == [f"if=none,id=disk{i},format=raw,snapshot=on,file.driver=file,file.filename={d}"
                      for i, d in enumerate((os_disk, os_disk, user))]
    assert devices == ["virtio-blk-pci,drive=disk0,serial=d0-pvh-os", "virtio-blk-pci,drive=disk1,serial=d1-hvm-os",
                       "virtio-blk-pci,drive=disk2,serial=d2-pvh-disk"]
    assert b"DISK-BYTES" not in seen["initrd"]
    assert b"run_guest ovmfgen-pvh-disk ovmfgen-pvh-disk 'OVMFGEN-OS-REACHED|Linux version [0-9]' os d2-pvh-disk\n" \
        in seen["initrd"]
    # dom0 said nothing: every guest never started, in one line.
    assert {r[0].detail for r in results} == {"never started: dom0 ended without reporting a result"}


def test_a_failure_dom0_explained_is_not_run_again(tmp_path, monkeypatch):
    """A guest dom0 could not start and said why (no drive for its disk) fails the same way in a second run:
    only the unexplained harness failure (a stall, a dead QEMU) gets its one retry."""
    from ovmfgen.boot.xen import cache, verdicts, watch
    image = pvh_elf_file(tmp_path)
    gs = [guests.XenGuest("pvh", "shell", image), guests.XenGuest("hvm", "shell", image),
          guests.XenGuest("pvh", "os", image, disk=image)]
    serial = (f"{verdicts.GUEST_START} ovmfgen-pvh-shell\n{verdicts.EVENT} create 7.0\n{verdicts.EVENT} shell 9.0\n"
              f"{verdicts.RESULT} shell\n{verdicts.GUEST_STOP} ovmfgen-pvh-shell\n"
              f"{verdicts.GUEST_START} ovmfgen-pvh-os\n{verdicts.DOM0_FAILURE} no block device with serial x\n"
              f"{verdicts.RESULT} dom0-failed\n{verdicts.GUEST_STOP} ovmfgen-pvh-os\n"
              f"{verdicts.GUEST_START} ovmfgen-hvm-shell\n{verdicts.EVENT} create 12.0\n")
    runs = []

    def fake_attempt(run_guests, out_dir, *rest):
        runs.append([g.name for g in run_guests])
        results = [[verdicts.classify_guest(serial, g.name, None)] for g in run_guests]
        return results, nested.QemuRun(None, 1.0, None, watch.RunWatch())

    monkeypatch.setattr(nested, "prepare_xen_cache", lambda release: cache.XenAssets(
        tmp_path, tmp_path, tmp_path, tmp_path, debian.XenVersions("4.17", "4.17", "linux-image", "6.1")))
    monkeypatch.setattr(nested, "qemu_version", lambda: "7.2.22")
    monkeypatch.setattr(nested, "_attempt", fake_attempt)
    out = {o.guest.name: o.result for o in nested.boot_xen_guests(gs, tmp_path / "out")}
    assert runs == [["ovmfgen-pvh-shell", "ovmfgen-hvm-shell", "ovmfgen-pvh-os"], ["ovmfgen-hvm-shell"]]
    assert out["ovmfgen-pvh-os"].explained and out["ovmfgen-pvh-os"].attempts == 1
    assert out["ovmfgen-pvh-os"].detail == "dom0: no block device with serial x"
    assert not out["ovmfgen-hvm-shell"].explained and out["ovmfgen-hvm-shell"].attempts == 2
    assert out["ovmfgen-pvh-shell"].verdict is verdicts.Verdict.SHELL_REACHED


def test_a_guest_set_runs_again_only_while_qemu_dies_in_each_retry(tmp_path, monkeypatch):
    """QEMU 7.2's abort (QEMU_ICOUNT_SHIFTS' comment) can hit a retry as well: another run then, for what is
    left, up to QEMU_ATTEMPTS runs; a retry that stalled (QEMU killed by the host) is not run again."""
    from ovmfgen.boot.xen import cache, verdicts, watch
    image = pvh_elf_file(tmp_path)
    gs = [guests.XenGuest("pvh", "shell", image), guests.XenGuest("hvm", "shell", image)]
    done = (f"{verdicts.GUEST_START} ovmfgen-pvh-shell\n{verdicts.EVENT} create 7.0\n{verdicts.EVENT} shell 9.0\n"
            f"{verdicts.RESULT} shell\n{verdicts.GUEST_STOP} ovmfgen-pvh-shell\n")
    cut = f"{verdicts.GUEST_START} ovmfgen-hvm-shell\n{verdicts.EVENT} create 12.0\n"

    def run_with(codes):
        runs = []

        def fake_attempt(run_guests, out_dir, *rest):
            code = codes[len(runs)]
            runs.append([g.name for g in run_guests])
            (out_dir / "xen-serial.log").write_text("x")
            serial = done + cut if code != 0 else done + cut.replace("create 12.0", "create 12.0\n"
                f"{verdicts.EVENT} shell 14.0\n{verdicts.RESULT} shell\n{verdicts.GUEST_STOP} ovmfgen-hvm-shell")
            return [[verdicts.classify_guest(serial, g.name, code)] for g in run_guests], \
                nested.QemuRun(code, 1.0, None, watch.RunWatch())

        monkeypatch.setattr(nested, "_attempt", fake_attempt)
        out = {o.guest.name: o.result for o in nested.boot_xen_guests(gs, tmp_path / "out")}
        return runs, out

    monkeypatch.setattr(nested, "prepare_xen_cache", lambda release: cache.XenAssets(
        tmp_path, tmp_path, tmp_path, tmp_path, debian.XenVersions("4.17", "4.17", "linux-image", "6.1")))
    monkeypatch.setattr(nested, "qemu_version", lambda: "7.2.22")
    runs, out = run_with([-6, -6, 0])
    assert runs == [["ovmfgen-pvh-shell", "ovmfgen-hvm-shell"], ["ovmfgen-hvm-shell"], ["ovmfgen-hvm-shell"]]
    assert out["ovmfgen-hvm-shell"].verdict is verdicts.Verdict.SHELL_REACHED and out["ovmfgen-hvm-shell"].attempts == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.attempt*.log")) == [
        "xen-serial.attempt1.log", "xen-serial.attempt2.log"]
    runs, out = run_with([-6, -6, -6, 0])
    assert len(runs) == 4 and out["ovmfgen-hvm-shell"].verdict is verdicts.Verdict.SHELL_REACHED
    runs, out = run_with([-6, -6, -6, -6, 0])
    assert len(runs) == nested.QEMU_ATTEMPTS == 4
    assert out["ovmfgen-hvm-shell"].verdict is verdicts.Verdict.HARNESS_FAILURE
    runs, out = run_with([None, None, 0])    # stalls: the host killed QEMU
    assert len(runs) == 2 and out["ovmfgen-hvm-shell"].attempts == 2


def test_qemu_message_is_qemus_own_last_error_line():
    assert nested.qemu_message(QEMU_72_ABORT).startswith("Bail out! ERROR:../accel/tcg/tcg-accel-ops.c:83:")
    assert nested.qemu_message("qemu: Bad icount read\n\n") == "qemu: Bad icount read"
    assert nested.qemu_message("just a line\n") == "just a line"
    assert nested.qemu_message("") == ""


def test_wall_cap_is_a_safety_net_not_the_guest_deadline():
    # dom0's deadline is in its own seconds; the host's cap only grows with the guests it must allow for.
    assert nested.wall_cap_s(1) < nested.wall_cap_s(3) < nested.wall_cap_s(5)
    d = guests.GuestDeadline()
    # At 25 wall s per dom0 s (measured under load 12) dom0's boot (~40 s) and a guest that takes its
    # whole idle limit still fit in the cap of a one-guest run.
    assert (40 + d.idle_s) * 25 <= nested.wall_cap_s(1)
    with pytest.raises(OvmfgenError, match="bad guest deadline"):
        guests.GuestDeadline(idle_s=10, cap_s=5)


def test_qemu_argv_rejects_module_paths_qemu_would_split():
    with pytest.raises(OvmfgenError):
        nested.qemu_argv(Path("/x"), Path("/a b/vmlinuz"), Path("/t/i"), Path("/s"))
    with pytest.raises(OvmfgenError):
        nested.qemu_argv(Path("/x"), Path("/t/vmlinuz"), Path("/t/a,b"), Path("/s"))


def test_boot_xen_command_rejects_an_unknown_mode_before_anything_else(tmp_path):
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode 'both': expected all, core, hvm, os, persist, pvh, sb, smp$"):
        nested.boot_xen_command(tmp_path / "missing.elf", mode="both")


def test_boot_xen_command_rejects_an_unknown_xen_version_before_anything_else(tmp_path):
    with pytest.raises(OvmfgenError, match="^error: unknown Xen version '4.18': expected 4.17 or 4.20$"):
        nested.boot_xen_command(tmp_path / "missing.elf", xen="4.18")


def test_guests_of_two_trees_share_one_run_apart(tmp_path):
    """The newest tree's firmware (variant "202605") rides in the same nested run as the default tree's:
    its own name, firmware file, xl config and log files; two guests with one name are refused."""
    mods = tmp_path / "modules"
    mods.mkdir()
    for m in debian.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(m.encode())
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    old, new = pvh_elf_file(old_dir), pvh_elf_file(new_dir)
    new.write_bytes(new.read_bytes() + b"202605")
    both = [guests.XenGuest("pvh", "shell", old), guests.XenGuest("pvh", "shell", new, variant="202605"),
            guests.XenGuest("hvm", "shell", new, variant="202605")]
    assert [g.name for g in both] == ["ovmfgen-pvh-shell", "ovmfgen-pvh-shell-202605", "ovmfgen-hvm-shell-202605"]
    got = read_newc(guests.overlay_cpio(both, mods, guests.GuestDeadline(cap_s=200)))
    assert got["ovmfgen/ovmf-pvh-shell.elf"][1] == old.read_bytes()
    assert got["ovmfgen/ovmf-pvh-shell-202605.elf"][1] == new.read_bytes()
    assert b'kernel = "/ovmfgen/ovmf-pvh-shell-202605.elf"' in got["ovmfgen/ovmfgen-pvh-shell-202605.cfg"][1]
    assert b'bios_path_override = "/ovmfgen/ovmf-hvm-shell-202605.elf"' in got["ovmfgen/ovmfgen-hvm-shell-202605.cfg"][1]
    script = got["ovmfgen/test.sh"][1].decode()
    assert "run_guest ovmfgen-hvm-shell-202605 ovmfgen-hvm-shell-202605 'Shell>' shell\n" in script
    assert nested.guest_log_names(both[1]) == ("xen-pvh-shell-202605.log", "xen-pvh-shell-202605.console.log")
    assert nested.guest_log_names(both[0]) == ("xen-pvh-shell.log", "xen-pvh-shell.console.log")
    with pytest.raises(OvmfgenError, match="letters and digits"):
        guests.XenGuest("pvh", "shell", new, variant="edk2-stable202605")
    with pytest.raises(OvmfgenError, match="two guests of one run have the same name"):
        nested.boot_xen_guests([both[0], guests.XenGuest("pvh", "shell", new)], tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--on", "xen", "--xen", "4.18"], "error: unknown Xen version '4.18': expected 4.17 or 4.20"),
    (["--xen", "4.20"], "error: --xen chooses the Xen version: use it with --on xen"),
    (["--vcpus", "4"], "error: --vcpus gives Xen guests vCPUs: use it with --on xen"),
    (["--on", "xen", "--vcpus", "129"], "error: --vcpus takes a whole number from 1 to 128 (Xen's most for a PVH or "
                                        "HVM guest), not '129'"),
])
def test_invoke_boot_bad_xen_argument_is_one_line(args, message):
    """`invoke boot` itself: exit 1, the one line on stderr, no traceback (before any cache or image work)."""
    root = REPO
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "boot", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [message], proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--mode", "kvm"], "error: unknown Xen boot mode 'kvm': expected all, core, hvm, os, persist, pvh, sb, smp"),
    (["--disk", "missing.img"], "error: missing.img: no such disk image"),
    (["--disk", "notes.txt"], "error: notes.txt: not a disk image (no MBR/GPT boot signature 0x55AA at byte 510)"),
    (["--disk", "good.img", "--mode", "os"], "error: --disk boots your disk in --mode all, hvm, pvh, not 'os'"),
])
def test_invoke_boot_on_xen_bad_arguments_give_one_line(tmp_path, args, message):
    """Through the CLI, before any build lookup or Xen cache work: one line, exit 1, no traceback."""
    (tmp_path / "notes.txt").write_text("not a disk\n")
    (tmp_path / "good.img").write_bytes(b"\0" * 510 + b"\x55\xaa")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "boot", "--on", "xen", *args], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc
    assert proc.stderr.strip().splitlines()[-1] == message and "Traceback" not in proc.stderr
    assert set(os.listdir(tmp_path)) == {"notes.txt", "good.img"}  # nothing written


@pytest.mark.skipif(shutil.which("mcopy") is None or shutil.which("mkfs.fat") is None,
                    reason="mtools and dosfstools (invoke setup) not installed")
def test_with_disks_gives_each_payload_its_disk(tmp_path, monkeypatch):
    """os and smp: the cached OS disk (here a stand-in: making the real one downloads Debian packages); persist:
    a fresh persistence disk per guest; shell and ud2: none; disk: the user's."""
    os_disk = tmp_path / "os.img"
    monkeypatch.setattr(nested, "prepare_os_disk", lambda: os_disk)
    image = tmp_path / "ovmf.elf"
    got = nested.with_disks([guests.XenGuest("pvh", "shell", image), guests.XenGuest("hvm", "os", image),
                             guests.XenGuest("pvh", "os", image, variant="4M"),
                             guests.XenGuest("pvh", "persist", image), guests.XenGuest("pvh", "persist", image,
                                                                                       variant="4M"),
                             guests.XenGuest("pvh", "ud2", image)], tmp_path / "out")
    assert [g.disk for g in got[:3]] == [None, os_disk, os_disk]   # one OS disk for PVH and HVM guests
    assert got[5].disk is None
    assert [g.disk.name for g in got[3:5]] == ["xen-pvh-persist-disk.img", "xen-pvh-persist-4M-disk.img"]
    assert all(g.disk.stat().st_size > 0 for g in got[3:5])
    assert [g.name for g in got] == [g.name for g in nested.with_disks(got, tmp_path / "out")]
    with pytest.raises(OvmfgenError, match="needs a disk image"):
        nested.with_disks([guests.XenGuest("pvh", "disk", image)], tmp_path / "out")
    assert nested.with_disks([guests.XenGuest("pvh", "disk", image)], tmp_path, disk=os_disk)[0].disk == os_disk
    assert nested.with_disks([guests.XenGuest("hvm", "smp", image, vcpus=128)], tmp_path)[0].disk == os_disk


def test_each_xen_version_keeps_its_own_outputs_beside_the_firmware(tmp_path):
    """`invoke boot --on xen --xen 4.17` and `--xen 4.20` of one build at once write apart (they used to share
    xen-serial.log and xen-boot.json, and one run's log was renamed under the other)."""
    from ovmfgen.boot.xen.debian import XEN_RELEASES

    image = tmp_path / "dist" / "xen-pvh" / "DEBUG" / "ovmf.elf"
    dirs = {series: nested.xen_output_dir(image, release) for series, release in XEN_RELEASES.items()}
    assert dirs == {"4.17": image.parent / "xen-4.17", "4.20": image.parent / "xen-4.20"}
