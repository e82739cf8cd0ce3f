"""ovmfgen.builder.stuart: progress from the build's output."""

from __future__ import annotations

from pathlib import Path

from ovmfgen.builder import stuart as build_stuart
from ovmfgen.builder.stuart import Progress

EDK2 = "/c/edk2/tree"  # where the log says the modules are


def test_progress_counts_modules(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    prog = Progress("xen-pvh DEBUG", interactive=False, stream=out, every=0)
    prog.feed("INFO - ....... done!", lambda: 3)
    prog.feed(f"INFO - Building ... {EDK2}/A/A.inf [X64]")
    prog.feed(f"INFO - Building ... {EDK2}/B/B.inf [X64]")
    prog.feed(f"INFO - Building ... {EDK2}/B/B.inf [X64]")
    assert (prog.done, prog.total) == (2, 3)
    assert "2/3 modules (66%)" in out.getvalue().splitlines()[-1]
    prog.feed("INFO - Generating FVMAIN_COMPACT FV")
    assert prog.phase == "GenFds"
    tty = io.StringIO()
    bar = Progress("x", interactive=True, stream=tty)
    bar.total = 4
    bar.done = 2
    bar.show(force=True)
    bar.close()
    assert "\r" in tty.getvalue() and "[##############..............] " in tty.getvalue()
    ws = tmp_path / "X64"
    for mod in ("a/A", "b/B"):
        (ws / mod).mkdir(parents=True)
        (ws / mod / "GNUmakefile").write_text("")
    assert build_stuart.count_module_makefiles(ws) == 2
