"""ovmfgen.boot.xen.guests: the xl configs, dom0's scripts (run for real in sh with a fake xl), the initramfs overlay,
the guests' names, modes and expected verdicts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import pvh_elf_file, read_newc
from ovmfgen.boot.xen import debian, guests, nested, persist, verdicts
from ovmfgen.errors import OvmfgenError
from ovmfgen.boot.xen import Verdict


# --- generated text ------------------------------------------------------------------------------


def test_xl_config_text():
    assert guests.xl_config("/ovmfgen/ovmf.elf") == (
        'name = "ovmfgen-pvh"\n'
        'type = "pvh"\n'
        'kernel = "/ovmfgen/ovmf.elf"\n'
        "memory = 256\n"
        "vcpus = 1\n"
        'cpus = "1"\n'
        'on_poweroff = "destroy"\n'
        'on_reboot = "destroy"\n'
        'on_crash = "preserve"\n'
        'timer_mode = "no_missed_ticks_pending"\n'
    )
    assert "memory = 32\n" in guests.xl_config("/k", memory_mib=32)
    # dom0 sits on pCPU 0, the guest on pCPU 1
    assert "dom0_vcpus_pin" in nested.XEN_CMDLINE and "dom0_max_vcpus=1" in nested.XEN_CMDLINE


def test_dom0_init_runs_the_releases_tools():
    assert "export PATH=/usr/lib/xen-4.20/bin:" in guests.dom0_init_script("4.20")
    assert "export PATH=/usr/lib/xen-4.17/bin:" in guests.dom0_init_script()


def test_dom0_scripts_are_valid_sh(tmp_path):
    for name, text in (("init", guests.dom0_init_script()),
                       ("test.sh", guests.dom0_test_script(guests.GuestDeadline()))):
        p = tmp_path / name
        p.write_text(text)
        subprocess.run(["sh", "-n", str(p)], check=True)
    init = guests.dom0_init_script()
    assert init.index("insmod /ovmfgen/modules/xen-privcmd.ko") < init.index("insmod /ovmfgen/modules/xenfs.ko")
    assert "mount -t xenfs xenfs /proc/xen" in init
    assert "xenconsoled --log=all --log-dir=/var/log/xen/console" in init
    text = guests.dom0_test_script(guests.GuestDeadline(idle_s=45, cap_s=120, tick_s=3))
    # The deadlines are parameters in front of dom0/test.sh (the wait itself is run for real below).
    assert text.startswith("#!/bin/sh\n") and "\nOV_IDLE_S=45\nOV_CAP_S=120\nOV_TICK_S=3\n" in text
    assert text.count(guests.DOM0_TEST.read_text()) == 1
    two = guests.dom0_test_script(guests.GuestDeadline(), ["a", "b"])
    assert two.endswith("run_guest a a 'Shell>' shell\nrun_guest b b 'Shell>' shell\n")
    assert 'CFG=$CFG_DIR/$NAME.cfg' in two and 'xl create "$CFG"' in two
    # A driver that does not load is dom0's failure, said on the console in the classifier's words.
    assert f"insmod /ovmfgen/modules/virtio_blk.ko || echo '{verdicts.DOM0_FAILURE} insmod virtio_blk failed'" in init
    assert init.index("virtio_ring.ko") < init.index("virtio.ko") < init.index("virtio_pci.ko") \
        < init.index("virtio_blk.ko")
    assert "\nOV_GUEST_START=OVMFGEN-GUEST-START\n" in two and 'echo "${OV_GUEST_START} $LABEL"' in two


def test_dom0_runs_each_payload_waits_for_its_own_sign(tmp_path):
    disk = tmp_path / "d.img"
    g = [guests.XenGuest("pvh", "os", tmp_path, disk=disk), guests.XenGuest("hvm", "persist", tmp_path, disk=disk),
         guests.XenGuest("pvh", "disk", tmp_path, disk=disk)]
    assert guests.guest_runs(g) == [
        ("ovmfgen-pvh-os", "ovmfgen-pvh-os", verdicts.OS_MARKER, "os", "d0-pvh-os"),
        ("ovmfgen-hvm-persist", "ovmfgen-hvm-persist", persist.DONE, "persist", "d1-hvm-persist"),
        ("ovmfgen-hvm-persist", "ovmfgen-hvm-persist-restart", persist.DONE, "persist", "d1-hvm-persist"),
        ("ovmfgen-pvh-disk", "ovmfgen-pvh-disk", f"{verdicts.OS_MARKER}|Linux version [0-9]", "os", "d2-pvh-disk"),
    ]
    script = guests.dom0_test_script(guests.GuestDeadline(), runs=guests.guest_runs(g))
    p = tmp_path / "t.sh"
    p.write_text(script)
    subprocess.run(["sh", "-n", str(p)], check=True)
    # A guest that should boot an OS but shows the Shell stops at once, as "shell".
    assert '[ "$EVENT" != shell ] && grep -q \'Shell>\'' in script
    # The restart keeps the disk: the same domain config and drive, a fresh console log.
    assert script.count(f"run_guest ovmfgen-hvm-persist ") == 2 and 'rm -f "$LOG"' in script
    assert script.count(f"'{persist.DONE}' persist d1-hvm-persist\n") == 2
    assert script.endswith(f"run_guest ovmfgen-pvh-disk ovmfgen-pvh-disk '{verdicts.OS_MARKER}|Linux version [0-9]' "
                           "os d2-pvh-disk\n")


def test_each_guest_with_a_disk_has_a_drive_of_its_own_named_by_its_serial(tmp_path):
    disk = tmp_path / "d.img"
    g = [guests.XenGuest("pvh", "shell", tmp_path), guests.XenGuest("pvh", "sb-signed", tmp_path, disk=disk),
         guests.XenGuest("hvm", "sb-signed", tmp_path, disk=disk),
         guests.XenGuest("hvm", "sb-refused", tmp_path, disk=disk, variant="4M128cpus")]
    # Two guests booting the same file still get a drive each (their own copy-on-write view of it); a virtio-blk
    # serial holds 20 bytes: the index in front keeps cut names apart.
    assert guests.disk_drives(g) == [("ovmfgen-pvh-sb-signed", "d0-pvh-sb-signed"),
                                     ("ovmfgen-hvm-sb-signed", "d1-hvm-sb-signed"),
                                     ("ovmfgen-hvm-sb-refused-4M128cpus", "d2-hvm-sb-refused-4M")]
    many = [guests.XenGuest("pvh", "os", tmp_path, disk=disk, variant=f"v{i}") for i in range(guests.MAX_DISKS + 1)]
    assert len(guests.disk_drives(many[:-1])) == guests.MAX_DISKS
    with pytest.raises(OvmfgenError, match=f"25 guests with disks in one run: at most {guests.MAX_DISKS}"):
        guests.disk_drives(many)


_FAKE_XENSTORE = """#!/bin/sh
# xenstore-read/-write for the hotplug script's test: keys are files under $FAKE/xs.
mkdir -p "$FAKE/xs"
case "${0##*/}" in
  xenstore-read) cat "$FAKE/xs/$(echo "$1" | tr / _)" 2>/dev/null || exit 1 ;;
  xenstore-write) while [ $# -ge 2 ]; do printf '%s' "$2" > "$FAKE/xs/$(echo "$1" | tr / _)"; shift 2; done ;;
esac
"""


def _hotplug(tmp_path: Path, target: str, losetup: str = "echo /dev/loop3") -> tuple[int, dict[str, str], str]:
    """Run the hotplug script's ``add`` on ``target`` (params) with fake xenstore and losetup: (its exit status,
    what it wrote to xenstore, what it left in BLOCK_ERROR)."""
    fake, bin_dir = tmp_path / "fake", tmp_path / "bin"
    fake.mkdir()
    bin_dir.mkdir()
    for name in ("xenstore-read", "xenstore-write"):
        (bin_dir / name).write_text(_FAKE_XENSTORE)
    (bin_dir / "losetup").write_text(f"#!/bin/sh\n{losetup}\n")
    (bin_dir / "stat").write_text("#!/bin/sh\necho 7:3\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (fake / "xs").mkdir()
    (fake / "xs" / "_be_params").write_text(target)
    err = tmp_path / "block.err"
    script = tmp_path / "block"
    script.write_text(guests.block_script().replace(guests.BLOCK_ERROR, str(err)))
    rc = subprocess.run(["sh", str(script), "add"], env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE": str(fake),
                                                         "XENBUS_PATH": "/be"}, capture_output=True).returncode
    xs = {p.name.removeprefix("_be_"): p.read_text() for p in (fake / "xs").iterdir()}
    return rc, xs, err.read_text().strip() if err.exists() else ""


def test_block_hotplug_script_gives_blkback_the_drive_or_a_loop_device_or_says_why_not(tmp_path):
    p = tmp_path / "block"
    p.write_text(guests.block_script())
    subprocess.run(["sh", "-n", str(p)], check=True)
    # A block device (the guest's drive) is given as it is.
    (tmp_path / "a").mkdir()
    rc, xs, err = _hotplug(tmp_path / "a", "/dev/null")  # a character device: neither block device nor file
    assert rc == 1 and err == "/dev/null is neither a block device nor a file" and xs["hotplug-status"] == "error"
    assert xs["hotplug-error"] == err
    block = next((str(d) for d in Path("/dev").iterdir() if d.is_block_device()), None)
    if block:
        (tmp_path / "b").mkdir()
        rc, xs, err = _hotplug(tmp_path / "b", block)
        assert (rc, err, xs["physical-device-path"], xs["hotplug-status"]) == (0, "", block, "connected")
    # A file gets a loop device; a loop device that cannot be had is said.
    img = tmp_path / "d.img"
    img.write_bytes(b"\0" * 512)
    (tmp_path / "c").mkdir()
    rc, xs, err = _hotplug(tmp_path / "c", str(img))
    assert (rc, xs["physical-device"], xs["physical-device-path"], xs["hotplug-status"]) == (0, "7:3", "/dev/loop3",
                                                                                           "connected")
    (tmp_path / "d").mkdir()
    rc, xs, err = _hotplug(tmp_path / "d", str(img), "echo 'losetup: cannot find an unused loop device' >&2; exit 1")
    assert rc == 1 and err == f"losetup {img}: losetup: cannot find an unused loop device"
    cfg = guests.xl_config("/ovmfgen/f.elf", "g", 256, "pvh", guests.DISK_PLACEHOLDER)
    # xl parses the disk spec up to target=, which takes the rest: it must come last.
    assert cfg.endswith(f'disk = [ "format=raw,vdev=xvda,access=rw,script={guests.BLOCK_SCRIPT},'
                        f'target={guests.DISK_PLACEHOLDER}" ]\n')
    assert "disk =" not in guests.xl_config("/ovmfgen/f.elf", "g", 256, "pvh")


def test_newc_archive_round_trip_and_cpio_reads_it(tmp_path):
    data = guests.newc_archive([("d", 0o040755, b""), ("d/f", 0o100644, b"hello"), ("/x", 0o100755, b"12345678")])
    assert data == guests.newc_archive([("d", 0o040755, b""), ("d/f", 0o100644, b"hello"),
                                     ("/x", 0o100755, b"12345678")])  # deterministic
    got = read_newc(data)
    assert got == {"d": (0o040755, b""), "d/f": (0o100644, b"hello"), "x": (0o100755, b"12345678")}
    if subprocess.run(["which", "cpio"], capture_output=True).returncode == 0:
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True)
        assert listing.stdout.decode().split() == ["d", "d/f", "x"]


def test_overlay_cpio_carries_init_modules_each_guests_firmware_and_config(tmp_path):
    mods = tmp_path / "modules"
    mods.mkdir()
    for m in debian.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(m.encode())
    image = pvh_elf_file(tmp_path)
    os_disk, p1, p2 = tmp_path / "os.img", tmp_path / "p1.img", tmp_path / "p2.img"
    for d in (os_disk, p1, p2):
        d.write_bytes(d.name.encode())
    disks = {"os": os_disk, "persist": p1}
    guest_set = [guests.XenGuest(m, p, image, disk=disks.get(p) if (m, p) != ("hvm", "persist") else p2)
                 for m, p in guests.check_mode("all")]
    guest_set.append(guests.XenGuest("pvh", "shell", image, variant="4M"))
    got = read_newc(guests.overlay_cpio(guest_set, mods, guests.GuestDeadline(cap_s=200)))
    assert got["init"][0] == 0o100755 and got["init"][1].startswith(b"#!/bin/sh")
    assert got["ovmfgen/ovmf-pvh-shell.elf"][1] == image.read_bytes()
    assert got["ovmfgen/ovmf-hvm-shell.elf"][1] == image.read_bytes()
    ud2 = got["ovmfgen/ovmf-pvh-ud2.elf"][1]
    at = guests.pvh_entry_offset(image.read_bytes())
    assert ud2[at:at + 2] == b"\x0f\x0b" and ud2[:at] == image.read_bytes()[:at]
    assert got["ovmfgen/modules/xenfs.ko"][1] == b"xenfs"
    assert b'kernel = "/ovmfgen/ovmf-pvh-shell.elf"' in got["ovmfgen/ovmfgen-pvh-shell.cfg"][1]
    assert b'bios_path_override = "/ovmfgen/ovmf-hvm-shell.elf"' in got["ovmfgen/ovmfgen-hvm-shell.cfg"][1]
    script = got["ovmfgen/test.sh"][1].decode()
    assert "\nOV_CAP_S=200\n" in script
    assert script.index("run_guest ovmfgen-pvh-shell ") < script.index("run_guest ovmfgen-pvh-os ") \
        < script.index("run_guest ovmfgen-hvm-shell ") < script.index("run_guest ovmfgen-hvm-os ") \
        < script.index("run_guest ovmfgen-pvh-ud2 ") < script.index("run_guest ovmfgen-pvh-shell-4M ")
    assert got["ovmfgen/ovmf-pvh-shell-4M.elf"][1] == image.read_bytes()
    assert b'kernel = "/ovmfgen/ovmf-pvh-shell-4M.elf"' in got["ovmfgen/ovmfgen-pvh-shell-4M.cfg"][1]
    # No disk is in dom0's RAM: each guest's disk is its own drive of the outer QEMU, which dom0's test finds by
    # its serial and writes into the guest's config.
    assert not [n for n in got if "disk" in n or n.endswith(".img")]
    assert not any(d.name.encode() in body for _, body in got.values() for d in (os_disk, p1, p2))
    assert got["ovmfgen/block-loop"][0] == 0o100755
    for name in ("hvm-os", "pvh-os", "pvh-persist", "hvm-persist"):
        assert f"target={guests.DISK_PLACEHOLDER}".encode() in got[f"ovmfgen/ovmfgen-{name}.cfg"][1]
    assert b"disk =" not in got["ovmfgen/ovmfgen-pvh-shell.cfg"][1]
    assert "run_guest ovmfgen-pvh-os ovmfgen-pvh-os 'OVMFGEN-OS-REACHED' os d0-pvh-os\n" in script
    assert script.count("persist d2-pvh-persist\n") == 2 and script.count("persist d3-hvm-persist\n") == 2
    assert "run_guest ovmfgen-pvh-shell ovmfgen-pvh-shell 'Shell>' shell\n" in script


def test_guest_names_modes_and_expected_verdicts(tmp_path):
    g = guests.XenGuest("hvm", "shell", tmp_path / "x.elf")
    assert g.name == "ovmfgen-hvm-shell" and g.expected is Verdict.SHELL_REACHED
    assert guests.XenGuest("pvh", "ud2", tmp_path).expected is Verdict.GUEST_CRASHED
    assert guests.check_mode("pvh") == (("pvh", "shell"),)
    assert [k for k in guests.check_mode("all")] == [
        ("pvh", "shell"), ("pvh", "os"), ("hvm", "shell"), ("hvm", "os"), ("pvh", "persist"), ("hvm", "persist"),
        ("pvh", "ud2")]
    # The five-guest set, which `invoke bench --xen` times: "all" without the persistence guests.
    assert guests.check_mode("core") == tuple(k for k in guests.check_mode("all") if k[1] != "persist") == (
        ("pvh", "shell"), ("pvh", "os"), ("hvm", "shell"), ("hvm", "os"), ("pvh", "ud2"))
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode 'kvm': expected all, core, hvm, os, persist, pvh"):
        guests.check_mode("kvm")
    four = guests.XenGuest("pvh", "shell", tmp_path / "4m.elf", variant="4M")
    assert four.name == "ovmfgen-pvh-shell-4M" and four.expected is Verdict.SHELL_REACHED
    assert nested.guest_log_names(four) == ("xen-pvh-shell-4M.log", "xen-pvh-shell-4M.console.log")
    assert nested.guest_log_names(g) == ("xen-hvm-shell.log", "xen-hvm-shell.console.log")
    with pytest.raises(OvmfgenError, match="letters and digits"):
        guests.XenGuest("pvh", "shell", tmp_path, variant="4 M")


def test_one_run_refuses_two_guests_of_the_same_name(tmp_path):
    image = pvh_elf_file(tmp_path)
    with pytest.raises(OvmfgenError, match="same name"):
        nested.boot_xen_guests([guests.XenGuest("pvh", "shell", image)] * 2, tmp_path)
    assert guests.XenGuest("pvh", "os", tmp_path).expected is Verdict.OS_REACHED
    assert guests.XenGuest("hvm", "disk", tmp_path).expected is Verdict.OS_REACHED
    assert guests.XenGuest("hvm", "persist", tmp_path).expected is Verdict.SHELL_REACHED
    assert guests.XenGuest("hvm", "persist", tmp_path).runs == ("ovmfgen-hvm-persist", "ovmfgen-hvm-persist-restart")


def test_disk_requests_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert nested.check_disk_request("all", None) == guests.check_mode("all")
    good = tmp_path / "g.img"
    good.write_bytes(b"\0" * 510 + b"\x55\xaa")
    assert nested.check_disk_request("all", good) == (("pvh", "disk"), ("hvm", "disk"))
    assert nested.check_disk_request("hvm", good) == (("hvm", "disk"),)
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode 'kvm'"):
        nested.check_disk_request("kvm", good)
    with pytest.raises(OvmfgenError, match="--disk boots your disk in --mode all, hvm, pvh, not 'persist'"):
        nested.check_disk_request("persist", good)
    with pytest.raises(OvmfgenError, match="^error: missing.img: no such disk image$"):
        nested.check_disk_request("pvh", "missing.img")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(OvmfgenError, match="^error: notes.txt: not a disk image"):
        nested.check_disk_request("pvh", "notes.txt")


def test_hvm_xl_config_boots_the_same_blob_through_hvmloader():
    cfg = guests.xl_config("/ovmfgen/f.elf", "g", 256, "hvm")
    assert 'type = "hvm"\nbios = "ovmf"\nbios_path_override = "/ovmfgen/f.elf"\n' in cfg
    assert f'device_model_override = "{guests.DEVICE_MODEL}"' in cfg and 'serial = "pty"' in cfg
    assert "kernel =" not in cfg and 'timer_mode = "no_missed_ticks_pending"' in cfg


def test_pvh_entry_offset_rejects_what_is_not_a_pvh_elf(tmp_path):
    with pytest.raises(OvmfgenError, match="not an ELF"):
        guests.pvh_entry_offset(b"MZ" + b"\0" * 100)
    data = bytearray(pvh_elf_file(tmp_path).read_bytes())
    data[data.index(b"Xen\0") + 4 - 16 + 8] = 99  # the note's type: no longer PHYS32_ENTRY
    with pytest.raises(OvmfgenError, match="no XEN_ELFNOTE_PHYS32_ENTRY"):
        guests.pvh_entry_offset(bytes(data))


# --- dom0's wait for a guest, run for real in sh with a fake xl and a fake clock ------------------

_FAKE_XL = """#!/bin/sh
# xl for the test: the domain's state and Xen's ring come from files the scenario writes.
case "$1" in
  create) echo "Parsing config from $2"; exit 0 ;;
  list) echo "Name ID Mem VCPUs State Time(s)"; [ -f "$FAKE/state" ] && echo "$NAME_X 1 256 1 $(cat "$FAKE/state") 1.0" ;;
  dmesg) [ "$2" = -c ] || cat "$FAKE/dmesg" 2>/dev/null ;;
  domid) echo 7 ;;
