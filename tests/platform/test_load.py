"""Loading platform YAML: features, when blocks, fragments, extends, variables, locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.model import Define, Field, LibraryMapping, walk
from ovmfgen.paths import REPO_ROOT

MINI = (REPO_ROOT / "tests" / "data" / "platforms" / "mini.yaml").read_text()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_scalars_stay_text(tmp_path: Path) -> None:
    # 0x8000004F and TRUE must reach the DSC exactly as written, not as int/bool.
    text = MINI.replace("PcdMaximumLinkedListLength: 0", "PcdMaximumLinkedListLength: 0x8000004F")
    p = load_platform(write(tmp_path, "m", text), platforms_dir=tmp_path)
    pcds = [s for sec in p.dsc for s in walk(sec.body) if type(s).__name__ == "Pcd"]
    assert pcds[0].value == "0x8000004F"


def test_header_fields_and_flash_definition(tmp_path: Path) -> None:
    p = load_platform(write(tmp_path, "m", MINI), platforms_dir=tmp_path)
    fields = {s.name: s.value for s in p.dsc[0].body if isinstance(s, Field)}
    assert fields["PLATFORM_NAME"] == "Mini"
    assert fields["SUPPORTED_ARCHITECTURES"] == "X64"
    assert fields["FLASH_DEFINITION"] == "OvmfPkg/Mini.fdf"
    assert p.dsc_path == "OvmfPkg/Mini.dsc"


def test_when_selects_by_feature(tmp_path: Path) -> None:
    block = ("      - when:\n          timer: lapic\n        then:\n          - define: T = lapic\n"
             "        else:\n          - define: T = other\n")
    text = MINI.replace("      - define: MINI_SWITCH = FALSE\n", block)
    for timer, want in (("lapic", "lapic"), ("acpi", "other")):
        p = load_platform(write(tmp_path, "m", text.replace("  fd_size: 2M\n", f"  fd_size: 2M\n  timer: {timer}\n")),
                          platforms_dir=tmp_path)
        defines = [s for s in p.dsc[0].body if isinstance(s, Define)]
        assert defines == [Define("T", want)]


def test_when_selects_by_edk2_release(tmp_path: Path) -> None:
    block = ("      - when: {edk2: \">= edk2-stable202605\", timer: lapic}\n        then:\n          - define: T = new\n"
             "        else:\n          - define: T = old\n")
    path = write(tmp_path, "m", MINI.replace("      - define: MINI_SWITCH = FALSE\n", block))
    for tag, want in (("edk2-stable202502", "old"), ("edk2-stable202605", "new"), ("edk2-stable202611", "new"),
                      ("edk2-stable202605-12-gabcdef012", "new"), (None, "old")):
        p = load_platform(path, platforms_dir=tmp_path, edk2=tag)
        assert [s for s in p.dsc[0].body if isinstance(s, Define)] == [Define("T", want)], tag
        assert p.edk2 == (tag or "edk2-stable202502")
    p = load_platform(path, platforms_dir=tmp_path, edk2="edk2-stable202605", feature_overrides={"timer": "acpi"})
    assert [s for s in p.dsc[0].body if isinstance(s, Define)] == [Define("T", "old")]
    with pytest.raises(OvmfgenError) as ei:
        load_platform(path, platforms_dir=tmp_path, edk2="my-branch")
    assert str(ei.value).endswith("m.yaml:21:22: error: the edk2 tree 'my-branch' is neither a release tag "
                                  "(edk2-stableYYYYMM) nor git describe past one (edk2-stableYYYYMM-N-gHASH), so "
                                  "'edk2: >= edk2-stable202605' cannot be decided")


def test_release_ranges_and_whole_sections(tmp_path: Path) -> None:
    block = ("  - when: {edk2: \">= edk2-stable202505, < edk2-stable202611\"}\n    then:\n"
             "      - LibraryClasses.common.MM_STANDALONE:\n          - HobLib: MdePkg/Library/DxeHobLib/DxeHobLib.inf\n")
    path = write(tmp_path, "m", MINI.replace("  - SkuIds:\n", block + "  - SkuIds:\n"))
    headers = {tag: [s.header for s in load_platform(path, platforms_dir=tmp_path, edk2=tag).dsc]
               for tag in ("edk2-stable202502", "edk2-stable202605", "edk2-stable202611")}
    assert "LibraryClasses.common.MM_STANDALONE" in headers["edk2-stable202605"]
    assert "LibraryClasses.common.MM_STANDALONE" not in headers["edk2-stable202502"] + headers["edk2-stable202611"]


def test_feature_override_and_variables(tmp_path: Path) -> None:
    text = MINI.replace("MINI_SWITCH = FALSE", "FD = ${fd_size_kb}")
    p = load_platform(write(tmp_path, "m", text), platforms_dir=tmp_path, feature_overrides={"fd_size": "4"})
    assert Define("FD", "4096") in p.dsc[0].body
    with pytest.raises(OvmfgenError) as info:
        load_platform(write(tmp_path, "m", text), platforms_dir=tmp_path, feature_overrides={"fd_size": "3"})
    assert str(info.value) == "error: --feature fd_size=3: '3' is not a value of feature fd_size (one of: 1M, 2M, 4M)"
    with pytest.raises(OvmfgenError) as info:
        load_platform(write(tmp_path, "m", text), platforms_dir=tmp_path, feature_overrides={"turbo": "true"})
    assert str(info.value) == ("error: --feature turbo=true: no such feature "
                               "(features: debug_output, fd_size, max_cpus, network, secure_boot, shell, timer, tpm)")


def test_numeric_feature_takes_whole_numbers_in_range(tmp_path: Path) -> None:
    # max_cpus: the first numeric feature. Its value reaches ${max_cpus} in canonical decimal form, from the
    # YAML and from --feature alike; the default is 128 (Xen's HVM_MAX_VCPUS) when nothing sets it.
    text = MINI.replace("MINI_SWITCH = FALSE", "CPUS = ${max_cpus}")
    path = write(tmp_path, "m", text)
    assert Define("CPUS", "128") in load_platform(path, platforms_dir=tmp_path).dsc[0].body
    for given, held in (("64", "64"), ("064", "64"), ("1", "1"), ("128", "128")):
        p = load_platform(path, platforms_dir=tmp_path, feature_overrides={"max_cpus": given})
        assert Define("CPUS", held) in p.dsc[0].body and p.feature("max_cpus") == held
    p = load_platform(write(tmp_path, "y", text.replace("features:\n", "features:\n  max_cpus: 0096\n", 1)),
                      platforms_dir=tmp_path)
    assert p.feature("max_cpus") == "96" and dict(p.default_features)["max_cpus"] == "96"
    why = "a whole number from 1 to 128: Xen gives PVH and HVM guests at most HVM_MAX_VCPUS = 128 vCPUs"
    for bad in ("0", "129", "-1", "+5", "1e2", "0x40", "many", "", "６４"):
        with pytest.raises(OvmfgenError) as info:
            load_platform(path, platforms_dir=tmp_path, feature_overrides={"max_cpus": bad})
        assert str(info.value) == f"error: --feature max_cpus={bad}: '{bad}' is not a value of feature max_cpus ({why})"


def test_when_on_a_numeric_feature(tmp_path: Path) -> None:
    block = ("      - when:\n          max_cpus: [064, 128]\n        then:\n          - define: BIG = TRUE\n"
             "        else:\n          - define: BIG = FALSE\n")
    path = write(tmp_path, "m", MINI.replace("      - define: MINI_SWITCH = FALSE\n", block))
    assert Define("BIG", "TRUE") in load_platform(path, platforms_dir=tmp_path).dsc[0].body
    small = load_platform(path, platforms_dir=tmp_path, feature_overrides={"max_cpus": "8"})
    assert Define("BIG", "FALSE") in small.dsc[0].body and "max_cpus" in small.features_read


def test_features_read_are_the_ones_a_when_or_variable_consulted(tmp_path: Path) -> None:
    text = MINI.replace("MINI_SWITCH = FALSE", "FD = ${fd_size_kb}")
    assert load_platform(write(tmp_path, "m", text), platforms_dir=tmp_path).features_read == ("fd_size",)
    assert load_platform(write(tmp_path, "m", MINI), platforms_dir=tmp_path).features_read == ()
    assert load_platform("xen-pvh").features_read == ("debug_output", "fd_size", "max_cpus", "network", "secure_boot",
                                                      "shell", "timer", "tpm")
    assert "debug_output" not in load_platform("qemu-x64").features_read


def test_fragments_are_spliced(tmp_path: Path) -> None:
    p = load_platform("xen-pvh")
    timer = [s for sec in p.dsc for s in walk(sec.body) if isinstance(s, LibraryMapping) and s.lib_class == "TimerLib"]
    assert [t.inf for t in timer] == ["UefiCpuPkg/Library/SecPeiDxeTimerLibUefiCpu/SecPeiDxeTimerLibUefiCpu.inf"]
    fv = next(s for s in p.fdf if s.header == "FV.SECFV")
    assert Field("READ_LOCK_STATUS", "TRUE") in fv.body


def test_extends_merges_and_child_wins(tmp_path: Path) -> None:
    write(tmp_path, "base", MINI)
    child = "extends: base\nplatform:\n  name: Child\n"
    p = load_platform(write(tmp_path, "child", child), platforms_dir=tmp_path)
    fields = {s.name: s.value for s in p.dsc[0].body if isinstance(s, Field)}
    assert fields["PLATFORM_NAME"] == "Child"
    assert fields["PLATFORM_GUID"] == "11111111-2222-3333-4444-555555555555"
    assert p.name == "child"


def test_locations_point_into_yaml(tmp_path: Path) -> None:
    p = load_platform(write(tmp_path, "m", MINI), platforms_dir=tmp_path)
    comp = next(s for sec in p.dsc for s in walk(sec.body) if type(s).__name__ == "Component")
    line = MINI.split("\n")[comp.loc.line - 1]
    assert "OvmfPkg/ResetVector/ResetVector.inf" in line


def test_unknown_platform_lists_known() -> None:
    with pytest.raises(OvmfgenError, match=r"unknown platform 'nope' \(known: .*xen-pvh"):
        load_platform("nope")


def _shape(node: object) -> object:
    """A composed node as plain data: kind, tag, scalar value, start line and column, children."""
    import yaml

    mark = node.start_mark
    head = (type(node).__name__, node.tag, mark.line, mark.column)
    if isinstance(node, yaml.MappingNode):
        return (*head, [(_shape(k), _shape(v)) for k, v in node.value])
    if isinstance(node, yaml.SequenceNode):
        return (*head, [_shape(v) for v in node.value])
    return (*head, node.value)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "platforms").rglob("*.yaml")) +
                         [REPO_ROOT / "tests" / "data" / "platforms" / "mini.yaml"], ids=lambda p: p.name)
def test_libyaml_composes_the_same_nodes_and_locations(path: Path) -> None:
    """load composes with libyaml for speed; every message's line:col must stay what PyYAML gives."""
    import yaml

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML without libyaml: load uses the pure-Python loader only")
    text = path.read_text()
    assert _shape(yaml.compose(text, Loader=yaml.CSafeLoader)) == _shape(yaml.compose(text, Loader=yaml.SafeLoader))


