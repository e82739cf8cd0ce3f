"""The nightly matrix: nightly.yaml parsing and checks, cell selection, --list, the reproducibility rotation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import REPO, linked_git_checkout, matrix_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly import command, matrix
from ovmfgen.nightly.matrix import Cell
from ovmfgen.run import run




SMALL = [
    {"name": "a-DEBUG-2M", "platform": "xen-pvh", "target": "DEBUG", "fd_size": "2M", "boot": ["pvh", "reset"]},
    {"name": "a-RELEASE-4M", "platform": "xen-pvh", "target": "RELEASE", "fd_size": "4M"},
    {"name": "q-DEBUG", "platform": "qemu-x64", "boot": ["shell"]},
    {"name": "a-xenboot", "platform": "xen-pvh", "boot": ["xen"], "optional": True},
    {"name": "a-needs-missing", "platform": "xen-pvh", "requires": "ovmfgen.no_such_module"},
]


# --- the matrix ---------------------------------------------------------------------------------

def test_the_shipped_matrix_parses_and_covers_the_required_cells():
    m = matrix.load_matrix(REPO / "nightly.yaml")
    by = {c.name: c for c in m.cells}
    for name, target, size in (("xen-pvh-DEBUG-2M", "DEBUG", "2M"), ("xen-pvh-DEBUG-4M", "DEBUG", "4M"),
                               ("xen-pvh-RELEASE-2M", "RELEASE", "2M"), ("xen-pvh-RELEASE-4M", "RELEASE", "4M")):
        assert (by[name].platform, by[name].target, by[name].fd_size) == ("xen-pvh", target, size)
    assert by["xen-pvh-DEBUG-2M"].boot == ("pvh", "reset") and by["xen-pvh-DEBUG-4M"].boot == ("pvh", "reset")
    assert by["qemu-x64-DEBUG"].platform == "qemu-x64" and by["qemu-x64-DEBUG"].boot == ("shell",)
    newest = by["qemu-x64-DEBUG-edk2-stable202605"]
    assert (newest.platform, newest.edk2, newest.boot) == ("qemu-x64", "edk2-stable202605", ("shell",))
    xen = by["xen-pvh-DEBUG-hvcon-xen417"]
    assert xen.optional and xen.boot == ("xen",) and xen.requires == "ovmfgen.boot.xen"
    assert "debug_output=hypervisor-console" in xen.features and xen.fd_size == "2M"
    # The guest set, the 4 MiB PVH guest, the 128-vCPU guests to the Shell and to Linux's CPU count, in ONE
    # nested boot.
    assert xen.xen_guests == ("pvh-shell", "pvh-os", "hvm-shell", "hvm-os", "pvh-ud2", "pvh-shell-4M",
                              "pvh-shell-128cpus", "hvm-shell-128cpus", "pvh-smp-128cpus", "hvm-smp-128cpus")
    assert xen.xen is None and by["xen-pvh-DEBUG-hvcon-xen420"].xen == "4.20"
    assert by["xen-pvh-DEBUG-hvcon-xen420"].xen_guests == xen.xen_guests
    # Above a build's processor limit: 96 vCPUs for a build with room for 64, on both versions.
    for version in ("417", "420"):
        limited = by[f"xen-pvh-DEBUG-maxcpus-64-xen{version}"]
        assert "max_cpus=64" in limited.features and limited.xen_guests == ("pvh-shell-96cpus", "hvm-shell-96cpus")
    assert all(c.ccache for c in m.cells)
    assert set(m.repro_rotate) <= set(by) and m.repro_rotate
    assert {s.cell for s in m.install} <= set(by)


def test_cell_names_default_from_the_variant():
    m = matrix_of([{"platform": "xen-pvh", "target": "release", "fd_size": "4", "features": ["timer=acpi"]},
                 {"platform": "xen-pvh", "fd_size": "2M", "edk2": "edk2-stable202605"}])
    assert m.cells[0].name == "xen-pvh-RELEASE-4M-acpi"
    assert m.cells[0].target == "RELEASE" and m.cells[0].fd_size == "4M" and m.cells[0].edk2 is None
    assert m.cells[1].name == "xen-pvh-DEBUG-2M-edk2-stable202605" and m.cells[1].edk2 == "edk2-stable202605"
    assert Cell.from_json(json.loads(json.dumps(m.cells[1].to_json()))) == m.cells[1]


def test_the_shipped_matrix_has_a_tree_axis():
    """At least DEBUG 2M on the newest edk2, booted through both entries."""
    by = {c.name: c for c in matrix.load_matrix(REPO / "nightly.yaml").cells}
    new = by["xen-pvh-DEBUG-2M-edk2-stable202605"]
    assert (new.platform, new.target, new.fd_size, new.edk2) == ("xen-pvh", "DEBUG", "2M", "edk2-stable202605")
    assert new.boot == ("pvh", "reset") and not new.optional


@pytest.mark.parametrize("cells, top, message", [
    ([{"name": "x", "platform": "p", "colour": "red"}], {}, "unknown key 'colour'"),
    ([{"name": "x"}], {}, "missing 'platform'"),
    ([{"name": "x", "platform": "p"}, {"name": "x", "platform": "p"}], {}, "two cells are called 'x'"),
    ([{"name": "x", "platform": "p", "boot": ["uefi"]}], {}, "boot 'uefi' is not one of"),
    ([{"name": "x", "platform": "p", "target": "RELEASE", "boot": ["pvh"]}], {}, "RELEASE build prints no DEBUG"),
    ([{"name": "x", "platform": "p", "target": "FAST"}], {}, "bad target"),
    ([{"name": "x", "platform": "p", "fd_size": "3M"}], {}, "bad FD size"),
    ([{"name": "x y", "platform": "p"}], {}, "a cell name is"),
    ([{"name": "x", "platform": "p"}], {"reproducibility": {"rotate": ["y"]}}, "rotate names no cell 'y'"),
    ([{"name": "x", "platform": "p"}], {"install": [{"cell": "x", "firmware": "/usr/x"}]}, "relative path"),
    ([{"name": "x", "platform": "p"}], {"install": [{"cell": "x"}]}, "needs 'firmware'"),
    ([], {}, "non-empty list"),
    ([{"name": "x", "platform": "p", "edk2": "edk2-stable209912"}], {},
     "error: edk2 'edk2-stable209912' is not a known tag \\(known: edk2-stable202502, edk2-stable202605\\)"),
])
def test_bad_matrices_are_one_line_errors(cells, top, message):
    with pytest.raises(OvmfgenError, match=message):
        matrix_of(cells, **top)


def test_selection_default_match_exclude_and_exact_cells():
    m = matrix_of(SMALL)
    names = lambda cells: [c.name for c in cells]  # noqa: E731
    # Default: everything but optional and unavailable cells, in matrix order.
    assert names(matrix.select_cells(m)) == ["a-DEBUG-2M", "a-RELEASE-4M", "q-DEBUG"]
    assert names(matrix.select_cells(m, match=["4M"])) == ["a-RELEASE-4M"]
    assert names(matrix.select_cells(m, match=["DEBUG"], exclude=["q-"])) == ["a-DEBUG-2M"]
    assert names(matrix.select_cells(m, exclude=["RELEASE", "DEBUG-2M"])) == ["q-DEBUG"]
    # An optional cell runs when a pattern or --cell names it; "xen" also matches nothing else here.
    assert names(matrix.select_cells(m, match=["xen"])) == ["a-xenboot"]
    assert names(matrix.select_cells(m, names=["a-xenboot", "q-DEBUG"])) == ["q-DEBUG", "a-xenboot"]
    # A cell whose module is missing is never selected, even by name.
    assert names(matrix.select_cells(m, match=["needs"])) == []
    with pytest.raises(OvmfgenError, match="no cell 'nope'"):
        matrix.select_cells(m, names=["nope"])


def test_list_shows_every_cell_with_its_description_and_flags(capsys):
    m = matrix_of([*SMALL[:3], {**SMALL[3], "description": "real Xen, slow"}, SMALL[4]])
    lines = matrix.list_text(m).splitlines()
    assert [ln.split()[0] for ln in lines] == [c["name"] for c in SMALL]
    assert lines[3].endswith("real Xen, slow [optional]")
    assert "[unavailable: needs ovmfgen.no_such_module]" in lines[4]
    assert command.nightly_command(matrix=str(REPO / "nightly.yaml"), list_cells=True) is None
    out = capsys.readouterr().out
    assert "xen-pvh-DEBUG-4M" in out and "qemu-x64-DEBUG" in out


def test_the_xen_cell_is_selectable_with_match_xen_when_xen_py_is_present():
    m = matrix.load_matrix(REPO / "nightly.yaml")
    selected = [c.name for c in matrix.select_cells(m, match=["xen"])]
    assert "xen-pvh-DEBUG-hvcon-xen417" in selected
    assert "xen-pvh-DEBUG-hvcon-xen417" not in [c.name for c in matrix.select_cells(m)]


def test_xen_guests_are_read_normalised_and_survive_the_cell_process_json():
    m = matrix_of([{"name": "x", "platform": "xen-pvh", "boot": ["xen"], "xen_guests": ["pvh-shell", "pvh-shell-4mb"]},
                 {"name": "y", "platform": "xen-pvh", "boot": ["xen"]}])
    assert m.cells[0].xen_guests == ("pvh-shell", "pvh-shell-4M") and m.cells[1].xen_guests == ()
    assert matrix.Cell.from_json(m.cells[0].to_json()) == m.cells[0]


def test_the_reproducibility_cell_rotates_with_the_date():
    m = matrix_of(SMALL, reproducibility={"rotate": ["a-DEBUG-2M", "a-RELEASE-4M", "q-DEBUG"]})
    sel = matrix.select_cells(m)
    picks = [matrix.repro_cell_for(m, f"2025-03-{d:02d}", sel).name for d in range(1, 7)]
    assert sorted(set(picks)) == ["a-DEBUG-2M", "a-RELEASE-4M", "q-DEBUG"]
    assert picks[:3] == picks[3:]                                      # a 3-day cycle
    assert matrix.repro_cell_for(m, "2025-03-01", sel) == matrix.repro_cell_for(m, "2025-03-01", sel)
    assert matrix.repro_cell_for(m, "2025-03-01", [m.cell("q-DEBUG")]).name == "q-DEBUG"  # only selected cells
    assert matrix.repro_cell_for(matrix_of(SMALL), "2025-03-01", sel) is None


def test_cells_round_trip_through_json():
    cell = matrix_of(SMALL).cells[0]
    assert Cell.from_json(json.loads(json.dumps(cell.to_json()))) == cell


# --- nightly.yaml errors: one located line ----------------------------------------------------------

INVALID = sorted((REPO / "tests" / "invalid-nightly").glob("*.yaml"))
# Cases that load and fail only when `invoke nightly` checks the switches against the platform and its tree.
SWITCH_CASES = frozenset({"unread-define", "unread-feature", "feature-define"})
# The same for a cell of an edk2 checkout ($OVMFGEN_TEST_CHECKOUT: ``checkout_202605``), checked before any cell runs.
CHECKOUT_SWITCH_CASES = frozenset({"checkout-unread-feature", "checkout-unread-define", "checkout-bad-key-set"})


def _expected(case: Path) -> str:
    first = case.read_bytes().split(b"\n", 1)[0].decode("utf-8")  # not-utf8.yaml: only its first line decodes
    assert first.startswith("# expect: "), f"{case.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_enough_invalid_matrix_cases():
    assert len(INVALID) >= 25


LOAD_CASES = [p for p in INVALID if p.stem not in SWITCH_CASES | CHECKOUT_SWITCH_CASES]


@pytest.mark.parametrize("case", LOAD_CASES, ids=[p.stem for p in LOAD_CASES])
def test_invalid_matrix_case(case: Path):
    with pytest.raises(OvmfgenError) as info:
        matrix.load_matrix(case)
    assert str(info.value) == _expected(case)


@pytest.mark.parametrize("name", sorted(SWITCH_CASES))
def test_a_switch_no_platform_file_reads_is_located_in_the_matrix(name: str, edk2_tree) -> None:
    """A cell's define or feature that its platform never reads: one line at the switch, before any build."""
    case = REPO / "tests" / "invalid-nightly" / f"{name}.yaml"
    m = matrix.load_matrix(case)
    with pytest.raises(OvmfgenError) as info:
        command.check_switches(m.cells)
    assert str(info.value) == _expected(case)