esac
exit 0
"""


# xenstore-read for the test: the guest's console tty is a file the key goes into.
_FAKE_XENSTORE_READ = """#!/bin/sh
[ "$1" = /local/domain/7/console/tty ] && echo "$FAKE/tty"
"""


# `sleep 1` advances dom0's clock by one second and lets the scenario act at that second.
_FAKE_SLEEP = """#!/bin/sh
t=$(( $(cut -d. -f1 "$OVMFGEN_UPTIME") + 1 ))
echo "$t.00 0.00" > "$OVMFGEN_UPTIME"
sh "$FAKE/scenario" "$t"
"""


def _wait_for_guest(tmp_path: Path, scenario: str, deadline: guests.GuestDeadline,
                    runs: list[tuple[str, ...]] | None = None, drives: dict[str, str] | None = None,
                    xl: str = _FAKE_XL) -> tuple[str, int]:
    """Run dom0's test script on one guest (``runs``: dom0_test_script's; default: "g" to the Shell);
    (its output, dom0's clock at the end). ``drives``: dom0's block devices, name -> serial (a fake
    /sys/block); each run's config is ``$tmp_path/cfg/NAME.cfg`` (the guest's xl config with its disk)."""
    fake, bin_dir, console, sys_block, cfg = (tmp_path / n for n in ("fake", "bin", "console", "sys-block", "cfg"))
    for d in (fake, bin_dir, console, sys_block, cfg):
        d.mkdir()
    for dev, serial in (drives or {}).items():
        (sys_block / dev).mkdir()
        (sys_block / dev / "serial").write_text(serial)
        (sys_block / dev / "size").write_text("6291456\n")
    (sys_block / "loop0").mkdir()
    for run in runs or []:
        (cfg / f"{run[0]}.cfg").write_text(guests.xl_config("/k", run[0], disk=guests.DISK_PLACEHOLDER))
    (bin_dir / "xl").write_text(xl)
    (bin_dir / "sleep").write_text(_FAKE_SLEEP)
    (bin_dir / "xenstore-read").write_text(_FAKE_XENSTORE_READ)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (fake / "scenario").write_text(scenario)
    (fake / "state").write_text("-b----")
    uptime = fake / "uptime"
    uptime.write_text("10.00 0.00\n")
    script = tmp_path / "test.sh"
    script.write_text(guests.dom0_test_script(deadline, ["g"], runs=runs))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE": str(fake), "NAME_X": "g", "OVMFGEN_UPTIME": str(uptime),
           "OVMFGEN_CONSOLE_DIR": str(console), "TMPDIR": str(tmp_path), "OVMFGEN_CFG_DIR": str(cfg),
           "OVMFGEN_SYS_BLOCK": str(sys_block), "OVMFGEN_BLOCK_ERROR": str(fake / "block.err")}
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout, int(uptime.read_text().split(".")[0])


# The scenario gets dom0's second; $FAKE/... and the console log are its to write.
_TALKS_UNTIL = """t=$1
if [ "$t" -le {until} ]; then echo "(d1) line $t" >> "$FAKE/dmesg"; fi
"""


def test_a_silent_guest_times_out_after_the_idle_limit(tmp_path):
    out, clock = _wait_for_guest(tmp_path, "", guests.GuestDeadline(idle_s=8, cap_s=100, tick_s=2))
    assert "OVMFGEN-RESULT timeout" in out
    assert "OVMFGEN-DEADLINE no new guest output for 8 s" in out and "host scale 1" in out
    assert 18 <= clock <= 20  # created at 10, silent from the start
    r = verdicts.classify_xen_run(out, "", 0)
    assert r.verdict is Verdict.TIMEOUT and r.detail.startswith("no new guest output for 8 s")


def test_a_guest_that_keeps_printing_is_not_cut_off_by_the_idle_limit(tmp_path):
    # It prints until second 24, far past the idle limit of 5 from its start, then hangs.
    out, clock = _wait_for_guest(tmp_path, _TALKS_UNTIL.format(until=24),
                                 guests.GuestDeadline(idle_s=5, cap_s=100, tick_s=4))
    assert "no new guest output for 5 s" in out and 29 <= clock <= 31
    # dom0's heartbeat came every 4 of its seconds while it waited (the host's stall watch needs it).
    ticks = [float(x.split()[2]) for x in out.splitlines() if x.startswith("OVMFGEN-EVENT tick ")]
    assert len(ticks) >= 4 and all(4 <= b - a <= 5 for a, b in zip(ticks, ticks[1:]))


def test_a_guest_printing_forever_stops_at_the_cap(tmp_path):
    out, clock = _wait_for_guest(tmp_path, _TALKS_UNTIL.format(until=10 ** 6),
                                 guests.GuestDeadline(idle_s=5, cap_s=15, tick_s=5))
    assert "OVMFGEN-DEADLINE no shell after 15 s" in out and 25 <= clock <= 26
    assert verdicts.classify_xen_run(out, "", 0).detail.startswith("no shell after 15 s")


def test_console_output_counts_as_progress_and_the_shell_ends_the_wait(tmp_path):
    scenario = """t=$1
