"""ovmfgen.platform.overrides: whole-file and patch overrides applied in order, and a patch that no longer applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.platform.resolve import resolved
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