def test_a_yaml_error_is_reported_as_pyyaml_words_it(tmp_path: Path) -> None:
    """libyaml words its errors differently: the error path recomposes with PyYAML's own loader."""
    path = write(tmp_path, "bad", "platform:\n  name: x\n  files: [a\n")
    with pytest.raises(OvmfgenError) as ei:
        load_platform(path, platforms_dir=tmp_path)
    assert str(ei.value) == (f"{ei.value.location.path}:4:1: error: invalid YAML: "
                             "expected ',' or ']', but got '<stream end>'")


def test_override_edk2_condition_keeps_it_for_those_trees_only(tmp_path: Path) -> None:
    # {edk2: COND} on an override: one release's upstream bug is fixed for that release only; for the
    # other trees the entry is not there at all (validation, the build, diff and patch never see it).
    entry = ("overrides:\n  - path: OvmfPkg/Sec/SecMain.c\n    per_tree: true\n    edk2: edk2-stable202605\n"
             "  - OvmfPkg/Sec/Other.c\n")
    path = write(tmp_path, "m", MINI.replace("features:\n", entry + "features:\n", 1))
    for tag, want in (("edk2-stable202502", ["OvmfPkg/Sec/Other.c"]),
                      ("edk2-stable202605", ["OvmfPkg/Sec/SecMain.c", "OvmfPkg/Sec/Other.c"]),
                      ("edk2-stable202611", ["OvmfPkg/Sec/Other.c"])):
        p = load_platform(path, platforms_dir=tmp_path, edk2=tag)
        assert [o.path for o in p.overrides] == want, tag
    p = load_platform(path, platforms_dir=tmp_path, edk2="edk2-stable202605")
    assert p.overrides[0].source("edk2-stable202605") == "edk2-stable202605/OvmfPkg/Sec/SecMain.c"