LOG="$OVMFGEN_CONSOLE_DIR/guest-g.log"
if [ "$t" -le 22 ]; then echo "boot $t" >> "$LOG"; fi
if [ "$t" -eq 22 ]; then printf 'Shell> ' >> "$LOG"; fi
"""
    out, clock = _wait_for_guest(tmp_path, scenario, guests.GuestDeadline(idle_s=5, cap_s=100, tick_s=5))
    assert "OVMFGEN-RESULT shell" in out and clock == 22
    r = verdicts.classify_xen_run(out, verdicts.extract_guest_console(out), 0)
    assert r.verdict is Verdict.SHELL_REACHED and r.shell_seconds == 12.0
    # The guest's whole turn on dom0's clock: xl create (10) to destroyed (22: the fake clock moves on sleep).
    assert r.dom0_seconds == 12.0 and "OVMFGEN-EVENT destroy 22" in out


def test_dom0_presses_a_key_at_the_shells_startup_countdown(tmp_path):
    # The Shell counts down from 5 (a busy wait): dom0 presses one key (a space, not ESC: startup.nsh
    # still runs) on the guest's console once it shows, and the Shell goes on at the next step.
    scenario = """t=$1
LOG="$OVMFGEN_CONSOLE_DIR/guest-g.log"
if [ "$t" -eq 13 ]; then printf 'Press \\033[1mESC\\033[0m in 5 seconds to skip startup.nsh' >> "$LOG"; fi
if [ "$t" -ge 14 ] && [ "$t" -lt 18 ] && [ -s "$FAKE/tty" ]; then printf 'Shell> ' >> "$LOG"; fi
"""
    out, clock = _wait_for_guest(tmp_path, scenario, guests.GuestDeadline(idle_s=30, cap_s=100, tick_s=5))
    assert (tmp_path / "fake" / "tty").read_text() == " "
    events = [x.split()[1:] for x in out.splitlines() if x.startswith("OVMFGEN-EVENT ")]
    assert ["key", "13.00"] in events and ["shell", "14.00"] in events and clock == 14, events
    # No countdown, no key.
    (tmp_path / "quiet").mkdir()
    scenario = """t=$1
