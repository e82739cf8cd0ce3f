"""ovmfgen.platform.overrides: whole-file and patch overrides applied in order, and a patch that no longer applies;
overrides/ holds no copy of a tree's file, and xen-pvh's patches make the golden files of each tree."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from ovmfgen.boot.xen.guests import parse_guest_spec
from ovmfgen.edk2.releases import KNOWN_TAGS
from ovmfgen.nightly.matrix import load_matrix
from ovmfgen.platform.resolve import resolve, resolved
from ovmfgen.request import Request
from ovmfgen.errors import Location, OvmfgenError
from ovmfgen.paths import REPO_ROOT, Layout
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.model import Override
from ovmfgen.platform.overrides import override_files, override_sources, override_steps, patch_targets
from ovmfgen.platform.validate import validate

BDS = "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"
INF = "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"
NVVARS = "patches/PlatformBootManagerLib-NvVars-Xen-PVH.patch"
DIFF = (b"diff --git a/Pkg/A.c b/Pkg/A.c\n--- a/Pkg/A.c\n+++ b/Pkg/A.c\n@@ -5,3 +5,3 @@\n"
        b" one\r\n-two\r\n+TWO\r\n three\r\n")


class _Platform:
    """The two fields override_steps reads."""

    def __init__(self, *overrides: Override) -> None:
        self.name = "p"
        self.overrides = overrides


def _loc() -> Location:
    return Location("platforms/p.yaml", 7, 5)


def test_a_patch_applies_to_the_trees_file_and_on_top_of_a_whole_file_override(tmp_path: Path) -> None:
    tree, ov = tmp_path / "tree", tmp_path / "overrides"
    (tree / "Pkg").mkdir(parents=True)
    (tree / "Pkg/A.c").write_bytes(b"zero\r\none\r\ntwo\r\nthree\r\n")
    (ov / "Pkg").mkdir(parents=True)
    (ov / "fix.patch").write_bytes(DIFF)
    patch = Override("fix.patch", patch=True, loc=_loc())
    steps = override_steps(_Platform(patch), ov, "edk2-stable202502", tree)
    assert override_files(steps) == {"Pkg/A.c": b"zero\r\none\r\nTWO\r\nthree\r\n"}   # CRLF kept, at an offset
    assert (tree / "Pkg/A.c").read_bytes() == b"zero\r\none\r\ntwo\r\nthree\r\n"       # the tree is never written
    # After a whole-file override of the same file, the patch changes that copy: each entry is one step.
    (ov / "Pkg/A.c").write_bytes(b"one\r\ntwo\r\nthree\r\nfour\r\n")
    steps = override_steps(_Platform(Override("Pkg/A.c"), patch), ov, "edk2-stable202502", tree)
    assert [dict(s.files) for s in steps] == [{"Pkg/A.c": b"one\r\ntwo\r\nthree\r\nfour\r\n"},
                                             {"Pkg/A.c": b"one\r\nTWO\r\nthree\r\nfour\r\n"}]
    assert override_sources(steps) == {"Pkg/A.c": ("Pkg/A.c", "fix.patch")}


def test_a_patch_that_no_longer_applies_is_one_located_line(tmp_path: Path) -> None:
    tree, ov = tmp_path / "tree", tmp_path / "overrides"
    (tree / "Pkg").mkdir(parents=True)
    (tree / "Pkg/A.c").write_bytes(b"one\r\n2\r\nthree\r\n")
    ov.mkdir()
    (ov / "fix.patch").write_bytes(DIFF)
    with pytest.raises(OvmfgenError) as info:
        override_steps(_Platform(Override("fix.patch", patch=True, loc=_loc())), ov, "edk2-stable202605", tree)
    assert str(info.value) == ("platforms/p.yaml:7:5: error: override patch overrides/p/fix.patch does not apply to "
                               "edk2-stable202605: patch failed: Pkg/A.c:5 (git apply)")
    (tree / "Pkg/A.c").unlink()
    with pytest.raises(OvmfgenError, match=r"^platforms/p.yaml:7:5: error: override patch overrides/p/fix.patch "
                                           r"changes Pkg/A.c, which edk2-stable202605 does not have$"):
        override_steps(_Platform(Override("fix.patch", patch=True, loc=_loc())), ov, "edk2-stable202605", tree)


def _tree_and_fix(tmp_path: Path) -> tuple[Path, Path]:
    """A tree with Pkg/A.c and an overrides directory whose fix.patch (DIFF) changes it."""
    tree, ov = tmp_path / "tree", tmp_path / "overrides"
    (tree / "Pkg").mkdir(parents=True)
    (tree / "Pkg/A.c").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    ov.mkdir()
    (ov / "fix.patch").write_bytes(DIFF)
    return tree, ov


def test_a_carried_fix_that_no_longer_applies_is_a_one_line_note(tmp_path: Path, capsys) -> None:
    """A patch written for one release, carried to a later tree: applied while it applies; when upstream
    changed its lines it is left out with one located note (never an error, never silent)."""
    tree, ov = _tree_and_fix(tmp_path)
    later = "edk2-stable202605-3-g5ccd4da"
    carried = Override("fix.patch", patch=True, loc=_loc(), carried="edk2-stable202605")
    steps = override_steps(_Platform(carried), ov, later, tree)
    assert override_files(steps) == {"Pkg/A.c": b"one\r\nTWO\r\nthree\r\n"}
    assert capsys.readouterr().err == ""
    (tree / "Pkg/A.c").write_bytes(b"one\r\nTWO\r\nthree\r\n")     # upstream fixed it the same way
    assert override_steps(_Platform(carried), ov, later, tree) == ()
    assert capsys.readouterr().err == (
        "platforms/p.yaml:7:5: note: override patch overrides/p/fix.patch does not apply to "
        f"{later}: patch failed: Pkg/A.c:5 (git apply); written for edk2-stable202605, it is not applied to this "
        "later tree: if upstream fixed what it fixes, end its 'edk2:' at edk2-stable202605, else rewrite it\n")
    (tree / "Pkg/A.c").unlink()                                        # upstream removed the file
    assert override_steps(_Platform(carried), ov, later, tree) == ()
    assert "note: override patch overrides/p/fix.patch changes Pkg/A.c, which" in capsys.readouterr().err


def test_what_became_of_each_carried_entry_is_data(tmp_path: Path, capsys) -> None:
    """The caller can collect every carried entry (kept or left out) as one line each: what rebase and the
    nightly show; only the left-out ones are said."""
    tree, ov = _tree_and_fix(tmp_path)
    later = "edk2-stable202605-3-g5ccd4da"
    entry = Override("fix.patch", patch=True, loc=_loc(), carried="edk2-stable202605")
    plain = Override("fix.patch", patch=True, loc=_loc())
    seen: list = []
    override_steps(_Platform(entry), ov, later, tree, seen)
    assert [c.line() for c in seen] == [
        "platforms/p.yaml:7:5: note: override patch overrides/p/fix.patch, written for edk2-stable202605, still "
        f"applies to {later}: carried"]
    assert seen[0].kept and capsys.readouterr().err == ""
    seen.clear()
    override_steps(_Platform(plain), ov, "edk2-stable202605", tree, seen)   # not carried: nothing to say
    assert seen == []
    (tree / "Pkg/A.c").write_bytes(b"one\r\nTWO\r\nthree\r\n")
    override_steps(_Platform(entry), ov, later, tree, seen)
    said = capsys.readouterr().err
    assert [c.line() + "\n" for c in seen] == [said] and not seen[0].kept
    assert said.startswith("platforms/p.yaml:7:5: note: override patch overrides/p/fix.patch does not apply to ")


@pytest.mark.parametrize("diff, message", [
    (b"not a diff\n", "override patch overrides/p/x.patch is not a unified diff (no '---'/'+++' lines)"),
    (b"--- /dev/null\n+++ b/Pkg/New.c\n@@ -0,0 +1 @@\n+x\n",
     "override patch overrides/p/x.patch: expected '--- a/PATH' then '+++ b/PATH', got '/dev/null' and 'b/Pkg/New.c'"),
    (b"--- a/Pkg/A.c\n+++ b/Pkg/B.c\n@@ -1 +1 @@\n-x\n+y\n",
     "override patch overrides/p/x.patch renames, adds or deletes a file (a/Pkg/A.c -> b/Pkg/B.c): "
     "a patch override only changes existing files"),
    (b"--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-x\n+y\n",
     "override patch overrides/p/x.patch names a path outside the edk2 tree: ../etc/passwd"),
])
def test_a_patch_changes_only_existing_files_inside_the_tree(diff: bytes, message: str) -> None:
    with pytest.raises(OvmfgenError) as info:
        patch_targets(diff, "overrides/p/x.patch", Override("x.patch", patch=True, loc=_loc()))
    assert str(info.value) == f"platforms/p.yaml:7:5: error: {message}"


def test_the_nvvars_patch_applies_to_both_trees(edk2_tree, edk2_tree_202605) -> None:
    """One diff for both releases: on 202502's own files, and on 202605's after its Shell patch."""
    assert patch_targets((Layout().overrides_for("xen-pvh") / NVVARS).read_bytes(), NVVARS,
                         Override(NVVARS, patch=True)) == (BDS, INF)
    for tree in (edk2_tree, edk2_tree_202605):
        platform = load_platform("xen-pvh", edk2=tree.identity["tag"])
        files = override_files(override_steps(platform, Layout().overrides_for("xen-pvh"), tree.identity["tag"],
                                              tree.root))
        upstream = (tree.root / BDS).read_bytes()
        assert b"ConnectRecursivelyXenIo" not in upstream
        assert b"  if (XenPvhDetected ()) {\r\n" in files[BDS] and b"#include <Protocol/XenIo.h>\r\n" in files[BDS]
        assert b"  gXenIoProtocolGuid " in files[INF] and files[INF].replace(
            b"  gXenIoProtocolGuid                            # PROTOCOL SOMETIMES_CONSUMED\r\n", b"") == \
            (tree.root / INF).read_bytes()
        # 202605 keeps its own fix too: the Shell is a boot option again (one application option fewer).
        app = b"LOAD_OPTION_ACTIVE | LOAD_OPTION_CATEGORY_APP,"
        assert files[BDS].count(app) == upstream.count(app) - (tree.identity["tag"] == "edk2-stable202605")


def test_validate_with_a_patch_that_does_not_apply_stops_at_the_entry(tmp_path: Path, edk2_tree) -> None:
    """What `invoke render`/`build` check first: a platform whose patch lost its context, located at its entry."""
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    mini = (REPO_ROOT / "tests/data/platforms/mini.yaml").read_text()
    (platforms / "mini.yaml").write_text(mini + "\noverrides:\n  - patch: stale.patch\n")
    layout = Layout(platforms, tmp_path / "overrides", tmp_path / "build", tmp_path / "dist")
    layout.overrides_for("mini").mkdir(parents=True)
    (layout.overrides_for("mini") / "stale.patch").write_bytes(
        b"--- a/OvmfPkg/OvmfPkg.dec\n+++ b/OvmfPkg/OvmfPkg.dec\n@@ -3,2 +3,2 @@\n-no such line\r\n+x\r\n context\r\n")
    platform = load_platform(platforms / "mini.yaml", platforms_dir=platforms)
    with pytest.raises(OvmfgenError) as info:
        validate(resolved(platform, edk2_tree, layout), use_cache=False)
    assert str(info.value) == (
        f"{platform.source}:{len(mini.splitlines()) + 3}:5: error: override patch overrides/mini/stale.patch does not "
        f"apply to {edk2_tree.identity['tag']}: patch failed: OvmfPkg/OvmfPkg.dec:3 (git apply)")


# --- the rule: patches for the tree's files, whole files only for files the platform adds -------------


def copies_of_tree_files(overrides_dir: Path, trees: tuple[Path, ...]) -> list[str]:
    """The whole files under ``overrides_dir`` (overrides/<platform>/[<tag>/]P, not a patch) whose edk2 path
    P exists in one of ``trees``: copies, which a new release's other changes to P would be lost to."""
    out = []
    for path in sorted(overrides_dir.rglob("*")):
        rel = path.relative_to(overrides_dir).parts
        if not path.is_file() or path.suffix == ".patch" or len(rel) < 2:   # overrides/README.md
            continue
        edk2_parts = rel[2:] if rel[1] in KNOWN_TAGS else rel[1:]         # without <platform>/[<tag>/]
        if edk2_parts and any((tree / PurePosixPath(*edk2_parts)).exists() for tree in trees):
            out.append("/".join(rel))
    return out


