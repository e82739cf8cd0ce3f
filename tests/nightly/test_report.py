"""The nightly report: the SVG charts and the index page, from made-up summaries (no builds)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from ovmfgen.nightly import history
from ovmfgen.nightly import report

SVG = "{http://www.w3.org/2000/svg}"


def _cell(name: str, status: str = "passed", dxe: float = 40.0, build_s: float = 200.0, boot: bool = True) -> dict:
    return {
        "name": name, "status": status, "platform": "xen-pvh", "target": "DEBUG", "fd_size": "2M",
        "description": f"the {name} cell", "seconds": 12.5, "log": f"cells/{name}/cell.log",
        "error": None if status == "passed" else "build: AutoGen error 3000: boom",
        "artifacts": {"OVMF.fd": f"cells/{name}/artifacts/OVMF.fd", "build.log": f"cells/{name}/artifacts/build.log",
                      "ovmf.elf": f"cells/{name}/artifacts/ovmf.elf"},
        "sizes": {"OVMF.fd": 2 * 1024 * 1024, "ovmf.elf": 2 * 1024 * 1024},
        "fv_usage": {"DXEFV": {"percent_full": dxe}, "FVMAIN_COMPACT": {"percent_full": 71.0},
                     "PEIFV": {"percent_full": 22.0}},
        "steps": [{"name": "build", "status": "passed", "seconds": 1.0, "noop": True, "build_seconds": build_s,
                   "detail": "up to date"},
                  {"name": "check-elf", "status": "passed", "seconds": 0.1, "detail": "24/24 loader rules pass"}],
        "boot": ({"pvh": {"verdict": "REACHED_XEN_PLATFORM_PEI", "ok": True, "seconds": 0.6,
                          "log": f"cells/{name}/boot-pvh.log"}} if boot else {}),
    }


def _night(date: str, cells: list[dict], repro: dict | None = None) -> dict:
    return history.make_summary(date, cells, repro, "nightly.yaml", 1, 321.0)


def test_line_chart_is_well_formed_svg_with_a_line_per_series_and_gaps():
    svg = report.line_chart_svg("FV usage", ["2025-01-01", "2025-01-02", "2025-01-03"],
                                {"DXEFV": [40.0, 41.5, 43.0], "PEIFV": [20.0, None, 22.0], "SECFV": [None, None, 9.0]},
                                "% full", y_max=100)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    # DXEFV is one line; PEIFV's gap leaves two single points (no line); SECFV one point.
    assert len(root.findall(f"{SVG}polyline")) == 1
    assert len(root.findall(f"{SVG}circle")) == 3 + 2 + 1
    titles = [c.find(f"{SVG}title").text for c in root.findall(f"{SVG}circle")]
    assert "DXEFV 2025-01-02: 41.5" in titles
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "FV usage" in texts and "DXEFV" in texts and "100" in texts
    # Points at 40 % sit above (smaller y than) points at 20 %.
    ys = {c.find(f"{SVG}title").text.split()[0]: float(c.get("cy")) for c in root.findall(f"{SVG}circle")}
    assert ys["DXEFV"] < ys["PEIFV"]


def test_line_chart_scales_to_the_data_without_a_fixed_maximum():
    svg = report.line_chart_svg("Build time", ["a"], {"x": [437.0]})
    labels = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert "500" in labels  # the next round number above 437 * 1.1


class _Tags(HTMLParser):
    """Checks that the page's elements nest properly (every opened element is closed in order)."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "rect", "line", "circle", "polyline"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.count: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.count[tag] = self.count.get(tag, 0) + 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.count[tag] = self.count.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_index_has_the_cell_table_the_history_and_svg_charts():
    nights = [
        _night("2025-01-01", [_cell("xen-pvh-DEBUG-2M", dxe=40.0, build_s=250.0), _cell("qemu-x64-DEBUG", boot=False)]),
        _night("2025-01-02", [_cell("xen-pvh-DEBUG-2M", dxe=41.0, build_s=240.0),
                              _cell("qemu-x64-DEBUG", status="failed")],
               {"cell": "xen-pvh-DEBUG-2M", "status": "differs", "detail": "OVMF.fd differs", "fvs": ["DXEFV.Fv"],
                "files": ["FV/Ffs/x/DxeCore.ffs"], "log": "repro/cell.log", "seconds": 600}),
    ]
    page = report.render_index(nights)
    parser = _Tags()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert parser.count["table"] == 2                     # the cells of the latest night, the history
    assert parser.count["svg"] == 3                       # build time + one FV chart per cell
    # The latest night is the one tabulated; links point into its directory.
    assert "Night of <b>2025-01-02</b>" in page
    assert 'href="2025-01-02/cells/xen-pvh-DEBUG-2M/cell.log"' in page
    assert 'href="2025-01-02/cells/xen-pvh-DEBUG-2M/artifacts/build.log"' in page
    assert 'href="2025-01-02/cells/xen-pvh-DEBUG-2M/boot-pvh.log"' in page
    assert "REACHED_XEN_PLATFORM_PEI" in page and "24/24 loader rules pass" in page
    assert "1/2 cells passed" in page and "AutoGen error 3000: boom" in page
    assert "DXEFV.Fv" in page and "differs" in page    # the reproducibility check and what differed
    assert 'href="2025-01-01/summary.json"' in page    # the history table
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)                               # each chart is well-formed XML
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_index_escapes_text_from_summaries():
    cell = _cell("xen-pvh-DEBUG-2M", status="failed")
    cell["error"] = "<b>not bold</b> & 'quoted'"
    page = report.render_index([_night("2025-01-01", [cell])])
    assert "<b>not bold</b>" not in page
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; &#x27;quoted&#x27;" in page


def test_empty_history_renders_a_page_saying_so(tmp_path: Path):
    path = report.write_index(tmp_path)
    text = path.read_text()
    assert "No nights recorded yet" in text
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_write_index_reads_the_kept_nights(tmp_path: Path):
    for date in ("2025-01-01", "2025-01-02"):
        history.write_summary(tmp_path / date, _night(date, [_cell("c1")]))
    (tmp_path / "not-a-night").mkdir()
    text = report.write_index(tmp_path).read_text()
    assert "last 2 night(s)" in text and "Night of <b>2025-01-02</b>" in text


def test_a_nested_xen_boot_shows_one_line_per_guest_with_its_verdict_and_log():
    cell = _cell("xen-pvh-DEBUG-hvcon-xen417", status="failed")
    cell["boot"] = {"xen": {
        "verdict": "ovmfgen-pvh-shell-4M TIMEOUT", "ok": False, "seconds": 900.0, "log": "cells/x/xen/xen-boot.json",
        "guests": [{"name": "ovmfgen-pvh-shell", "verdict": "SHELL_REACHED", "ok": True, "wall_seconds": 61.0,
                    "log": "cells/x/xen/xen-pvh-shell.log"},
                   {"name": "ovmfgen-pvh-shell-4M", "verdict": "TIMEOUT", "ok": False, "wall_seconds": 800.0}]}}
    page = report.render_index([_night("2025-01-03", [cell])])
    assert 'href="2025-01-03/cells/x/xen/xen-pvh-shell.log"' in page
    assert "pvh-shell: SHELL_REACHED" in page and "pvh-shell-4M: TIMEOUT" in page
    assert '<div class="bad small">· pvh-shell-4M: TIMEOUT' in page
