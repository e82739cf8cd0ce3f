"""The nightly's static report: ``nightly/index.html`` from the kept nights' summary.json files.

One self-contained page (inline CSS and SVG, no scripts, no external resources), so it opens from
a file, a CI artifact or any static web server:

* the latest night: a table of cells (status, duration, build, sizes, FV usage, check-elf, boot
  results, links to the cell's log, build log, artifacts and boot logs) and the reproducibility
  check;
* the history: one row per kept night, and line charts of FV usage (% full, per cell, one line per
  FV: FVMAIN_COMPACT is what fills the FD) and of build time per cell over those nights. The charts
  are SVG written here: no plotting library.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ovmfgen.fsutil import atomic_write_bytes
from ovmfgen.paths import LOG_NAME
from ovmfgen.nightly.history import read_summaries
from ovmfgen.nightly.records import BootRecord, CellRecord, FvUsage, StepRecord, Summary, Totals

INDEX = "index.html"
NO_TOTALS = Totals(cells=0, passed=0, failed=0)  # what a summary without totals shows
NO_CELL = CellRecord()  # a cell missing from a night
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
STATUS_CLASS = {"passed": "ok", "failed": "bad", "identical": "ok", "differs": "warn", "error": "bad"}

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #555; margin-bottom: 16px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; white-space: nowrap; }
.ok { background: #d9f2d9; } .bad { background: #f8d0d0; } .warn { background: #fbefc6; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600; }
.fv { white-space: nowrap; font-size: 12px; }
.bar { display: inline-block; width: 80px; height: 9px; background: #e5e5e5; vertical-align: middle;
       margin: 0 4px; border: 1px solid #bbb; }
.bar span { display: block; height: 100%; background: #4a7bd0; }
.bar span.hot { background: #d0584a; }
.small { font-size: 12px; color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { border: 1px solid #ddd; padding: 6px; }
a { color: #1a55a8; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt_seconds(s: object) -> str:
    try:
        v = float(s) if isinstance(s, (int, float, str)) else None
    except ValueError:
        v = None
    if v is None:
        return "-"
    if v >= 90:
        return f"{int(v) // 60} min {int(v) % 60:02d} s"
    return f"{v:.1f} s"


def _fmt_size(n: object) -> str:
    try:
        v = int(n) if isinstance(n, (int, float, str)) else None
    except ValueError:
        v = None
    if v is None:
        return "-"
    return f"{v / 1024 / 1024:.2f} MiB" if v >= 1024 * 1024 else f"{v / 1024:.0f} KiB"


# ---------------------------------------------------------------------------------------------
# SVG line chart


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5):
        for exp in range(-2, 7):
            cand = step * 10 ** exp
            if cand >= v:
                return cand
    return v


def line_chart_svg(title: str, x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]],
                   y_label: str = "", y_max: float | None = None, width: int = 460, height: int = 230) -> str:
    """A line chart as an inline ``<svg>``: one polyline (and dots) per series, legend underneath.

    ``series`` values line up with ``x_labels``; ``None`` is a gap (the cell did not run that night).
    """
    left, right, top = 48, 12, 26
    legend_rows = (len(series) + 1) // 2
    bottom = 34 + 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vals in series.values() for v in vals if v is not None]
    ymax = y_max if y_max is not None else _nice_max(max(values) * 1.1 if values else 1.0)
    n = len(x_labels)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return top + plot_h - plot_h * min(max(v, 0.0), ymax) / ymax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13" font-weight="600">{_e(title)}</text>']
    for k in range(5):
        v = ymax * k / 4
        yy = y(v)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + plot_w}" y2="{yy:.1f}" stroke="#e3e3e3"/>')
        label = f"{v:.0f}" if ymax >= 10 else f"{v:.1f}"
        out.append(f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end" font-size="10">{label}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>')
    if y_label:
        out.append(f'<text x="12" y="{top + plot_h / 2:.0f}" font-size="10" text-anchor="middle" '
                   f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">{_e(y_label)}</text>')
    every = max(1, (n + 5) // 6)
    for i, lab in enumerate(x_labels):
        if i % every == 0 or i == n - 1:
            out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 13}" text-anchor="middle" font-size="10">'
                       f'{_e(lab[5:] if len(lab) == 10 else lab)}</text>')
    for s, (name, vals) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, val in enumerate(vals):
            if val is None:
                runs.append([])
                continue
            runs[-1].append((x(i), y(val)))
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in run)
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        for i, val in enumerate(vals):
            if val is not None:
                out.append(f'<circle cx="{x(i):.1f}" cy="{y(val):.1f}" r="3" fill="{color}">'
                           f'<title>{_e(name)} {_e(x_labels[i])}: {val:.1f}</title></circle>')
        lx = left + (s % 2) * (plot_w / 2)
        ly = top + plot_h + 28 + 16 * (s // 2)
        out.append(f'<rect x="{lx:.0f}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14:.0f}" y="{ly + 1}" font-size="11">{_e(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The page


def _link(href: str | None, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else ""


def _fv_cell(fv_usage: Mapping[str, FvUsage]) -> str:
    rows = []
    for name, rec in sorted(fv_usage.items()):
        pct = rec.get("percent_full")
        if pct is None:
            continue
        p = float(pct)
        hot = " hot" if p >= 90 else ""
        rows.append(f'<div class="fv">{_e(name)}<span class="bar"><span class="{hot.strip()}" '
                    f'style="width:{min(p, 100):.0f}%"></span></span>{p:.0f}%</div>')
    return "".join(rows) or "-"


def _boot_cell(boot: Mapping[str, BootRecord], base: str) -> str:
    if not boot:
        return '<span class="small">not booted</span>'
    parts = []
    for kind, rec in boot.items():
        cls = "ok" if rec.get("ok") else "bad"
        log = rec.get("log")
        label = f"{kind}: {rec.get('verdict')} ({_fmt_seconds(rec.get('seconds'))})"
        parts.append(f'<div class="{cls}">' + (_link(f"{base}/{log}", label) if log else _e(label)) + "</div>")
        for g in rec.get("guests") or []:  # a nested Xen boot: one line per guest
            gcls = "ok" if g.get("ok") else "bad"
            glabel = (f"· {str(g.get('name', '')).removeprefix('ovmfgen-')}: {g.get('verdict')}"
                      f" ({_fmt_seconds(g.get('wall_seconds'))})"
                      + (f" · {g['secure_boot']}" if g.get("secure_boot") else "")
                      + (f" · {g['why_not']}" if g.get("why_not") else ""))
            glog = g.get("log")
            parts.append(f'<div class="{gcls} small">' + (_link(f"{base}/{glog}", glabel) if glog else _e(glabel))
                         + "</div>")
    return "".join(parts)


def _step(record: CellRecord, name: str) -> StepRecord | None:
    for s in record.get("steps") or []:
        if s.get("name") == name:
            return s
    return None


def _cells_table(summary: Summary, base: str) -> str:
    head = ("<tr><th>Cell</th><th>Status</th><th>Duration</th><th>Build</th><th>Sizes</th><th>FV usage</th>"
            "<th>check-elf</th><th>Boot</th><th>Links</th></tr>")
    rows = [head]
    for rec in summary.get("cells") or []:
        status = str(rec.get("status"))
        build = _step(rec, "build")
        if build is None:
            build_txt = "-"
        elif build.get("status") != "passed":
            build_txt = f'<span class="small">{_e(build.get("detail"))}</span>'
        elif build.get("noop"):
            build_txt = f"no-op (built in {_fmt_seconds(build.get('build_seconds'))})"
        else:
            build_txt = _fmt_seconds(build.get("seconds"))
        sizes = "<br>".join(f"{_e(n)} {_fmt_size(v)}" for n, v in sorted((rec.get("sizes") or {}).items())) or "-"
        check = _step(rec, "check-elf")
        if check is None:
            check_txt, check_cls = "n/a", ""
        else:
            check_txt = _e(check.get("detail"))
            check_cls = "ok" if check.get("status") == "passed" else "bad"
        arts = rec.get("artifacts") or {}
        links = [_link(f"{base}/{rec.get('log')}", "cell log") if rec.get("log") else ""]
        if LOG_NAME in arts:
            links.append(_link(f"{base}/{arts[LOG_NAME]}", "build log"))
        for name in sorted(arts):
            if name != LOG_NAME:
                links.append(_link(f"{base}/{arts[name]}", name))
        error = rec.get("error")
        name_cell = f"<b>{_e(rec.get('name'))}</b>"
        if rec.get("description"):
            name_cell += f'<div class="small">{_e(rec.get("description"))}</div>'
        if status != "passed" and error:
            name_cell += f'<div class="small bad">{_e(str(error)[:300])}</div>'
        rows.append(
            f'<tr><td>{name_cell}</td><td class="{STATUS_CLASS.get(status, "")}">{_e(status)}</td>'
            f'<td class="num">{_fmt_seconds(rec.get("seconds"))}</td><td>{build_txt}</td><td class="num">{sizes}</td>'
            f'<td>{_fv_cell(rec.get("fv_usage") or {})}</td><td class="{check_cls}">{check_txt}</td>'
            f'<td>{_boot_cell(rec.get("boot") or {}, base)}</td><td class="small">{" · ".join(l for l in links if l)}'
            f"</td></tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _repro_block(summary: Summary, base: str) -> str:
    repro = summary.get("repro")
    if not isinstance(repro, dict):
        return "<p class=\"small\">No reproducibility check this night.</p>"
    status = str(repro.get("status"))
    parts = [f'<p>Cell <b>{_e(repro.get("cell"))}</b> built twice from scratch from two places: '
             f'<span class="badge {STATUS_CLASS.get(status, "")}">{_e(status)}</span> '
             f'({_fmt_seconds(repro.get("seconds"))}) - {_e(repro.get("detail", ""))} '
             f'{_link(base + "/" + str(repro.get("log")), "log") if repro.get("log") else ""}</p>']
    if repro.get("fvs") or repro.get("modules") or repro.get("files"):
        mods = [f"{m.get('module')} ({m.get('cause')})" for m in repro.get("modules") or []]
        parts.append("<p class=\"small\">Differing FVs: " + _e(", ".join(repro.get("fvs") or []) or "none")
                     + "<br>Differing EFI modules: " + _e(", ".join(mods) or "none")
                     + "<br>Differing files: " + _e(", ".join(repro.get("files") or []) or "none") + "</p>")
    return "".join(parts)


def _history_table(summaries: Sequence[Summary]) -> str:
    rows = ["<tr><th>Night</th><th>Cells</th><th>Passed</th><th>Failed</th><th>Duration</th>"
            "<th>Reproducible</th><th>Summary</th></tr>"]
    for s in reversed(summaries):
        t = s.get("totals") or NO_TOTALS
        failed = int(t.get("failed", 0))
        repro = s.get("repro") if isinstance(s.get("repro"), dict) else None
        repro_txt = f"{repro.get('status')} ({repro.get('cell')})" if repro else "-"
        date = str(s.get("date"))
        rows.append(f'<tr><td>{_e(date)}</td><td class="num">{t.get("cells", 0)}</td>'
                    f'<td class="num">{t.get("passed", 0)}</td>'
                    f'<td class="num {"bad" if failed else "ok"}">{failed}</td>'
                    f'<td class="num">{_fmt_seconds(s.get("seconds"))}</td><td>{_e(repro_txt)}</td>'
                    f'<td>{_link(date + "/summary.json", "summary.json")}</td></tr>')
    return "<table>" + "\n".join(rows) + "</table>"


def _charts(summaries: Sequence[Summary]) -> str:
    dates = [str(s.get("date")) for s in summaries]
    cells: list[str] = []
    for s in summaries:
        for rec in s.get("cells") or []:
            if rec.get("name") not in cells:
                cells.append(str(rec.get("name")))
    by_night = [{str(r.get("name")): r for r in s.get("cells") or []} for s in summaries]
    charts = []
    build_series: dict[str, list[float | None]] = {}
    for cell in cells:
        build_series[cell] = []
        for night in by_night:
            night_rec = night.get(cell)
            step = _step(night_rec, "build") if night_rec else None
            # The edk2 build that produced the night's firmware (a no-op night repeats the earlier build's time).
            secs = (step.get("build_seconds") or step.get("seconds")) if step and step.get("status") == "passed" else None
            build_series[cell].append(float(secs) if secs is not None else None)
    charts.append(line_chart_svg("Build time per cell (s)", dates, build_series, "seconds"))
    for cell in cells:
        fvs: list[str] = []
        for night in by_night:
            for fv in night.get(cell, NO_CELL).get("fv_usage") or {}:
                if fv not in fvs:
                    fvs.append(fv)
        if not fvs:
            continue
        series: dict[str, list[float | None]] = {}
        for fv in sorted(fvs):
            vals: list[float | None] = []
            for night in by_night:
                usage = (night.get(cell, NO_CELL).get("fv_usage") or {}).get(fv) or FvUsage()
                pct = usage.get("percent_full")
                vals.append(float(pct) if pct is not None else None)
            series[fv] = vals
        charts.append(line_chart_svg(f"{cell}: FD/FV usage (% full)", dates, series, "% full", y_max=100))
    return '<div class="charts">' + "".join(f'<div class="chart">{c}</div>' for c in charts) + "</div>"


def render_index(summaries: Sequence[Summary]) -> str:
    """The whole page for ``summaries`` (oldest first; the last one is the latest night)."""
    if not summaries:
        body = "<h1>ovmfgen nightly</h1><p>No nights recorded yet: run <code>invoke nightly</code>.</p>"
    else:
        latest = summaries[-1]
        date = str(latest.get("date"))
        t = latest.get("totals") or NO_TOTALS
        failed = int(t.get("failed", 0))
        edk2 = latest.get("edk2") if isinstance(latest.get("edk2"), dict) else {}
        edk2_txt = f" · edk2 {_e((edk2 or {}).get('tag') or (edk2 or {}).get('commit') or '?')}" if edk2 else ""
        badge = (f'<span class="badge {"bad" if failed else "ok"}">{t.get("passed", 0)}/{t.get("cells", 0)} '
                 f'cells passed</span>')
        body = "\n".join([
            "<h1>ovmfgen nightly</h1>",
            f'<div class="sub">Night of <b>{_e(date)}</b> {badge} · {_fmt_seconds(latest.get("seconds"))} with '
            f'{_e(latest.get("jobs"))} job(s) on {_e(latest.get("cpus"))} CPU(s){edk2_txt} · matrix '
            f'{_e(latest.get("matrix"))}</div>',
            "<h2>Cells</h2>", _cells_table(latest, date),
            "<h2>Reproducibility</h2>", _repro_block(latest, date),
            f"<h2>History (last {len(summaries)} night(s))</h2>", _charts(summaries), _history_table(summaries),
        ])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>ovmfgen nightly</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_index(out: Path) -> Path:
    """Regenerate ``out/index.html`` from the nights kept in ``out``."""
    out = Path(out)
    path = out / INDEX
    atomic_write_bytes(path, render_index(read_summaries(out)).encode("utf-8"))
    os.chmod(path, 0o644)  # served as is by a web server
    return path

