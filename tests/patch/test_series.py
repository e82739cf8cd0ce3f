"""ovmfgen.patch (intree, series, git, checks, write, verify): the upstream edk2 patch series (fast: no edk2 build; uses the set-up edk2 tree)."""

from __future__ import annotations

import email
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen import elf
from ovmfgen.edk2 import tree as edk2
from ovmfgen.patch import git as patch_git
from ovmfgen.patch import intree as patch_intree
from ovmfgen.patch import series as patch_series
from ovmfgen.patch import verify as patch_verify
from ovmfgen.patch import write as patch_write
from ovmfgen.patch.series import parse_signoff
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.model import Comment, Conditional, Include, Region, RegionContent, ReservedRegion, walk
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.resolve import resolve
from ovmfgen.platform.syntax import parse_fdf, strip_comment
from ovmfgen.request import make_request

SIGNER = "Test Submitter <submitter@example.com>"
MIB = 1 << 20


@pytest.fixture(scope="module")
def platform():
    return load_platform("xen-pvh")


@pytest.fixture(scope="module")
def tree() -> edk2.Edk2Tree:
    """The edk2 tree `invoke setup` prepared (the series reads Maintainers.txt, PatchCheck.py, ... from it)."""
    return edk2.locate()


# --- the header include -------------------------------------------------------------------------


def include_headers(text: str) -> dict[int, bytes]:
    """FD_SIZE_IN_KB -> the DATA bytes of each ``!if`` block, read with ovmfgen's FDF reader.

    An ``!include`` is textual: inside the FDF the file's lines sit in the [FD.OVMF] section.
    """
    sections = parse_fdf("[FD.OVMF]\r\n" + text, "XenOvmfElfHeader.fdf.inc")
    assert [s.header for s in sections] == ["FD.OVMF"]
    out: dict[int, bytes] = {}
    for stmt in sections[0].body:
        if isinstance(stmt, Comment):
            continue
        assert isinstance(stmt, Conditional), stmt
        (branch,) = stmt.branches
        m = re.fullmatch(r"\$\(FD_SIZE_IN_KB\) == (\d+)", branch.expr)
        assert m and branch.directive == "if", branch
        (data,) = [s for s in branch.body if isinstance(s, RegionContent)]
        assert data.kind == "DATA"
        body = "\n".join(strip_comment(line) for line in data.value.splitlines())
        values = re.sub(r"[{}\s]", "", body).split(",")
        out[int(m.group(1))] = bytes(int(v, 16) for v in values)
    return out


def test_header_include_has_the_pvh_header_for_each_fd_size(platform) -> None:
    text = patch_intree.elf_header_include(platform)
    headers = include_headers(text)
    assert sorted(headers) == [1024, 2048, 4096]
    for size_kb, data in headers.items():
        fd_size = size_kb * 1024
        assert data == elf.pvh_header(fd_size, 0x100000)
        # What the bytes mean, read independently of elf.pvh_header:
        e_entry = struct.unpack_from("<I", data, 24)[0]
        assert e_entry == 0x100000 + fd_size - 0x30
        load = struct.unpack_from("<8I", data, 52)
        note = struct.unpack_from("<8I", data, 84)
        assert load[0] == 1 and load[2] == 0x100000 and load[4] == load[5] == fd_size
        assert note[0] == 4 and note[7] == 4  # PT_NOTE, p_align 4 (QEMU divides by it)
        assert struct.unpack_from("<I", data, len(data) - 4)[0] == e_entry


def test_header_include_follows_edk2_conventions(platform) -> None:
    data = patch_intree.elf_header_include(platform).encode()
    lines = data.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in ln and b"\r" not in ln for ln in lines)
    assert data.startswith(b"## @file\r\n")
    assert b"SPDX-License-Identifier: BSD-2-Clause-Patent" in data
    assert b"\t" not in data and all(ln == ln.rstrip() for ln in lines)


def test_header_include_rejects_a_region_too_small(platform) -> None:
    from dataclasses import replace

    small = replace(platform, elf=replace(platform.elf, header_region=((2048, 0x40),)))
    with pytest.raises(OvmfgenError, match="reserves 0x40 bytes for the ELF header, which needs 0x88"):
        patch_intree.elf_header_include(small)


# --- the in-tree DSC/FDF ------------------------------------------------------------------------