@pytest.fixture
def checkout_202605(edk2_tree_202605, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A git checkout one commit past edk2-stable202605 (``helpers.linked_git_checkout``), never set up; its
    directory is in $OVMFGEN_TEST_CHECKOUT (what the checkout-* cases name)."""
    root, describe = linked_git_checkout(edk2_tree_202605, tmp_path / "edk2")
    monkeypatch.setenv("OVMFGEN_TEST_CHECKOUT", str(root))
    return root, describe


@pytest.mark.parametrize("name", sorted(CHECKOUT_SWITCH_CASES))
def test_a_checkout_cells_switches_are_checked_before_the_night(name: str, checkout_202605) -> None:
    """A checkout cell's feature or define its platform does not take on that checkout: one line at the
    switch in nightly.yaml, from the main process, with the checkout named by git and not set up."""
    case = REPO / "tests" / "invalid-nightly" / f"{name}.yaml"
    m = matrix.load_matrix(case)
    with pytest.raises(OvmfgenError) as info:
        command.check_switches(m.cells)
    assert str(info.value) == _expected(case)


def test_invoke_nightly_refuses_a_checkout_cells_switch_in_one_line_before_any_cell(checkout_202605,
                                                                                    tmp_path: Path) -> None:
    case = REPO / "tests" / "invalid-nightly" / "checkout-bad-key-set.yaml"
    proc = run([sys.executable, "-m", "ovmfgen", "nightly", "--matrix", str(case.relative_to(REPO)),
                "--out", str(tmp_path / "night")], cwd=REPO, check=False)
    assert proc.returncode == 1
    assert proc.stdout.strip() == _expected(case)  # run() merges stderr into stdout
    assert not (tmp_path / "night").exists()      # nothing started, nothing written


def test_a_checkout_cell_is_checked_at_the_checkouts_position(checkout_202605, edk2_tree, tmp_path: Path) -> None:
    """SDCARD_ENABLE is read by qemu-x64 from edk2-stable202605 on (OvmfOptHwDefines.dsc.inc), not before:
    on the checkout past 202605 the define is taken; the same cell on the default tree (202502) is refused.
    A checkout named by ``path:`` is found from the matrix file's directory."""
    root, describe = checkout_202605
    assert describe.startswith("edk2-stable202605-1-g")
    text = ("cells:\n"
            "  - name: upstream\n    platform: qemu-x64\n    edk2: {path: edk2}\n    defines: [SDCARD_ENABLE=TRUE]\n"
            "  - name: default\n    platform: qemu-x64\n    defines: [SDCARD_ENABLE=TRUE]\n")
    (tmp_path / "nightly.yaml").write_text(text)
    m = matrix.load_matrix(tmp_path / "nightly.yaml")
    command.check_switches([m.cell("upstream")], tmp_path)
    assert edk2_tree.tag == "edk2-stable202502"
    with pytest.raises(OvmfgenError) as info:
        command.check_switches([m.cell("default")], tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'nightly.yaml'}:8:15: error: define SDCARD_ENABLE=TRUE: no file "
                                      "of platform qemu-x64 reads SDCARD_ENABLE")