def test_a_one_release_patch_is_carried_to_later_trees(tmp_path: Path) -> None:
    # {patch: P, edk2: TAG}: a fix of TAG's upstream. Later trees (a later release, a checkout past TAG)
    # keep it, marked carried (platform/overrides.py applies it while it applies); earlier ones never see it.
    entry = ("overrides:\n  - patch: patches/fix.patch\n    edk2: edk2-stable202605\n"
             "deltas:\n  - kind: file\n    subject: OvmfPkg/X.c\n    edk2: edk2-stable202605\n    reason: r\n")
    path = write(tmp_path, "m", MINI.replace("features:\n", entry + "features:\n", 1))
    for tag, carried in (("edk2-stable202502", None), ("edk2-stable202605", ""),
                         ("edk2-stable202605-3-g5ccd4da", "edk2-stable202605"),
                         ("edk2-stable202611", "edk2-stable202605")):
        p = load_platform(path, platforms_dir=tmp_path, edk2=tag)
        assert [o.carried for o in p.overrides] == ([] if carried is None else [carried]), tag
        assert [d.carried for d in p.deltas] == ([] if carried is None else [carried]), tag


def test_delta_edk2_condition_keeps_it_for_those_trees_only(tmp_path: Path) -> None:
    # The difference a release-only override makes exists for that release only: elsewhere its delta
    # would be stale (invoke diff refuses stale deltas).
    entry = ("deltas:\n  - kind: file\n    subject: OvmfPkg/X.c\n    edk2: \">= edk2-stable202605\"\n    reason: r\n"
             "  - kind: define\n    subject: PLATFORM_NAME\n    reason: n\n")
    path = write(tmp_path, "m", MINI.replace("features:\n", entry + "features:\n", 1))
    assert [d.subject for d in load_platform(path, platforms_dir=tmp_path).deltas] == ["PLATFORM_NAME"]
    assert [d.subject for d in load_platform(path, platforms_dir=tmp_path, edk2="edk2-stable202605").deltas] == [
        "OvmfPkg/X.c", "PLATFORM_NAME"]
    bad = write(tmp_path, "b", MINI.replace("features:\n", entry.replace('">= edk2-stable202605"', "soon") + "features:\n", 1))
    with pytest.raises(OvmfgenError, match=r"b\.yaml:16:11: error: edk2 condition 'soon'"):
        load_platform(bad, platforms_dir=tmp_path)