def test_in_tree_platform_includes_the_header_where_the_region_was_reserved(platform) -> None:
    before = [s for sec in platform.fdf for s in walk(sec.body) if isinstance(s, ReservedRegion)]
    assert before, "xen-pvh reserves the header region"
    moved = patch_intree.in_tree_platform(platform)
    after = [s for sec in moved.fdf for s in walk(sec.body)]
    assert not any(isinstance(s, ReservedRegion) for s in after)
    includes = [s for s in after if isinstance(s, Include) and s.path == "OvmfPkg/XenOvmfElfHeader.fdf.inc"]
    assert len(includes) == len(before)
    # Each include directly follows its region line (offset 0), as upstream's OvmfXen.fdf does.
    for sec in moved.fdf:
        for stmt in walk(sec.body):
            if isinstance(stmt, Conditional):
                for br in stmt.branches:
                    for i, s in enumerate(br.body):
                        if isinstance(s, Include) and s in includes:
                            assert isinstance(br.body[i - 1], Region) and int(br.body[i - 1].offset, 16) == 0
    assert moved.dsc == platform.dsc  # only the FDF changes


def test_in_tree_files_are_crlf_and_say_nothing_of_post_processing(platform) -> None:
    files = patch_intree.in_tree_files(platform)
    assert sorted(files) == ["OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf"]
    fdf = files["OvmfPkg/XenOvmf.fdf"].decode()
    assert "0x00000000|0x0000e000\r\n!include OvmfPkg/XenOvmfElfHeader.fdf.inc\r\n" in fdf
    assert "0x00000000|0x00040000\r\n!include OvmfPkg/XenOvmfElfHeader.fdf.inc\r\n" in fdf
    for data in files.values():
        text = data.decode()
        assert "ovmfgen writes" not in text and "Generated by ovmfgen" not in text
        assert "SPDX-License-Identifier: BSD-2-Clause-Patent\r\n" in text
        assert text.count("\n") == text.count("\r\n")
    assert "FLASH_DEFINITION               = OvmfPkg/XenOvmf.fdf\r\n" in files["OvmfPkg/XenOvmf.dsc"].decode()


def test_a_platform_without_a_reserved_region_has_nothing_to_put_the_header_in(platform) -> None:
    from dataclasses import replace

    with pytest.raises(OvmfgenError, match="reserves no region for the PVH ELF header"):
        patch_intree.in_tree_platform(replace(platform, fdf=()))


# --- Maintainers.txt, PlatformCI ----------------------------------------------------------------


MAINTAINERS = (
    "OvmfPkg: Xen-related modules\r\n"
    "F: OvmfPkg/OvmfXen.*\r\n"
    "F: OvmfPkg/XenBusDxe/\r\n"
    "F: OvmfPkg/XenPlatformPei/\r\n"
    "R: Anthony Perard <anthony@xenproject.org> [tperard]\r\n"
    "\r\n"
    "OvmfPkg: RISC-V Qemu Virt Platform\r\n"
    "F: OvmfPkg/RiscVVirt\r\n"
)


def test_maintainers_lines_go_in_order_into_the_xen_section() -> None:
    out = patch_intree.add_maintainers(MAINTAINERS.encode(), ["OvmfPkg/XenOvmf*", "OvmfPkg/PlatformCI/XenOvmfBuild.py"])
    assert out.decode().split("\r\n")[:7] == [
        "OvmfPkg: Xen-related modules",
        "F: OvmfPkg/OvmfXen.*",
        "F: OvmfPkg/PlatformCI/XenOvmfBuild.py",
        "F: OvmfPkg/XenBusDxe/",
        "F: OvmfPkg/XenOvmf*",
        "F: OvmfPkg/XenPlatformPei/",
        "R: Anthony Perard <anthony@xenproject.org> [tperard]",
    ]
    assert out.decode().endswith("F: OvmfPkg/RiscVVirt\r\n")
    with pytest.raises(OvmfgenError, match="already lists 'F: OvmfPkg/XenOvmf\\*'"):
        patch_intree.add_maintainers(out, ["OvmfPkg/XenOvmf*"])
    with pytest.raises(OvmfgenError, match="no 'OvmfPkg: Xen-related modules' section"):
        patch_intree.add_maintainers(b"OvmfPkg\r\nF: OvmfPkg/\r\n", ["OvmfPkg/XenOvmf*"])