[ "$t" -eq 13 ] && printf 'Shell> ' >> "$OVMFGEN_CONSOLE_DIR/guest-g.log"
"""
    out, _ = _wait_for_guest(tmp_path / "quiet", scenario, guests.GuestDeadline(idle_s=30, cap_s=100, tick_s=5))
    assert "OVMFGEN-EVENT key" not in out and not (tmp_path / "quiet" / "fake" / "tty").exists()


def test_a_crash_and_an_assert_end_the_wait_at_once(tmp_path):
    # xl list's fifth column is the state; "c": crashed (on_crash = "preserve" keeps the domain).
    (tmp_path / "c").mkdir()
    out, clock = _wait_for_guest(tmp_path / "c", 'echo "----c-" > "$FAKE/state"\n',
                                 guests.GuestDeadline(idle_s=8, cap_s=100))
    assert "OVMFGEN-RESULT crashed" in out and clock <= 12
    (tmp_path / "a").mkdir()
    out, clock = _wait_for_guest(tmp_path / "a", 'echo "(d1) ASSERT [PeiCore] x.c(1): y" >> "$FAKE/dmesg"\n',
                                 guests.GuestDeadline(idle_s=8, cap_s=100))
    assert "OVMFGEN-RESULT assert" in out and clock <= 12


_OS_AT_13 = """t=$1
[ "$t" -eq 13 ] && echo 'OVMFGEN-OS-REACHED' >> "$OVMFGEN_CONSOLE_DIR/guest-g.log"
exit 0
"""


def test_dom0_gives_the_guest_the_drive_with_its_serial(tmp_path):
    # xl create records the config it was given: the guest's own, with its drive's device as the disk.
    xl = _FAKE_XL.replace('create) echo "Parsing config from $2"; exit 0 ;;',
                          'create) cp "$2" "$FAKE/created.cfg"; echo "Parsing config from $2"; exit 0 ;;')
    runs = [("g", "g", verdicts.OS_MARKER, "os", "d1-pvh-os")]
    out, clock = _wait_for_guest(tmp_path, _OS_AT_13, guests.GuestDeadline(idle_s=30, cap_s=100),
                                 runs, drives={"vda": "d0-hvm-os", "vdb": "d1-pvh-os"}, xl=xl)
    assert "OVMFGEN-RESULT os" in out and clock == 13, out
    assert "OVMFGEN-XL| disk: /dev/vdb (serial d1-pvh-os, 6291456 sectors)" in out
    created = (tmp_path / "fake" / "created.cfg").read_text()
    assert created == guests.xl_config("/k", "g", disk="/dev/vdb")
    assert verdicts.classify_xen_run(out, verdicts.extract_guest_console(out), 0).verdict is Verdict.OS_REACHED


def test_a_missing_drive_is_dom0s_failure_in_one_line(tmp_path):
    runs = [("g", "g", verdicts.OS_MARKER, "os", "d2-hvm-os")]
    out, clock = _wait_for_guest(tmp_path, _OS_AT_13, guests.GuestDeadline(idle_s=30, cap_s=100),
                                 runs, drives={"vda": "d0-pvh-os"})
    assert "OVMFGEN-RESULT dom0-failed" in out and clock == 10 and "OVMFGEN-EVENT create" not in out
    r = verdicts.classify_guest(out, "g", 0)
    assert r.verdict is Verdict.HARNESS_FAILURE
    assert r.detail == "dom0: no block device with serial d2-hvm-os for the guest's disk (dom0's disks: vda=d0-pvh-os)"


def test_a_disk_dom0_cannot_attach_is_dom0s_failure_in_one_line(tmp_path):
    # xl create fails because the hotplug script did (it left its reason where dom0's test reads it).
    xl = _FAKE_XL.replace('create) echo "Parsing config from $2"; exit 0 ;;',
                          'create) echo "losetup /dev/vda: no free loop device" > "$OVMFGEN_BLOCK_ERROR"; '
                          'echo "libxl: error: libxl_device.c:1199:device_backend_callback: Domain 1:unable to add '
                          'device with path /local/domain/0/backend/vbd/1/51712"; exit 1 ;;')
    runs = [("g", "g", verdicts.OS_MARKER, "os", "d0-pvh-os")]
    out, _ = _wait_for_guest(tmp_path, "", guests.GuestDeadline(idle_s=30, cap_s=100), runs,
                             drives={"vda": "d0-pvh-os"}, xl=xl)
    assert "OVMFGEN-RESULT dom0-failed" in out and "OVMFGEN-RESULT create-failed" not in out
    r = verdicts.classify_guest(out, "g", 0)
    assert (r.verdict, r.detail) == (Verdict.HARNESS_FAILURE,
                                     "dom0: cannot attach the guest's disk: losetup /dev/vda: no free loop device")


def test_nightly_guest_specs_name_the_guest_sets_payloads():
    assert guests.parse_guest_spec("hvm-os") == guests.GuestSpec("hvm", "os")
    assert guests.parse_guest_spec("pvh-os-4M") == guests.GuestSpec("pvh", "os", "4M")
    assert guests.parse_guest_spec("hvm-smp-128cpus") == guests.GuestSpec("hvm", "smp", vcpus=128)
    with pytest.raises(OvmfgenError, match="payloads: shell, os, smp, ud2"):
        guests.parse_guest_spec("pvh-persist")


# A Secure Boot firmware that refuses the disk's image falls through to its boot manager and waits for a
# key there (no Shell in a Secure Boot build): dom0 stops at the refusal line, whatever it waited for.
_REFUSES_AT_15 = """t=$1
LOG="$OVMFGEN_CONSOLE_DIR/guest-g.log"
[ "$t" -eq 14 ] && echo 'BdsDxe: loading Boot0001 "UEFI Misc Device" from PciRoot(0x0)' >> "$LOG"
[ "$t" -eq 15 ] && echo 'BdsDxe: failed to load Boot0001 "UEFI Misc Device" from PciRoot(0x0): Access Denied' >> "$LOG"
[ "$t" -eq 15 ] && echo 'BdsDxe: Press any key to enter the Boot Manager Menu.' >> "$LOG"
exit 0
"""


# Linux's CPU report at 13, then a kernel that goes on printing (soft lockups) and never runs its init.
_SMP_AT_13 = """t=$1
LOG="$OVMFGEN_CONSOLE_DIR/guest-g.log"
[ "$t" -eq 12 ] && echo '[    0.000000] Linux version 6.1.0-57-amd64' >> "$LOG"
[ "$t" -eq 13 ] && echo '[   20.512345] smp: Brought up 1 node, 128 CPUs' >> "$LOG"
[ "$t" -gt 13 ] && echo "[   $t.000000] watchdog: BUG: soft lockup - CPU#5 stuck for 26s!" >> "$LOG"
exit 0
"""


@pytest.mark.parametrize("payload", ["smp", "os"])
def test_the_smp_guest_stops_at_linuxs_cpu_report_the_os_guest_waits_for_its_init(tmp_path, payload):
    g = guests.XenGuest("hvm", payload, Path("x.elf"), vcpus=128)
    runs = [("g", "g", *guests.WANT[payload])]
    out, clock = _wait_for_guest(tmp_path, _SMP_AT_13, guests.GuestDeadline(idle_s=30, cap_s=60, tick_s=5), runs)
    r = verdicts.classify_xen_run(out, verdicts.extract_guest_console(out), 0)
    if payload == "smp":
        assert "OVMFGEN-RESULT os" in out and clock == 13, out
        assert (r.verdict, r.detail) == (Verdict.OS_REACHED, "Linux's report of its CPUs on the guest's console "
                                                             "(smp: Brought up 1 node, 128 CPUs)")
        assert r.verdict is g.expected and r.cpus.linux == 128
    else:
        # The os guest waits for its init's marker, until the cap: the kernel's banner alone is no pass.
        assert "OVMFGEN-RESULT timeout" in out and clock >= 60, out
        assert r.verdict is not Verdict.OS_REACHED


@pytest.mark.parametrize("payload", ["sb-refused", "sb-signed", "disk"])
def test_dom0_stops_at_a_secure_boot_refusal(tmp_path, payload):
    g = guests.XenGuest("pvh", payload, Path("x.elf"))
    runs = [("g", "g", *guests.WANT[payload])]
    out, clock = _wait_for_guest(tmp_path, _REFUSES_AT_15, guests.GuestDeadline(idle_s=30, cap_s=100, tick_s=5),
                                 runs)
    assert "OVMFGEN-RESULT refused" in out and clock == 15, out
    r = verdicts.classify_xen_run(out, verdicts.extract_guest_console(out), 0)
    assert r.verdict is Verdict.SECURE_BOOT_REFUSED and r.refused_seconds == 5.0
    assert r.detail.endswith("Access Denied")
    assert (r.verdict is g.expected) == (payload == "sb-refused")


def test_secure_boot_guests_have_a_drive_each_and_dom0_carries_no_copy(tmp_path):
    """dom0's root is RAM: no guest's disk is in it, whether guests boot the same file or not."""
    mods = tmp_path / "modules"
    mods.mkdir()
    for m in debian.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(m.encode())
    image = pvh_elf_file(tmp_path)
    signed, unsigned = tmp_path / "signed.img", tmp_path / "unsigned.img"
    signed.write_bytes(b"signed")
    unsigned.write_bytes(b"unsigned")
    guest_set = [guests.XenGuest("pvh", "sb-signed", image, disk=signed),
                 guests.XenGuest("hvm", "sb-signed", image, disk=signed),
                 guests.XenGuest("pvh", "sb-refused", image, disk=unsigned),
                 guests.XenGuest("hvm", "sb-refused", image, disk=unsigned),
                 guests.XenGuest("pvh", "os", image, disk=signed)]
    data = guests.overlay_cpio(guest_set, mods, guests.GuestDeadline())
    got = read_newc(data)
    assert b"unsigned" not in data and not [n for n in got if n.endswith(".img")]
    script = got["ovmfgen/test.sh"][1].decode()
    assert [ln.split()[-1] for ln in script.splitlines() if ln.startswith("run_guest ")] == [
        "d0-pvh-sb-signed", "d1-hvm-sb-signed", "d2-pvh-sb-refused", "d3-hvm-sb-refused", "d4-pvh-os"]
