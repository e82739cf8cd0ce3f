"""A software TPM 2.0 (swtpm, as libvirt gives KVM guests one) for a QEMU boot, and its PCRs read back.

QEMU's ``-tpmdev emulator`` talks to ``swtpm socket`` over its control socket and receives the data
channel from it (CMD_SET_DATAFD). When QEMU exits normally it shuts the TPM down (CMD_SHUTDOWN) and the
PCRs are gone; so a boot whose PCRs are to be read ends QEMU with SIGKILL, and ``read_pcrs`` then hands
swtpm a data channel of its own the same way and sends TPM2_PCR_Read. No tpm2-tools needed.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from ovmfgen.errors import OvmfgenError
from ovmfgen.run import DEVNULL, STDOUT, Process, popen, run, stop

CMD_SET_DATAFD = 16            # swtpm's control channel (ptm ioctl numbers)
TPM2_CC_PCR_READ = 0x17E
TPM_ST_NO_SESSIONS = 0x8001
ALGORITHMS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}
QEMU_KILL = (signal.SIGKILL,)  # what ``stop`` sends QEMU when the TPM's state is to outlive it


def _tools_hint() -> str:
    return "install swtpm and swtpm-tools (apt-get install swtpm swtpm-tools)"


def pcr_read_command(pcr: int, bank: str) -> bytes:
    """TPM2_PCR_Read of one PCR in one bank."""
    select = bytearray(3)
    select[pcr // 8] |= 1 << (pcr % 8)
    body = struct.pack(">IHB", 1, ALGORITHMS[bank], len(select)) + bytes(select)
    return struct.pack(">HII", TPM_ST_NO_SESSIONS, 10 + len(body), TPM2_CC_PCR_READ) + body


def parse_pcr_read(resp: bytes) -> bytes:
    """The one digest of a TPM2_PCR_Read response (one error line for a TPM error code)."""
    if len(resp) < 10:
        raise OvmfgenError(f"swtpm answered TPM2_PCR_Read with {len(resp)} bytes")
    _tag, _size, rc = struct.unpack(">HII", resp[:10])
    if rc:
        raise OvmfgenError(f"swtpm answered TPM2_PCR_Read with TPM error 0x{rc:x}"
                           + (" (TPM not started: the firmware never sent TPM2_Startup)" if rc == 0x100 else ""))
    off = 14                                            # header, pcrUpdateCounter
    (count,) = struct.unpack(">I", resp[off:off + 4])
    off += 4
    for _ in range(count):                              # TPML_PCR_SELECTION
        off += 3 + resp[off + 2]
    (digests,) = struct.unpack(">I", resp[off:off + 4])
    if digests != 1:
        raise OvmfgenError(f"swtpm returned {digests} digests for one PCR (is the bank allocated?)")
    (size,) = struct.unpack(">H", resp[off + 4:off + 6])
    return resp[off + 6:off + 6 + size]


@dataclass
class Swtpm:
    """One swtpm (TPM 2.0) with its state in ``state_dir`` and its control socket in ``run_dir``."""

    state_dir: Path
    run_dir: Path
    proc: Process | None = field(default=None, repr=False)

    @property
    def ctrl_socket(self) -> Path:
        return self.run_dir / "swtpm-ctrl.sock"

    @property
    def log(self) -> Path:
        return self.run_dir / "swtpm.log"

    def qemu_args(self, device: str = "tpm-tis") -> list[str]:
        """QEMU's options for a TPM device backed by this swtpm."""
        path = str(self.ctrl_socket).replace(",", ",,")
        return ["-chardev", f"socket,id=chrtpm,path={path}", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                "-device", f"{device},tpmdev=tpm0"]

    def start(self, timeout: float = 30.0) -> Swtpm:
        """Manufacture the TPM (once per state directory: EK) and start swtpm; wait for its socket."""
        for tool in ("swtpm", "swtpm_setup"):
            if shutil.which(tool) is None:
                raise OvmfgenError(f"{tool} not found: {_tools_hint()}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        run(["swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir), "--createek", "--not-overwrite"],
            timeout=120)
        self.ctrl_socket.unlink(missing_ok=True)
        self.proc = popen(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir}",
                           "--ctrl", f"type=unixio,path={self.ctrl_socket}", "--log", f"file={self.log},level=1"],
                          stdin=DEVNULL, stdout=DEVNULL, stderr=STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ctrl_socket.exists():
            if self.proc.poll() is not None:
                raise OvmfgenError(f"swtpm exited with status {self.proc.returncode} before listening "
                                   f"(log: {self.log})")
            if time.monotonic() > deadline:
                self.stop()
                raise OvmfgenError(f"swtpm did not create {self.ctrl_socket} within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def read_pcrs(self, pcrs: range | list[int] = range(8), bank: str = "sha256",
                  timeout: float = 10.0) -> dict[int, str]:
        """The PCRs' values (hex), read over a data channel handed to swtpm (after QEMU is gone)."""
        ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctrl.settimeout(timeout)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.settimeout(timeout)
        try:
            ctrl.connect(str(self.ctrl_socket))
            socket.send_fds(ctrl, [struct.pack(">I", CMD_SET_DATAFD)], [theirs.fileno()])
            answer = ctrl.recv(4)
            if len(answer) != 4 or struct.unpack(">I", answer)[0] != 0:
                raise OvmfgenError(f"swtpm refused a data channel (CMD_SET_DATAFD answered {answer.hex()})")
            values = {}
            for pcr in pcrs:
                mine.sendall(pcr_read_command(pcr, bank))
                values[pcr] = parse_pcr_read(mine.recv(4096)).hex()
            return values
        except OSError as exc:
            raise OvmfgenError(f"cannot read PCRs from swtpm at {self.ctrl_socket}: {exc}") from None
        finally:
            for s in (ctrl, mine, theirs):
                s.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> Swtpm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