def test_maintainers_patterns_match_the_new_files_the_way_getmaintainer_does(tree: edk2.Edk2Tree) -> None:
    sys.path.insert(0, str(tree.root / "BaseTools" / "Scripts"))
    try:
        gm = pytest.importorskip("GetMaintainer")
    finally:
        sys.path.pop(0)
    for new in ("OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf", "OvmfPkg/XenOvmfElfHeader.fdf.inc"):
        assert re.match(gm.pattern_to_regex("OvmfPkg/XenOvmf*"), new)


def test_ci_script_is_upstream_xenbuild_with_our_dsc(platform, tree: edk2.Edk2Tree, tmp_path: Path) -> None:
    template = (tree.root / patch_intree.CI_TEMPLATE).read_bytes()
    script = patch_intree.ci_script(platform, template)
    assert script.count(b"\r\n") == script.count(b"\n")
    assert b'return "XenOvmf.dsc"' in script and b"OvmfXen.dsc" not in script
    # It works with the tree's PlatformBuildLib and the installed stuart (edk2toolext).
    ci = tmp_path / "PlatformCI"
    ci.mkdir()
    (ci / "PlatformBuildLib.py").write_bytes((tree.root / "OvmfPkg/PlatformCI/PlatformBuildLib.py").read_bytes())
    (ci / "XenOvmfBuild.py").write_bytes(script)
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('XenOvmfBuild', {str(ci / 'XenOvmfBuild.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "s = m.SettingsManager(); s.SetArchitectures(['X64'])\n"
        "print(s.GetPlatformDscAndConfig()[0], m.CommonPlatform.ArchSupported)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "OvmfPkg/XenOvmf.dsc ('X64',)"
    with pytest.raises(OvmfgenError, match="is not the XenBuild.py this series is derived from"):
        patch_intree.ci_script(platform, b"# @file\r\nprint()\r\n")


def test_ci_job_follows_upstream_xen_job(platform, tree: edk2.Edk2Tree) -> None:
    import yaml

    pipeline, ci_tc = patch_intree.ci_pipeline(tree.root)
    assert (pipeline, ci_tc) == ("OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC5.yml", "GCC5")  # 202502's CI
    text = (tree.root / pipeline).read_bytes()
    out = patch_intree.add_ci_job(text, platform, pipeline)
    assert out.count(b"\r\n") == out.count(b"\n")
    matrix = yaml.safe_load(out)["jobs"][0]["strategy"]["matrix"]
    names = list(matrix)
    assert names[names.index("OVMF_XEN_X64_DEBUG") + 1] == "XENOVMF_X64_DEBUG"
    assert matrix["XENOVMF_X64_DEBUG"]["Build.File"] == "$(package)/PlatformCI/XenOvmfBuild.py"
    assert matrix["XENOVMF_X64_DEBUG"]["Run.Flags"] == "QEMU_SKIP=TRUE"
    with pytest.raises(OvmfgenError, match="already has a XENOVMF_X64_DEBUG job"):
        patch_intree.add_ci_job(out, platform, pipeline)


# --- Signed-off-by ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Jane Doe <jane@example.com>", "  Jane Doe   <jane@example.com> ",
                                  '"Doe, Jane" <jane@example.com>'])
def test_signoff_accepts_name_and_address(text: str) -> None:
    ident = patch_series.parse_signoff(text)
    assert ident.email == "jane@example.com" and str(ident) == f"{ident.name} <jane@example.com>"


@pytest.mark.parametrize("text, message", [
    ("jane@example.com", "is not 'Name <email>'"),
    ("<jane@example.com>", "the name is missing"),
    ("Jane<jane@example.com>", "put a space between the name and '<'"),
    ("Doe, Jane <jane@example.com>", "put quotes"),
    ("Jane Doe <jane at example.com>", "is not an e-mail address"),
    ("edk2 <devel@edk2.groups.io>", "the mailing list"),
])
def test_signoff_rejects_what_patchcheck_rejects(text: str, message: str) -> None:
    with pytest.raises(OvmfgenError, match=re.escape(message)):
        patch_series.parse_signoff(text)


def test_default_signoff_comes_from_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gitconfig"
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    config.write_text("[user]\n\tname = Git User\n\temail = git.user@example.org\n")
    assert patch_series.default_signoff(tmp_path) == patch_series.Ident("Git User", "git.user@example.org")
    config.write_text("[user]\n\tname = Git User\n")
    with pytest.raises(OvmfgenError, match="no Signed-off-by identity: pass --signoff"):
        patch_series.default_signoff(tmp_path)


# --- the whole series ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series_dirs(tmp_path_factory: pytest.TempPathFactory, tree: edk2.Edk2Tree) -> tuple[patch_write.Generated, Path]:
    """The series generated twice from the same inputs into two directories."""
    r = resolve(make_request("xen-pvh"))
    first = patch_write.generate(r, tmp_path_factory.mktemp("series") / "a", signer=parse_signoff(SIGNER))
    second = patch_write.generate(r, tmp_path_factory.mktemp("series") / "b", signer=parse_signoff(SIGNER))
    return first, second.out_dir


def _messages(gen: patch_write.Generated) -> list[email.message.Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in gen.patches]


def test_series_is_byte_identical_when_regenerated(series_dirs) -> None:
    first, second = series_dirs
    names = sorted(p.name for p in first.out_dir.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert names[0] == "0000-cover-letter.patch" and len(names) == 6
    for name in names:
        assert (first.out_dir / name).read_bytes() == (second / name).read_bytes(), name
    # No commit hash leaks (--zero-commit) and the dates come from the edk2 release, not the clock.
    text = b"".join((first.out_dir / n).read_bytes() for n in names).decode()
    assert set(re.findall(r"^From ([0-9a-f]{40}) ", text, re.M)) == {"0" * 40}
    assert set(re.findall(r"^Date: (.*)$", text, re.M)) <= {
        f"Fri, 21 Feb 2025 00:0{i}:00 +0000" for i in range(1, 6)}


def test_series_commits_split_bisectably(series_dirs) -> None:
    gen, _ = series_dirs
    files = [c.paths for c in gen.series.commits]
    assert files == [
        ("OvmfPkg/Sec/SecMain.c",),
        ("OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",
         "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"),
        ("OvmfPkg/XenOvmfElfHeader.fdf.inc",),
        ("OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf"),
        ("Maintainers.txt", "OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC5.yml", "OvmfPkg/PlatformCI/XenOvmfBuild.py"),
    ]
    # The override patches (overrides/xen-pvh/patches/: the SEC fix, the NvVars fix) come first;
    # the header exists before the FDF that includes it.
    assert [c.builds for c in gen.series.commits] == [False, False, False, True, True]


def test_series_subjects_bodies_and_trailers(series_dirs) -> None:
    gen, _ = series_dirs
    msgs = _messages(gen)
    for i, (msg, commit) in enumerate(zip(msgs, gen.series.commits), 1):
        subject = " ".join(msg["Subject"].split())
        assert subject == f"[PATCH {i}/5] {commit.subject}"
        assert len(commit.subject) <= 75 and re.match(r"^OvmfPkg(/Sec|/PlatformBootManagerLib)?: [A-Z]", commit.subject)
        assert msg["From"] == SIGNER
        assert msg["To"] == "devel@edk2.groups.io"
        body = msg.get_payload().split("\n---\n")[0]
        assert all(len(line) < 76 for line in body.splitlines()), body
        trailers = body.rstrip("\n").split("\n\n")[-1].splitlines()
        assert trailers[-1] == f"Signed-off-by: {SIGNER}"
        cc = [t for t in trailers if t.startswith("Cc: ")]
        assert len(cc) == len(trailers) - 1 and cc == sorted(cc)
        # GetMaintainer.py with the series' Maintainers.txt: the Xen reviewer is on every patch of the
        # platform, OvmfPkg's maintainers on the SEC fix.
        if commit.paths == ("OvmfPkg/Sec/SecMain.c",):
            assert "Cc: Gerd Hoffmann <kraxel@redhat.com>" in cc
        else:
            assert "Cc: Anthony Perard <anthony@xenproject.org>" in cc
    # Patch 5 touches Maintainers.txt, so its maintainers are asked too.
    assert any("Michael D Kinney" in line for line in msgs[4].get_payload().splitlines())
    # Patch 1, the SEC fix, says what breaks, why, and how it was tested.
    sec = msgs[0].get_payload()
    assert "Install PPI: 00000000-0000-0000-0000-000000000000" in sec and "Tested with" in sec
    # Patch 2, the NvVars fix: why PVH guests lose their variables, and the test that shows they no longer do.
    nvvars = msgs[1].get_payload()
    assert "XenIoPvhDxe" in nvvars and "Tested: " in nvvars and "+  if (XenPvhDetected ()) {\r" in nvvars
    assert "p_align 4" in msgs[2].get_payload() and "1 MiB" in msgs[2].get_payload()
    assert "LAPIC" in msgs[3].get_payload() or "local APIC timer" in msgs[3].get_payload()


def test_series_added_lines_are_crlf(series_dirs) -> None:
    gen, _ = series_dirs
    for p in gen.patches:
        added = [ln for ln in p.read_bytes().split(b"\n") if ln.startswith(b"+") and not ln.startswith(b"+++")]
        assert added and all(ln.endswith(b"\r") for ln in added), p.name


def test_cover_letter_names_the_upstream_base(series_dirs) -> None:
    gen, _ = series_dirs
    text = gen.cover.read_text()
    assert "[PATCH 0/5] OvmfPkg: Add XenOvmf" in text
    assert " - patch 1 fixes what the platform needs fixed first:\n   OvmfPkg/Sec: Build" in text
    assert "*** SUBJECT HERE ***" not in text and "*** BLURB HERE ***" not in text
    assert f"It is based on {edk2.PIN.tag},\ncommit {edk2.PIN.commit}." in text
    assert text.endswith(f"\nbase-commit: {edk2.PIN.commit}\n")
    assert "platforms/xen-pvh.yaml" in text


def test_patchcheck_passes_every_patch(series_dirs, tree: edk2.Edk2Tree) -> None:
    gen, _ = series_dirs
    assert [c.clean for c in gen.checks] == [True] * 6    # five files and the commit range
    # Independently of the generator's own check: the tree's PatchCheck.py, file by file.
    for p in gen.patches:
        proc = subprocess.run([sys.executable, str(tree.root / "BaseTools/Scripts/PatchCheck.py"), str(p)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
        assert "The commit message format passed all checks." in proc.stdout
        assert "The code passed all checks." in proc.stdout
        assert "WARNING" not in proc.stdout


def test_series_header_include_in_patch_3_is_the_generated_one(series_dirs, platform) -> None:
    gen, _ = series_dirs
    added = [ln[1:] for ln in gen.patches[2].read_bytes().split(b"\n")
             if ln.startswith(b"+") and not ln.startswith(b"+++")]
    assert b"\n".join(added) + b"\n" == patch_intree.elf_header_include(platform).encode()


def test_series_sec_fix_in_patch_1_turns_upstream_secmain_into_the_override(series_dirs, tree, tmp_path) -> None:
    # The commit's file is the tree's own SecMain.c with the override's patch applied (by git apply itself).
    gen, _ = series_dirs
    sec = tmp_path / "OvmfPkg/Sec/SecMain.c"
    sec.parent.mkdir(parents=True)
    sec.write_bytes((tree.root / "OvmfPkg/Sec/SecMain.c").read_bytes())
    subprocess.run(["git", "apply", str(REPO_ROOT / "overrides/xen-pvh/patches/Sec-PEI-PPI-list-at-run-time.patch")],
                   cwd=tmp_path, check=True, env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert gen.series.commits[0].files == (("OvmfPkg/Sec/SecMain.c", sec.read_bytes()),)
    text = gen.patches[0].read_bytes()
    assert b"+  PrivateDispatchTable[0].Guid  = &gEfiTemporaryRamSupportPpiGuid;\r\n" in text
    assert b"-EFI_PEI_PPI_DESCRIPTOR  mPrivateDispatchTableMp[] = {\r\n" in text


# --- bad input: one line, exit != 0 ---------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ovmfgen", "patch", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**os.environ, "OVMFGEN_VERBOSE": ""})


def test_cli_unknown_platform_is_one_line(real_cache: None, edk2_tree_202605: edk2.Edk2Tree) -> None:
    proc = _cli("--platform", "no-such-platform", "--signoff", SIGNER)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: unknown platform 'no-such-platform' (known: {', '.join(sorted(p.stem for p in (REPO_ROOT / 'platforms').glob('*.yaml')))})"]


def test_cli_unwritable_output_is_one_line(tmp_path: Path, real_cache: None,
                                           edk2_tree_202605: edk2.Edk2Tree) -> None:
    """`invoke patch` targets the newest tree by default: it must be there for the later checks."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    proc = _cli("--platform", "xen-pvh", "--signoff", SIGNER, "-o", str(blocker / "patches"))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines == [f"error: cannot write the series to {blocker / 'patches'}: not a directory ({blocker} is a file)"]
    proc = _cli("--platform", "xen-pvh", "--signoff", SIGNER, "-o", str(blocker))
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"error: cannot write the series to {blocker}: not a directory"]


def test_cli_bad_signoff_is_one_line(tmp_path: Path) -> None:
    proc = _cli("--platform", "xen-pvh", "--signoff", "nobody", "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: --signoff 'nobody' is not 'Name <email>'"]
    assert not (tmp_path / "out").exists()


# --- the per-commit driver (with a cheap step instead of a full build) -------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=patch_git.git_env({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                                             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})
                          ).stdout


@pytest.fixture
def three_commits(tmp_path: Path) -> tuple[Path, list[str]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "README").write_text("base\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    commits = []
    for subject, files in [("OvmfPkg: Add header", {"OvmfPkg/Hdr.inc": "h\n"}),
                           ("OvmfPkg: Add platform", {"OvmfPkg/XenOvmf.dsc": "ok\n"}),
                           ("OvmfPkg: Break platform", {"OvmfPkg/XenOvmf.dsc": "broken\n"})]:
        for rel, text in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", subject)
        commits.append(_git(repo, "rev-parse", "HEAD").strip())
    return repo, commits


def test_check_each_runs_the_step_at_every_commit_and_reports_each(three_commits) -> None:
    repo, commits = three_commits
    seen = []

    def step(tree: Path, index: int):
        seen.append((index, _git(tree, "rev-parse", "HEAD").strip()))
        dsc = tree / "OvmfPkg/XenOvmf.dsc"
        if not dsc.is_file():
            return "nothing to build", "no OvmfPkg/XenOvmf.dsc yet", None
        # A cheap stand-in for `build`: a real command whose exit status decides.
        proc = subprocess.run(["grep", "-qx", "ok", str(dsc)])
        if proc.returncode:
            raise OvmfgenError("build exit 1: the DSC is broken")
        return "built", "", None

    said: list[str] = []
    results = patch_verify.check_each(repo, commits, step, progress=said.append)
    assert said[0::2] == ["[1/3] OvmfPkg: Add header: checking ...", "[2/3] OvmfPkg: Add platform: checking ...",
                          "[3/3] OvmfPkg: Break platform: checking ..."]
    assert said[1::2] == [r.line(3) for r in results]
    assert seen == [(1, commits[0]), (2, commits[1]), (3, commits[2])]
    assert [(r.index, r.status) for r in results] == [(1, "nothing to build"), (2, "built"), (3, "failed")]
    assert results[2].detail == "build exit 1: the DSC is broken" and not results[2].ok
    assert [r.subject for r in results] == ["OvmfPkg: Add header", "OvmfPkg: Add platform", "OvmfPkg: Break platform"]
    assert results[0].line(3) == "[1/3] OvmfPkg: Add header: nothing to build (no OvmfPkg/XenOvmf.dsc yet)"
    assert results[1].line(3).startswith("[2/3] OvmfPkg: Add platform: built in ")
    # The tip is checked out again afterwards.
    assert _git(repo, "rev-parse", "HEAD").strip() == commits[2]
    assert (repo / "OvmfPkg/XenOvmf.dsc").read_text() == "broken\n"


def test_build_step_has_nothing_to_build_before_the_dsc_exists(platform, tree: edk2.Edk2Tree, three_commits,
                                                               tmp_path: Path) -> None:
    repo, commits = three_commits
    step = patch_verify.edk2_build_step(platform, tree.basetools, tmp_path / "work")
    results = patch_verify.check_each(repo, commits[:1], step)
    assert [(r.status, r.detail) for r in results] == [("nothing to build", "no OvmfPkg/XenOvmf.dsc yet")]
    with pytest.raises(OvmfgenError, match="target 'FAST' is not one of DEBUG, RELEASE, NOOPT"):
        patch_verify.edk2_build_step(platform, tree.basetools, tmp_path, target="FAST")


def test_build_env_is_what_edksetup_would_set(tree: edk2.Edk2Tree, tmp_path: Path) -> None:
    env = patch_verify.build_env(tmp_path / "ws", tree.basetools, tmp_path / "Conf")
    assert env["WORKSPACE"] == str(tmp_path / "ws") and env["EDK_TOOLS_PATH"] == str(tree.basetools)
    assert env["PATH"].split(os.pathsep)[0] == str(tree.basetools / "BinWrappers" / "PosixLike")
    assert "PACKAGES_PATH" not in env
    assert env["PYTHONHASHSEED"] == "1"    # as edksetup.sh: stable AutoGen output, real incremental builds
    assert sorted(p.name for p in (tmp_path / "Conf").iterdir()) == ["build_rule.txt", "target.txt", "tools_def.txt"]


def test_the_series_for_the_newest_tree(tmp_path: Path, edk2_tree_202605: edk2.Edk2Tree) -> None:
    """--edk2 edk2-stable202605: based on that release, its GCC tool chain and its Ubuntu-GCC pipeline."""
    r = resolve(make_request("xen-pvh", edk2="edk2-stable202605"))
    gen = patch_write.generate(r, tmp_path / "new", signer=parse_signoff(SIGNER))
    assert patch_write.default_output_dir(r) == \
        patch_write.default_output_dir(resolve(make_request("xen-pvh"))) / "edk2-stable202605"
    assert (gen.series.tag, gen.series.upstream_commit) == ("edk2-stable202605", edk2_tree_202605.identity["commit"])
    # The SEC fix (the same patch as for 202502), then that release's two fixes of its own (edk2: edk2-stable202605
    # overrides: the Nocheck DebugLib's MemDebugLogLib, the Shell as the boot option of last resort),
    # then the NvVars patch, on top of the Shell commit's BdsPlatform.c.
    assert [c.paths for c in gen.series.commits[:4]] == [
        ("OvmfPkg/Sec/SecMain.c",),
        ("OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf",),
        ("OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",),
        ("OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",
         "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf")]
    shell, nvvars = dict(gen.series.commits[2].files), dict(gen.series.commits[3].files)
    bds = "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"
    assert b"    LOAD_OPTION_ACTIVE,\r\n" in shell[bds] and b"gXenIoProtocolGuid" not in shell[bds]
    assert b"    LOAD_OPTION_ACTIVE,\r\n" in nvvars[bds] and b"&gXenIoProtocolGuid,\r\n" in nvvars[bds]
    assert gen.series.commits[6].paths == (
        "Maintainers.txt", "OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC.yml", "OvmfPkg/PlatformCI/XenOvmfBuild.py")
    text = gen.cover.read_text()
    assert "It is based on edk2-stable202605,\ncommit b03a21a63e3bd001f52c527e5a57feddb53a690b." in text
    assert "TOOL_CHAIN_TAG=GCC\n" in gen.patches[6].read_text().replace("\r", "")
    assert [c.clean for c in gen.checks] == [True] * 8    # seven files and the commit range
    dates = set(re.findall(r"^Date: (.*)$", "".join(p.read_text() for p in gen.patches), re.M))
    assert dates <= {f"Fri, 8 May 2026 00:0{i}:00 +0000" for i in range(1, 8)}, dates


def test_invoke_patch_defaults_to_the_newest_tree(monkeypatch: pytest.MonkeyPatch, real_cache: None,
                                                  edk2_tree_202605: edk2.Edk2Tree) -> None:
    """A series must apply to the current upstream tree; --edk2 still targets an older one."""
    from ovmfgen.edk2.releases import NEWEST_TAG
    from ovmfgen.patch import command as patch_command

    asked: list[str | None] = []

    def fake_generate(resolved, out, signer):
        asked.append(resolved.tree.tag)
        raise OvmfgenError("stop here")

    monkeypatch.setattr(patch_command, "generate", fake_generate)
    for edk2_arg in (None, "edk2-stable202502"):
        with pytest.raises(OvmfgenError, match="stop here"):
            patch_command.patch_command("xen-pvh", edk2=edk2_arg)
    assert asked == [NEWEST_TAG, "edk2-stable202502"]
