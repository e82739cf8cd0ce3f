"""A small nightly end to end: xen-pvh DEBUG 2 MiB (QEMU through both entries) + qemu-x64 DEBUG
(QEMU to the UEFI Shell), its report rendered by headless Chromium, and the install layout.

The cells' builds are ordinary ``ovmfgen.builder`` builds: when dist/ already holds them from the same
inputs (another test, an earlier run) the build step is a no-op, otherwise it builds (qemu-x64 from
scratch takes about 10 minutes on 2 cores, much less with a warm ccache).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from ovmfgen.boot import shell as boot_shell
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.nightly import command, install, matrix
from ovmfgen.nightly.matrix import InstallSpec
from ovmfgen.run import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

REPO = Path(__file__).resolve().parents[2]
CELLS = ["xen-pvh-DEBUG-2M", "qemu-x64-DEBUG"]
DATE = "2025-01-15"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def small_night(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, float]:
    """Run the two cells of nightly.yaml into a fresh history dir; (summary, out dir, seconds)."""
    out = tmp_path_factory.mktemp("nightly")
    t0 = time.monotonic()
    summary = command.nightly_command(matrix=str(REPO / "nightly.yaml"), cell=CELLS, repro="none", out=str(out),
                                      date=DATE, quiet=True, jobs=1)
    seconds = time.monotonic() - t0
    print(f"small nightly ({', '.join(CELLS)}): {seconds:.1f} s")
    return summary, out, seconds


def test_small_matrix_passes_end_to_end(small_night):
    summary, out, _ = small_night
    assert summary["totals"] == {"cells": 2, "passed": 2, "failed": 0}
    cells = {c["name"]: c for c in summary["cells"]}
    night = out / DATE

    xen = cells["xen-pvh-DEBUG-2M"]
    assert [s["name"] for s in xen["steps"]] == ["build", "check-elf", "boot-pvh", "boot-reset"]
    for entry in ("pvh", "reset"):
        assert xen["boot"][entry]["verdict"] == "REACHED_XEN_PLATFORM_PEI"
        assert "Xen isn't detected" in (night / xen["boot"][entry]["log"]).read_text(errors="replace")
    assert xen["fd_size"] == "2M" and xen["sizes"]["OVMF.fd"] == 2 * 1024 * 1024
    assert {"DXEFV", "FVMAIN_COMPACT", "PEIFV", "SECFV"} <= set(xen["fv_usage"])
    assert (night / xen["artifacts"]["ovmf.elf"]).read_bytes() == (REPO / xen["dist"] / "ovmf.elf").read_bytes()

    qemu = cells["qemu-x64-DEBUG"]
    assert [s["name"] for s in qemu["steps"]] == ["build", "boot-shell"]
    assert qemu["boot"]["shell"]["verdict"] == "SHELL_REACHED"
    serial = boot_shell.strip_ansi((night / qemu["boot"]["shell"]["log"]).read_text(errors="replace"))
    assert boot_shell.SHELL_MARKER in serial.splitlines() and "UEFI Interactive Shell" in serial
    # The image's own Shell, from the disk's default boot path (ovmfgen.fvfile), started it.
    assert "(started by Boot" in qemu["boot"]["shell"]["detail"]
    assert qemu["fd_size"] == "4M"
    # The pflash pair the boot used is the published unified image, split.
    code = (night / qemu["artifacts"]["OVMF_CODE.fd"]).read_bytes()
    vars_ = (night / qemu["artifacts"]["OVMF_VARS.fd"]).read_bytes()
    assert vars_ + code == (night / qemu["artifacts"]["OVMF.fd"]).read_bytes()

    on_disk = json.loads((night / "summary.json").read_text())
    assert on_disk["date"] == DATE and on_disk["totals"]["passed"] == 2
    for c in summary["cells"]:
        assert (night / c["log"]).is_file() and "step build" in (night / c["log"]).read_text()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.hrefs += [v for k, v in attrs if k == "href" and v]


def test_every_link_in_the_report_resolves(small_night):
    _, out, _ = small_night
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert len(parser.hrefs) >= 10
    missing = [h for h in parser.hrefs if not (out / unquote(h)).is_file()]
    assert missing == []


def _png_pixels(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode a non-interlaced 8-bit RGB/RGBA PNG (what Chromium writes) with the standard library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos: pos + 8])
        body = data[pos + 8: pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1: (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        pixels += [tuple(line[i: i + 3]) for i in range(0, stride, bpp * 7)]  # every 7th pixel is plenty
        prev = line
    return width, height, pixels


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium); "
                                             "test_every_link_in_the_report_resolves and tests/test_report.py "
                                             "check the page's structure without a browser")
def test_report_renders_in_headless_chromium(small_night, tmp_path: Path):
    _, out, _ = small_night
    shot = tmp_path / "index.png"
    profile = Path(tempfile.mkdtemp(prefix="ovmfgen-chromium-"))
    try:
        run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={shot}", "--window-size=1400,1400", (out / "index.html").as_uri()], timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1400, 1400)
    white = sum(1 for p in pixels if p == (255, 255, 255))
    colours = set(pixels)
    # A blank (or error) page is one or two colours; the report has text, green/red cells, chart lines.
    assert len(colours) > 50, f"only {len(colours)} colours in the screenshot"
    assert white / len(pixels) < 0.97
    assert any(g > r + 20 and g > b + 10 for r, g, b in colours), "no green status cells"
    shutil.copy(shot, out / "index.png")  # kept beside the report for a person to look at


def test_install_root_lays_out_what_the_small_night_built(small_night, tmp_path: Path):
    summary, out, _ = small_night
    specs = [InstallSpec("xen-pvh-DEBUG-2M", firmware="usr/lib/xen/boot/ovmf.bin",
                         descriptor="usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json"),
             *[s for s in matrix.load_matrix(REPO / "nightly.yaml").install if s.cell == "qemu-x64-DEBUG"]]
    root = tmp_path / "root"
    install.install(summary, out / DATE, root, specs)
    elf = root / "usr/lib/xen/boot/ovmf.bin"
    cells = {c["name"]: c for c in summary["cells"]}
    assert elf.read_bytes() == (out / DATE / cells["xen-pvh-DEBUG-2M"]["artifacts"]["ovmf.elf"]).read_bytes()
    desc = json.loads((root / "usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json").read_text())
    assert desc["mapping"] == {"device": "kernel", "filename": "/usr/lib/xen/boot/ovmf.bin"}
    assert desc["features"] == ["verbose-dynamic"]
    qdesc = json.loads((root / "usr/share/qemu/firmware/70-ovmfgen-qemu-x64.json").read_text())
    code = root / qdesc["mapping"]["executable"]["filename"].lstrip("/")
    assert code.read_bytes() == (out / DATE / cells["qemu-x64-DEBUG"]["artifacts"]["OVMF_CODE.fd"]).read_bytes()
    # The installed ELF is loaded the way the descriptor says (device kernel = QEMU -kernel).
    result = boot_qemu(elf, "pvh", tmp_path, timeout=60)
    assert result.ok, result.summary()


def test_a_second_run_reuses_the_published_builds(small_night, tmp_path: Path):
    """The build stage's no-op makes a rerun cheap: only the checks and boots run again."""
    summary = command.nightly_command(matrix=str(REPO / "nightly.yaml"), cell=CELLS, repro="none",
                                      out=str(tmp_path / "again"), date=DATE, quiet=True, jobs=2)
    for cell in summary["cells"]:
        build = next(s for s in cell["steps"] if s["name"] == "build")
        assert build["noop"], f"{cell['name']}: {build['detail']}"
    assert re.match(r"\d", str(summary["seconds"]))