def test_overrides_hold_no_copy_of_a_file_either_tree_has(tmp_path: Path, edk2_tree, edk2_tree_202605) -> None:
    trees = (edk2_tree.root, edk2_tree_202605.root)
    assert copies_of_tree_files(Layout().overrides_dir, trees) == []
    # What the check finds: a copy (also one per tree), never a patch or a file the platform adds.
    sec = "OvmfPkg/Sec/SecMain.c"
    for rel, data in {f"p/{sec}": b"", f"p/edk2-stable202605/{sec}": b"", "p/OvmfPkg/XenOvmfExtra/New.c": b"",
                      "p/patches/Fix.patch": DIFF, "README.md": b""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert copies_of_tree_files(tmp_path, trees) == [f"p/{sec}", f"p/edk2-stable202605/{sec}"]


def _nightly_xen_pvh_requests() -> list[tuple[str, Request]]:
    """Every xen-pvh build nightly.yaml asks for (its cells, and the other FD sizes their Xen guests boot),
    each on both trees: (a label, its request)."""
    out = []
    for cell in load_matrix(REPO_ROOT / "nightly.yaml").cells:
        if cell.platform != "xen-pvh":
            continue
        sizes = {cell.fd_size, *(s.fd_size for s in map(parse_guest_spec, cell.xen_guests) if s.fd_size)}
        for size in sorted(s for s in sizes if s):
            for tag in ("edk2-stable202502", "edk2-stable202605"):
                out.append((f"{cell.name} {size} {tag}", replace(cell, edk2=tag).request(fd_size=size)))
    return out


def test_xen_pvh_overrides_make_the_golden_files(edk2_tree, edk2_tree_202605) -> None:
    """What xen-pvh's overrides make of each tree, for every build the nightly asks for, is the golden
    tests/golden/overrides/xen-pvh-<tag>.sha256: the bytes main's whole-file copies made before they became
    patches (the same build inputs, so the same firmware). Regenerate only on request (OVMFGEN_REGEN_GOLDEN=1)
    and only for a change of a patch's meaning."""
    for tree in (edk2_tree, edk2_tree_202605):
        made = {}
        for label, req in _nightly_xen_pvh_requests():
            if req.edk2 == tree.tag:
                files = resolve(req).override_files
                made[label] = "".join(f"{hashlib.sha256(data).hexdigest()}  {rel}\n" for rel, data in files.items())
        assert len(made) >= 5 and len(set(made.values())) == 1, made   # features, FD sizes change none of them
        text = next(iter(made.values()))
        golden = REPO_ROOT / "tests/golden/overrides" / f"xen-pvh-{tree.tag}.sha256"
        if os.environ.get("OVMFGEN_REGEN_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.is_file(), f"missing golden file {golden} (OVMFGEN_REGEN_GOLDEN=1 to create)"
        assert text == golden.read_text(), tree.tag


def test_a_per_tree_override_serves_a_checkout_past_its_release(tmp_path: Path) -> None:
    from ovmfgen.platform.model import Override
    from ovmfgen.platform.overrides import override_source
    (tmp_path / "edk2-stable202605").mkdir()
    (tmp_path / "edk2-stable202605" / "fix.patch").write_text("x")
    ov = Override("fix.patch", per_tree=True, patch=True)
    assert override_source(ov, tmp_path, "edk2-stable202605") == "edk2-stable202605/fix.patch"
    assert override_source(ov, tmp_path, "edk2-stable202605-3-g5ccd4da1") == "edk2-stable202605/fix.patch"
    # A release of its own needs its own copy: the message names the missing one.
    assert override_source(ov, tmp_path, "edk2-stable202608") == "edk2-stable202608/fix.patch"
    assert override_source(ov, tmp_path, "edk2-stable202502-1-gabcdef0") == "edk2-stable202502-1-gabcdef0/fix.patch"
