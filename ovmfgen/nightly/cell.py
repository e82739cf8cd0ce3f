"""One nightly cell, in its own process: build, check-elf, boots; writes ``<dir>/result.json`` (always).

Started by ``ovmfgen.nightly.jobs`` as ``python -m ovmfgen.nightly.cell cell|repro --spec JSON --dir DIR
[--threads N]`` (``repro``: the reproducibility check of ``ovmfgen.nightly.repro``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ovmfgen import elf
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.shell import boot_qemu_shell
from ovmfgen.boot import xen
from ovmfgen.boot.xen.guests import parse_guest_spec
from ovmfgen.boot.xen.nested import SUMMARY_NAME as XEN_SUMMARY
from ovmfgen.boot.xen.nested import with_disks
from ovmfgen.boot.xen.verdicts import SecureBootState
from ovmfgen.builder import command as build_cmd
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import ELF_NAME, LOG_NAME
from ovmfgen.platform.resolve import resolve
from ovmfgen.nightly.history import CELL_LOG, RESULT, write_public
from ovmfgen.nightly.matrix import Cell
from ovmfgen.nightly.records import BootRecord, CellRecord, ReproRecord, StepRecord, XenGuestRecord
from ovmfgen.nightly.repro import run_repro
from ovmfgen.ui import say, setup_logging


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)  # dist/ files are replaced, never rewritten in place: a link is a snapshot
    except OSError:
        shutil.copy2(src, dst)


def _step(steps: list[StepRecord], name: str, fn: Callable[[], tuple[bool, str, StepRecord]]) -> bool:
    """Run one step, timing it; an exception is the step's failure, never the night's."""
    t0 = time.monotonic()
    say(f"step {name}")
    try:
        ok, detail, extra = fn()
    except OvmfgenError as exc:
        ok, detail, extra = False, exc.message if not exc.location else str(exc).removeprefix("error: "), StepRecord()
    except Exception as exc:  # a bug must fail the cell, not the night
        traceback.print_exc()
        ok, detail, extra = False, f"internal error: {type(exc).__name__}: {exc}", StepRecord()
    rec = StepRecord(name=name, status="passed" if ok else "failed", seconds=round(time.monotonic() - t0, 1),
                     detail=detail)
    rec.update(extra)
    steps.append(rec)
    say(f"step {name}: {rec['status']} in {rec['seconds']} s - {detail}")
    return ok


def _rel(path: Path, base: Path) -> str:
    return path.resolve().relative_to(base.resolve()).as_posix()


def run_cell(cell: Cell, cell_dir: Path, threads: int | None = None) -> CellRecord:
    """Build, check and boot one cell; everything it writes goes into ``cell_dir``. Returns its record.

    ``cell_dir`` is ``<night>/cells/<name>``: paths in the record are relative to the night.
    """
    cell_dir = Path(cell_dir).resolve()
    night = cell_dir.parent.parent
    cell_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    steps: list[StepRecord] = []
    record: CellRecord = {"name": cell.name, "cell": cell.to_json(), "platform": cell.platform, "target": cell.target,
                    "edk2": cell.edk2,
                    "fd_size": cell.fd_size, "features": list(cell.features), "description": cell.description,
                    "artifacts": {}, "boot": {}, "steps": steps}

    def do_build() -> tuple[bool, str, StepRecord]:
        result = build_cmd.build(resolve(cell.request(jobs=threads)))
        manifest = result.manifest
        art = cell_dir / "artifacts"
        for name in sorted(os.listdir(result.dist)):
            if (result.dist / name).is_file():
                _link_or_copy(result.dist / name, art / name)
                record["artifacts"][name] = _rel(art / name, night)
        record["dist"] = display_path(result.dist)
        record["manifest"] = {k: manifest.get(k) for k in (
            "fd_size", "features", "defines", "version_string", "release_date", "input_hash", "edk2", "build_seconds",
            "stuart_command", "jobs", "ccache")}
        record["sizes"] = {n: o.get("size") for n, o in (manifest.get("outputs") or {}).items()
                           if n != LOG_NAME}
        record["fv_usage"] = manifest.get("fv_usage") or {}
        record["fd_size"] = manifest.get("fd_size") or cell.fd_size
        how = "up to date (no-op)" if result.noop else f"built in {result.seconds:.0f} s"
        return True, f"{how}: {display_path(result.dist)}", {"noop": result.noop,
                                                             "build_seconds": manifest.get("build_seconds")}

    if _step(steps, "build", do_build):
        art = cell_dir / "artifacts"
        elf_path = art / ELF_NAME
        fd_path = next((art / n for n in record["artifacts"] if n.endswith(".fd")), None)
        if elf_path.is_file():
            def do_check() -> tuple[bool, str, StepRecord]:
                findings = elf.check_elf(elf_path.read_bytes())
                failed = [f for f in findings if not f.ok]
                detail = f"{len(findings) - len(failed)}/{len(findings)} loader rules pass" + (
                    f"; first failure {failed[0].rule}: {failed[0].detail}" if failed else "")
                return not failed, detail, {"rules": len(findings), "failed_rules": [f.rule for f in failed]}

            _step(steps, "check-elf", do_check)
        for kind in cell.boot:
            if kind in ("pvh", "reset"):
                def do_boot(entry: str = kind) -> tuple[bool, str, StepRecord]:
                    if not elf_path.is_file():
                        raise OvmfgenError(f"the build published no {ELF_NAME} to boot")
                    r = (boot_qemu(elf_path, entry, cell_dir, timeout=cell.timeout) if cell.timeout
                         else boot_qemu(elf_path, entry, cell_dir))
                    record["boot"][entry] = {"verdict": r.verdict.value, "seconds": round(r.duration or 0, 1),
                                             "log": _rel(r.log_path, night) if r.log_path else None,
                                             "detail": r.detail, "ok": r.ok}
                    return r.ok, f"{r.verdict.value} in {r.duration or 0:.1f} s - {r.detail}", {"verdict": r.verdict.value}
                _step(steps, f"boot-{kind}", do_boot)
            elif kind == "shell":
                def do_shell() -> tuple[bool, str, StepRecord]:
                    if fd_path is None:
                        raise OvmfgenError("the build published no .fd to boot")
                    r = (boot_qemu_shell(fd_path, cell_dir, timeout=cell.timeout) if cell.timeout
                         else boot_qemu_shell(fd_path, cell_dir))
                    # The split pflash images are inputs of the boot; keep them as artifacts too.
                    for name in ("OVMF_CODE.fd", "OVMF_VARS.fd"):
                        record["artifacts"][name] = _rel(cell_dir / name, night)
                    record["boot"]["shell"] = {"verdict": r.verdict, "ok": r.ok, "seconds": r.duration,
                                               "log": _rel(r.serial_log, night),
                                               "debug_log": _rel(r.debug_log, night), "detail": r.detail}
                    return r.ok, f"{r.verdict} in {r.duration:.1f} s - {r.detail}", {"verdict": r.verdict}
                _step(steps, "boot-shell", do_shell)
            elif kind == "xen":
                _xen_steps(cell, cell_dir, night, elf_path, record, steps, threads)
    failed = [s["name"] for s in steps if s["status"] != "passed"]
    record["status"] = "failed" if failed else "passed"
    record["failed_steps"] = failed
    record["error"] = next((s["detail"] for s in steps if s["status"] != "passed"), None)
    record["seconds"] = round(time.monotonic() - t0, 1)
    record["log"] = _rel(cell_dir / CELL_LOG, night)
    return record


def xen_guests_of(cell: Cell, elf_path: Path, images: dict[str, Path]) -> list[xen.XenGuest]:
    """The cell's Xen guests (``xen_guests``, default ``pvh-shell``), each with the image it boots.

    ``images`` maps an FD size (``4M``) to the ELF of that size's build; a guest without a size
    boots the cell's own ``elf_path``.
    """
    specs = [parse_guest_spec(t) for t in cell.xen_guests or ("pvh-shell",)]
    return [s.guest(images[s.fd_size] if s.fd_size else elf_path) for s in specs]


def secure_boot_text(sb: dict[str, object]) -> str:
    """A guest's ``secure_boot`` record (xen-boot.json) in one line: on/off and the evidence."""
    fields = SecureBootState.__dataclass_fields__
    return SecureBootState(**{k: v for k, v in sb.items() if k in fields}).text  # type: ignore[arg-type]


