"""Import: render(import(X)) is X again, structurally and semantically, on four OvmfPkg platforms."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.platform.resolve import resolved
from ovmfgen.platform.importer import platform_yaml
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.model import Comment, Include
from ovmfgen.platform.render import render_dsc, render_fdf
from ovmfgen.platform.diff import CONFIGURATIONS, diff_files
from ovmfgen.platform.syntax import parse_dsc, parse_fdf
from ovmfgen.edk2.toollib import Workspace
from ovmfgen.platform.validate import prepare_workspace

PLATFORMS = [
    ("OvmfPkg/OvmfXen.dsc", "OvmfPkg/OvmfXen.fdf"),
    ("OvmfPkg/OvmfPkgX64.dsc", "OvmfPkg/OvmfPkgX64.fdf"),
    ("OvmfPkg/CloudHv/CloudHvX64.dsc", "OvmfPkg/CloudHv/CloudHvX64.fdf"),
    ("OvmfPkg/Microvm/MicrovmX64.dsc", "OvmfPkg/Microvm/MicrovmX64.fdf"),
]


def _import(tree: Path, dsc: str, fdf: str, tmp_path: Path):
    text = platform_yaml((tree / dsc).read_text(), (tree / fdf).read_text(), dsc, fdf, tree=tree)
    path = tmp_path / f"{Path(dsc).stem.lower()}.yaml"
    path.write_text(text)
    return load_platform(path, platforms_dir=tmp_path)


def _shape(sections):
    # Include paths are compared by file name: import makes file-relative ones workspace-relative.
    def norm(stmt):
        return Include(Path(stmt.path).name) if isinstance(stmt, Include) else stmt

    return [(s.header, tuple(norm(x) for x in s.body if not isinstance(x, Comment))) for s in sections]


@pytest.mark.parametrize(("dsc", "fdf"), PLATFORMS, ids=[Path(d).stem for d, _ in PLATFORMS])
def test_round_trip_structure(dsc: str, fdf: str, tmp_path: Path, edk2_tree) -> None:
    tree = edk2_tree.root
    platform = _import(tree, dsc, fdf, tmp_path)
    assert _shape(parse_dsc(render_dsc(platform), "r")) == _shape(parse_dsc((tree / dsc).read_text(), dsc))
    assert _shape(parse_fdf(render_fdf(platform), "r")) == _shape(parse_fdf((tree / fdf).read_text(), fdf))


@pytest.mark.parametrize(("dsc", "fdf"), PLATFORMS, ids=[Path(d).stem for d, _ in PLATFORMS])
def test_round_trip_semantics(dsc: str, fdf: str, tmp_path: Path, edk2_tree) -> None:
    # What EDK2 builds from the rendered files equals what it builds from upstream's, under each define set.
    tree = edk2_tree.root
    platform = _import(tree, dsc, fdf, tmp_path)
    ws_root = prepare_workspace(resolved(platform, edk2_tree), tmp_path / "ws")
    ours = (Workspace((ws_root, tree)), platform.dsc_path, platform.fdf_path)
    theirs = (Workspace((tree,)), dsc, fdf)
    per_config = diff_files(ours, theirs, CONFIGURATIONS)
    assert per_config == {label: [] for label in per_config}
    # The comparison is not vacuous: the views hold the platform's content.
    from ovmfgen.platform.diff import resolve

    view = resolve(dsc, fdf, Workspace((tree,)), {})
    assert len(view.components) > 50 and len(view.libraries) > 500 and view.fd_regions and view.fvs


def test_semantic_diff_sees_a_change(tmp_path: Path, edk2_tree) -> None:
    tree = edk2_tree.root
    dsc, fdf = PLATFORMS[0]
    text = platform_yaml((tree / dsc).read_text(), (tree / fdf).read_text(), dsc, fdf)
    text = text.replace("      - OvmfPkg/XenPvBlkDxe/XenPvBlkDxe.inf\n", "", 1)
    text = text.replace("gEfiMdePkgTokenSpaceGuid.PcdDebugPrintErrorLevel: 0x8000004F",
                        "gEfiMdePkgTokenSpaceGuid.PcdDebugPrintErrorLevel: 0x80000000")
    path = tmp_path / "changed.yaml"
    path.write_text(text)
    platform = load_platform(path, platforms_dir=tmp_path)
    ws_root = prepare_workspace(resolved(platform, edk2_tree), tmp_path / "ws")
    diffs = diff_files((Workspace((ws_root, tree)), platform.dsc_path, platform.fdf_path),
                       (Workspace((tree,)), dsc, fdf), ((),))["default"]
    subjects = {(d.kind, d.subject) for d in diffs}
    assert ("component", "OvmfPkg/XenPvBlkDxe/XenPvBlkDxe.inf") in subjects
    assert ("pcd", "gEfiMdePkgTokenSpaceGuid.PcdDebugPrintErrorLevel") in subjects
