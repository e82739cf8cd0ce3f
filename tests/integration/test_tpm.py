"""TPM 2.0 builds (feature tpm) in QEMU with a real software TPM (swtpm): the firmware finds it and
measures, and the PCRs read back from the TPM equal the manifest's predicted PCR 7 (PCR 0 follows the measured PEIFV, see builder/measure.py); without a
TPM device the same image boots to the Shell and says it found none.

Build: qemu-x64 with ``--feature tpm=tpm2`` (an ordinary build: a no-op when published). xen-pvh's tpm2 build
is the nightly's (cell xen-pvh-DEBUG-tpm2-xen420: PVH and HVM guests of real Xen, no TPM device): in plain
QEMU its TPM PEIMs never run (they wait for the permanent memory XenPlatformPei installs only on Xen), so a
QEMU boot of it proves little and its build is CI time.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from ovmfgen.boot.shell import boot_qemu_shell
from ovmfgen.boot.swtpm import Swtpm
from ovmfgen.boot.verdict import Verdict
from ovmfgen.builder import entry as build_entry
from ovmfgen.builder.measure import PCRLOCK_NAME

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]
TPM2 = ("tpm=tpm2",)


@pytest.fixture(scope="module")
def qemu_x64_tpm() -> Path:
    return build_entry.build_command(platform="qemu-x64", target="DEBUG", features=TPM2)


def _predicted(dist: Path) -> dict:
    manifest = json.loads((dist / "manifest.json").read_text())
    assert manifest["features"]["tpm"] == "tpm2"
    assert (dist / PCRLOCK_NAME).is_file() and PCRLOCK_NAME in manifest["outputs"]
    return manifest["measurements"]


def _pcr0_reads(debug: str) -> list[str]:
    """Tcg2Pei's DEBUG "ReadPcr" lines for PCR 0 (sha256), in order."""
    return ["".join(m.split()).lower() for m in re.findall(r"HashAlg = 0x000B, Pcr\[00\], digest = ([0-9A-F ]+)", debug)]


def test_the_pcrs_a_real_tpm_reads_are_the_predicted_ones(qemu_x64_tpm: Path, tmp_path: Path) -> None:
    predicted = _predicted(qemu_x64_tpm)
    with Swtpm(tmp_path / "tpm-state", tmp_path / "run") as tpm:
        # SIGKILL: QEMU leaves without shutting the TPM down, so its PCRs stay readable.
        result = boot_qemu_shell(qemu_x64_tpm / "OVMF.fd", tmp_path / "boot", extra_args=tpm.qemu_args(),
                                 power_off=False, stop_signals=(signal.SIGKILL,))
        assert result.verdict is Verdict.SHELL_REACHED, result.summary()
        debug = result.debug_log.read_text(errors="replace")
        assert "Tcg2ConfigPeimEntryPoint: TPM2 detected" in debug
        read = tpm.read_pcrs([0, 7], "sha256")          # swtpm's default: the sha256 bank only
    assert read[7] == predicted["pcrs"]["7"]["sha256"]
    # PCR 0: the S-CRTM version event as predicted, then PEIFV as the pre-memory PEIMs left it in RAM
    # (not as built: manifest pcr0_note), DXEFV, and at ReadyToBoot the separator.
    crtm = next(e for e in predicted["events"] if e["type"] == "EV_S_CRTM_VERSION")
    reads = _pcr0_reads(debug)
    assert reads[1] == hashlib.sha256(bytes(32) + bytes.fromhex(crtm["sha256"])).hexdigest()
    separator = hashlib.sha256(bytes(4)).digest()
    # Tcg2Pei's reads: before any event, after the S-CRTM version, PEIFV, DXEFV; Tcg2Dxe's last one at ReadyToBoot.
    assert read[0] == hashlib.sha256(bytes.fromhex(reads[3]) + separator).hexdigest() == reads[-1]
    assert read[0] != predicted["pcr0_as_built"]["sha256"]


def test_without_a_tpm_device_the_same_image_boots_and_says_so(qemu_x64_tpm: Path, tmp_path: Path) -> None:
    result = boot_qemu_shell(qemu_x64_tpm / "OVMF.fd", tmp_path)
    assert result.verdict is Verdict.SHELL_REACHED, result.summary()
    debug = result.debug_log.read_text(errors="replace")
    assert "Tcg2ConfigPeimEntryPoint: no TPM detected" in debug
    assert "TPM2 detected" not in debug