def xen_boot_record(outcomes: Sequence[xen.GuestOutcome], out_dir: Path, night: Path) -> BootRecord:
    """The cell's ``boot.xen`` record: all guests' verdicts (from the run's xen-boot.json) and one overall line."""
    summary = json.loads((out_dir / XEN_SUMMARY).read_text(encoding="utf-8"))
    guests: list[XenGuestRecord] = []
    for g in summary.get("guests") or []:
        rec = XenGuestRecord(name=g.get("name"), mode=g.get("mode"), payload=g.get("payload"),
                             variant=g.get("variant") or "", verdict=g.get("verdict"), expected=g.get("expected"),
                             ok=bool(g.get("ok")), detail=g.get("detail") or "",
                             seconds_to_shell=g.get("seconds_to_shell"), wall_seconds=g.get("wall_seconds"),
                             attempts=g.get("attempts") or 1)
        if g.get("log"):
            rec["log"] = _rel(out_dir / g["log"], night)
        sb = g.get("secure_boot") or {}
        if any(v is not None for v in sb.values()):
            rec["secure_boot"] = secure_boot_text(sb)
        if g.get("why_not"):
            rec["why_not"] = g["why_not"]
        guests.append(rec)
    bad = [g for g in guests if not g.get("ok")]
    verdict = "ALL_EXPECTED" if not bad else ", ".join(f"{g['name']} {g['verdict']}" for g in bad)
    return BootRecord(verdict=verdict, ok=not bad, seconds=summary.get("seconds"), xen=summary.get("xen"),
                      log=_rel(out_dir / XEN_SUMMARY, night), runs=summary.get("runs") or [], guests=guests,
                      detail=f"{len(guests) - len(bad)}/{len(guests)} guests got their expected verdict "
                             f"in one nested Xen {summary.get('xen')} boot")


