"""Every X64 platform edk2 ships imports (``invoke import``) and renders back to files that edk2toollib
parses to the same components, library classes, PCDs, FV contents and FD layout, on both trees.

Only parsing: no build. A tree that is not set up is skipped (``invoke setup [--edk2 TAG]``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.toollib import Workspace
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.diff import CONFIGURATIONS, diff_files, resolve
from ovmfgen.platform.importer import import_command
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.resolve import resolved
from ovmfgen.platform.validate import prepare_workspace, validate
from ovmfgen.request import Request

pytestmark = pytest.mark.integration

TREES = ("edk2-stable202502", "edk2-stable202605")
PLATFORMS = (
    "OvmfPkg/OvmfPkgX64", "OvmfPkg/OvmfPkgIa32X64", "OvmfPkg/OvmfPkgIa32", "OvmfPkg/OvmfXen",
    "OvmfPkg/CloudHv/CloudHvX64", "OvmfPkg/Microvm/MicrovmX64", "OvmfPkg/AmdSev/AmdSevX64",
    "OvmfPkg/IntelTdx/IntelTdxX64", "OvmfPkg/Bhyve/BhyveX64", "EmulatorPkg/EmulatorPkg",
    "UefiPayloadPkg/UefiPayloadPkg",
)


@pytest.fixture(scope="module", params=TREES)
def tree(request: pytest.FixtureRequest) -> edk2.Edk2Tree:
    try:
        return edk2.locate(request.param)
    except OvmfgenError as exc:
        pytest.skip(f"{request.param}: {exc}")


@pytest.mark.parametrize("platform", PLATFORMS, ids=[Path(p).name for p in PLATFORMS])
def test_import_render_round_trip(platform: str, tree: edk2.Edk2Tree, tmp_path: Path) -> None:
    root = tree.root
    dsc, fdf = f"{platform}.dsc", f"{platform}.fdf"
    if not (root / dsc).is_file():
        pytest.skip(f"{tree.tag} does not ship {dsc}")
    output = tmp_path / "platforms" / f"{Path(platform).name.lower()}.yaml"
    output.parent.mkdir()
    import_command(str(root / dsc), str(root / fdf), str(output))
    loaded = load_platform(output, platforms_dir=output.parent, edk2=tree.tag)
    assert loaded.dsc_path == dsc and loaded.upstream is not None and loaded.upstream.fdf == fdf
    r = resolved(loaded, tree)
    ws_root = prepare_workspace(r, tmp_path / "ws")
    ours = (Workspace((ws_root, root)), loaded.dsc_path, loaded.fdf_path)
    theirs = (Workspace((root,)), dsc, fdf)
    per_config = diff_files(ours, theirs, CONFIGURATIONS)
    assert per_config == {label: [] for label in per_config}
    # Not vacuous: what was compared is the platform's content.
    view = resolve(dsc, fdf, Workspace((root,)), {})
    assert len(view.components) > 20 and len(view.libraries) > 300 and len(view.pcds) > 20 and view.fvs
    # The rendered files are the ones `invoke render` writes, checked as it checks them (the default
    # build's configuration: X64, the branches its defines select). No Xen header region is needed:
    # these platforms have none.
    assert loaded.elf is None
    validate(r, use_cache=False)


def test_an_upstream_branch_turned_on_is_checked(tree: edk2.Edk2Tree, tmp_path: Path) -> None:
    """BhyveX64 validates as built by default; with ``-D SMM_REQUIRE=TRUE`` (over the DSC's
    ``DEFINE SMM_REQUIRE = FALSE``, as EDK2's build takes it) its SMM branch is built, and upstream's
    missing SmmAccessPei.inf is refused at the imported YAML's line."""
    platform = "OvmfPkg/Bhyve/BhyveX64"
    output = tmp_path / "platforms" / "bhyvex64.yaml"
    output.parent.mkdir()
    import_command(str(tree.root / f"{platform}.dsc"), str(tree.root / f"{platform}.fdf"), str(output))
    loaded = load_platform(output, platforms_dir=output.parent, edk2=tree.tag)
    validate(resolved(loaded, tree), use_cache=False)
    smm = Request(platform=loaded.name, edk2=tree.tag, defines=(("SMM_REQUIRE", "TRUE"),))
    with pytest.raises(OvmfgenError) as info:
        validate(resolved(loaded, tree, request=smm), use_cache=False)
    message = str(info.value)
    assert message.startswith(f"{output}:") and message.endswith(
        ": error: INF not found in the edk2 tree or overrides: OvmfPkg/Bhyve/SmmAccess/SmmAccessPei.inf")
    line = int(message.removeprefix(f"{output}:").split(":")[0])
    assert "OvmfPkg/Bhyve/SmmAccess/SmmAccessPei.inf" in output.read_text().splitlines()[line - 1]