def test_a_checkout_cell_whose_checkout_is_missing_is_left_to_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not found (the variable unset): no error here; ``locate_checkouts`` fails that cell in its record."""
    monkeypatch.delenv("OVMFGEN_TEST_CHECKOUT", raising=False)
    m = matrix.load_matrix(REPO / "tests" / "invalid-nightly" / "checkout-unread-feature.yaml")
    command.check_switches(m.cells)


def test_the_shipped_matrix_switches_are_all_read(edk2_tree) -> None:
    m = matrix.load_matrix(REPO / "nightly.yaml")
    assert any(c.features for c in m.cells)
    command.check_switches(m.cells)


@pytest.mark.parametrize("name", ["bad-boot", "not-utf8", "invalid-yaml"])
def test_a_bad_matrix_is_one_located_line_and_exit_status_1(name: str):
    case = REPO / "tests" / "invalid-nightly" / f"{name}.yaml"
    proc = run([sys.executable, "-m", "ovmfgen", "nightly", "--matrix", str(case), "--list"], cwd=REPO, check=False)
    assert proc.returncode == 1
    assert proc.stdout.strip() == _expected(case)  # run() merges stderr into stdout
    assert "Traceback" not in proc.stdout


def test_a_missing_matrix_file_is_located_too(tmp_path: Path):
    with pytest.raises(OvmfgenError) as info:
        matrix.load_matrix(tmp_path / "nightly.yaml")
    assert str(info.value) == f"{tmp_path / 'nightly.yaml'}: error: no such matrix file"


# --- robustness (hypothesis): any edit of nightly.yaml is a Matrix or one located error ----------------

# OVMFGEN_HYPOTHESIS_EXAMPLES raises the example count for a deeper search (default: fast enough for CI).
EXAMPLES = settings(max_examples=int(os.environ.get("OVMFGEN_HYPOTHESIS_EXAMPLES", "100")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SHIPPED = (REPO / "nightly.yaml").read_bytes().splitlines(keepends=True)
# What a character change writes: random bytes, or YAML syntax (tags, anchors, aliases, flow collections).
YAML_BITS = st.one_of(st.binary(min_size=1, max_size=3), st.sampled_from(
    [b"!!int ", b"!!float ", b"!!binary ", b"!!timestamp ", b"!foo ", b"&a ", b"*a ", b"[", b"{", b"- ", b": ", b"~",
     b"\t", b"\xef\xbb\xbf", b"\x00"]))


def _loads_or_says_where(tmp_path: Path, data: bytes) -> None:
    case = tmp_path / "nightly.yaml"
    case.write_bytes(data)
    try:
        matrix.load_matrix(case)
    except OvmfgenError as exc:
        assert exc.location is not None and exc.location.path == str(case) and exc.location.line >= 1, str(exc)
        assert "\n" not in str(exc)


@EXAMPLES
@given(st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "swap", "change"]),
                          st.integers(0, len(SHIPPED) - 1), st.integers(0, 200), YAML_BITS),
                min_size=1, max_size=4))
def test_mutations_of_the_shipped_matrix(tmp_path: Path, edits: list) -> None:
    lines = list(SHIPPED)
    for op, i, j, data in edits:
        i %= len(lines)
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            k = j % len(lines)
            lines[i], lines[k] = lines[k], lines[i]
        elif op == "change":
            k = j % max(1, len(lines[i]))
            lines[i] = lines[i][:k] + data + lines[i][k + 1:]
    _loads_or_says_where(tmp_path, b"".join(lines))


@EXAMPLES
@given(st.binary(max_size=512))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    _loads_or_says_where(tmp_path, data)


def test_on_tree_moves_cells_to_another_edk2_and_renames_them():
    m = matrix.load_matrix(REPO / "nightly.yaml")
    cells = matrix.select_cells(m, names=["xen-pvh-DEBUG-2M", "xen-pvh-DEBUG-4M", "xen-pvh-DEBUG-2M-edk2-stable202605"])
    moved = matrix.on_tree(cells, "edk2-stable202605")
    assert [c.name for c in moved] == ["xen-pvh-DEBUG-2M-edk2-stable202605", "xen-pvh-DEBUG-4M-edk2-stable202605"]
    assert all(c.edk2 == "edk2-stable202605" for c in moved) and moved[1].fd_size == "4M"
    assert matrix.on_tree(cells, None) == cells
    with pytest.raises(OvmfgenError, match="--edk2 'edk2-stable209912' is not a known tag"):
        matrix.on_tree(cells, "edk2-stable209912")


# --- a cell of an edk2 checkout ----------------------------------------------------------------------

def test_a_checkout_cell_names_its_tree_and_travels_as_json(tmp_path: Path) -> None:
    m = matrix_of([{"platform": "xen-pvh", "fd_size": "2M", "edk2": {"env": "OVMFGEN_EDK2_UPSTREAM"}},
                   {"platform": "xen-pvh", "edk2": {"path": "../edk2", "branch": "stable/202605"}}])
    env, path = m.cells
    assert (env.name, env.edk2, env.checkout) == ("xen-pvh-DEBUG-2M-edk2-master", None,
                                                  matrix.Checkout(env="OVMFGEN_EDK2_UPSTREAM"))
    assert path.name == "xen-pvh-DEBUG-edk2-stable202605" and path.checkout == matrix.Checkout(path="../edk2",
                                                                                                branch="stable/202605")
    assert Cell.from_json(json.loads(json.dumps(env.to_json()))) == env
    assert "[edk2 checkout $OVMFGEN_EDK2_UPSTREAM]" in env.line()
    assert env.request().edk2 is None       # the cell's process makes the checkout its default tree
    assert matrix.on_tree([env], "edk2-stable202605") == [env]   # it names its tree itself


def test_a_checkout_is_located_or_one_line_saying_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVMFGEN_EDK2_UPSTREAM", raising=False)
    env = matrix.Checkout(env="OVMFGEN_EDK2_UPSTREAM")
    with pytest.raises(OvmfgenError, match=r"^error: edk2 checkout: \$OVMFGEN_EDK2_UPSTREAM is not set \(point it at an "
                                           r"edk2 checkout: git clone --recurse-submodules .*edk2.git DIR\)$"):
        env.locate(tmp_path)
    monkeypatch.setenv("OVMFGEN_EDK2_UPSTREAM", str(tmp_path / "gone"))
    with pytest.raises(OvmfgenError, match=rf"^error: edk2 checkout \$OVMFGEN_EDK2_UPSTREAM={tmp_path}/gone: no such "
                                           r"directory$"):
        env.locate(tmp_path)
    (tmp_path / "gone").mkdir()
    with pytest.raises(OvmfgenError, match=r"gone: not an edk2 tree \(no OvmfPkg/\)$"):
        env.locate(tmp_path)
    (tmp_path / "gone" / "OvmfPkg").mkdir()
    assert env.locate(tmp_path) == (tmp_path / "gone").resolve()
    # A path is taken from the matrix file's directory.
    (tmp_path / "conf").mkdir()
    assert matrix.Checkout(path="../gone").locate(tmp_path / "conf") == (tmp_path / "gone").resolve()
    with pytest.raises(OvmfgenError, match=r"^error: edk2 checkout edk2: no such directory$"):
        matrix.Checkout(path="edk2").locate(tmp_path / "conf")