def _xen_steps(cell: Cell, cell_dir: Path, night: Path, elf_path: Path, record: CellRecord,
               steps: list[StepRecord], threads: int | None) -> None:
    """A build step per other FD size the Xen guests need, then ONE nested Xen boot of all of them."""
    own = record.get("fd_size") or cell.fd_size
    images: dict[str, Path] = {}
    for size in sorted({s.fd_size for s in map(parse_guest_spec, cell.xen_guests) if s.fd_size and s.fd_size != own}):
        def do_build(size: str = size) -> tuple[bool, str, StepRecord]:
            result = build_cmd.build(resolve(cell.request(fd_size=size, jobs=threads)))
            art = cell_dir / f"artifacts-{size}"
            _link_or_copy(result.dist / ELF_NAME, art / ELF_NAME)
            record["artifacts"][f"{size}/{ELF_NAME}"] = _rel(art / ELF_NAME, night)
            images[size] = art / ELF_NAME
            how = "up to date (no-op)" if result.noop else f"built in {result.seconds:.0f} s"
            return True, f"{how}: {display_path(result.dist)}", {"noop": result.noop}
        _step(steps, f"build-{size}", do_build)
    if own:
        images.setdefault(own, elf_path)

    def do_xen() -> tuple[bool, str, StepRecord]:
        if not elf_path.is_file():
            raise OvmfgenError(f"the build published no {ELF_NAME} to boot")
        missing = sorted({s.fd_size for s in map(parse_guest_spec, cell.xen_guests)
                          if s.fd_size and s.fd_size not in images})
        if missing:
            raise OvmfgenError(f"no {', '.join(missing)} build to boot (its build step failed)")
        out_dir = cell_dir / "xen"
        guests = with_disks(xen_guests_of(cell, elf_path, images), out_dir)
        outcomes = xen.boot_xen_guests(guests, out_dir, timeout=cell.timeout, xen=cell.xen)
        rec = xen_boot_record(outcomes, out_dir, night)
        record["boot"]["xen"] = rec
        lines = "; ".join(f"{o.guest.name.removeprefix('ovmfgen-')} {xen.format_result(o.result).removeprefix('xen: ')}"
                          for o in outcomes)
        return bool(rec.get("ok")), f"{rec.get('detail')}: {lines}", {"verdict": str(rec.get("verdict"))}
    _step(steps, "boot-xen", do_xen)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a cell's process: run it and write ``<dir>/result.json`` (always)."""
    parser = argparse.ArgumentParser(prog="python -m ovmfgen.nightly.cell", description="one nightly cell (internal)")
    parser.add_argument("kind", choices=("cell", "repro"))
    parser.add_argument("--spec", required=True, help="the cell as JSON")
    parser.add_argument("--dir", required=True, help="the cell's directory")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    cell = Cell.from_json(json.loads(args.spec))
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    record: CellRecord | ReproRecord
    try:
        if args.kind == "cell":
            record = run_cell(cell, out, args.threads)
        else:
            record = run_repro(cell, out, args.threads)
    except BaseException as exc:  # noqa: BLE001 - the parent must always get a record
        traceback.print_exc()
        why = f"{type(exc).__name__}: {exc}"
        if args.kind == "cell":
            record = CellRecord(name=cell.name, cell=cell.to_json(), status="failed", error=why, steps=[])
        else:
            record = ReproRecord(cell=cell.name, status="error", error=why, detail=why)
    write_public(out / RESULT, (json.dumps(record, indent=2) + "\n").encode())
    sys.stdout.flush()
    return 0 if record.get("status") in ("passed", "identical", "differs") else 1


if __name__ == "__main__":
    sys.exit(main())
