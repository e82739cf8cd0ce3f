"""``invoke patch``: the platform as an upstream edk2 patch series, checked the way edk2 checks patches.

Upstream edk2 takes a new platform as a reviewed patch series. For a Xen PVH platform (xen-pvh) this
module writes, against the pinned edk2 release (``edk2.PIN``):

1. ``OvmfPkg: Add PVH ELF header for the XenOvmf flash image``: ``OvmfPkg/XenOvmfElfHeader.fdf.inc``,
   one ``DATA`` block per supported FD size (``!if $(FD_SIZE_IN_KB) == ...``) holding
   ``ovmfgen.elf.pvh_header`` for that size. Upstream's build has no post-processor, so in the tree
   the header must be inside the FD the build writes;
2. ``OvmfPkg: Add XenOvmf platform for Xen PVH guests``: ``XenOvmf.dsc``/``.fdf`` rendered from the
   platform, transformed for in-tree use (``in_tree_platform``: every reserved header region, which
   ovmfgen's own build leaves erased, ``!include``s the header file instead);
3. ``OvmfPkg: Add XenOvmf to PlatformCI and Maintainers.txt``: a stuart PlatformCI script
   derived from the tree's ``XenBuild.py``, a job in the Ubuntu GCC5 Platform CI pipeline and the
   ``F:`` lines in the Xen section of ``Maintainers.txt``.

Conventions (edk2's): CRLF files with SPDX license headers, subjects of at most 75 characters,
bodies that say why, ``Cc:`` lines from ``BaseTools/Scripts/GetMaintainer.py`` run on each commit,
``Signed-off-by:`` from ``--signoff`` or ``git config user.name/user.email``, a cover letter
naming the upstream tag and commit, and the diff options of edk2's ``SetupGit.py``. Every patch is
checked with the tree's ``BaseTools/Scripts/PatchCheck.py`` (as files, and as commits, which adds
edk2's one-package-per-commit rule) before anything is published.

Determinism: the tree has no ``.git``, so the base commit is a snapshot of the tree, built once into
a bare repository in the cache (``<cache>/patch/``, never inside the tree). The commits are made
with plumbing (no checkout), with author/committer dates derived from the edk2 release date and the
user's git configuration shut out; ``git format-patch --zero-commit --no-signature`` keeps commit
hashes and the git version out of the files. The same inputs give byte-identical patch files, so a
re-roll shows only real changes.

``--check-each`` then does what a maintainer would: ``git am`` the published files onto a pristine
clone of the base and run plain upstream ``build`` after every commit (``check_each``: one
workspace, incremental builds, with edksetup.sh's PYTHONHASHSEED so they are incremental), checking
each built ``OVMF.fd`` with ``elf.check_elf``.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ovmfgen import elf, paths
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.platform.model import Conditional, Include, Platform, ReservedRegion, Section, Statement
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say

TARGETS = ("DEBUG", "RELEASE", "NOOPT")
ARCH = "X64"
TOOL_CHAIN = "GCC5"
SUBJECT_MAX = 75            # PatchCheck.py: a subject of 76 characters or more is an error
BODY_WIDTH = 72             # PatchCheck.py warns from 76; git's own convention is 72
COVER_LETTER = "0000-cover-letter.patch"
BASE_SCHEMA = 1             # bump when the way the base snapshot is made changes
BASE_MARKER = "ovmfgen-base"
BASE_REF = "refs/heads/base"
# Identity of the base snapshot commit (never shown in a patch: --zero-commit, no --base).
BASE_IDENT = ("ovmfgen", "ovmfgen@localhost.invalid")
# Files an earlier build may have left in a tree that is not pristine: never part of the base.
BASE_EXCLUDES = (
    ":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc", ":(exclude)Build",
    ":(exclude)Conf/target.txt", ":(exclude)Conf/tools_def.txt", ":(exclude)Conf/build_rule.txt",
    ":(exclude)Conf/.cache",
)
# Where the PlatformCI job goes: after upstream's Xen job in the Ubuntu GCC5 pipeline.
CI_PIPELINE = "OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC5.yml"
CI_ANCHOR_JOB = "OVMF_XEN_X64_DEBUG"
CI_TEMPLATE = "OvmfPkg/PlatformCI/XenBuild.py"
MAINTAINERS = "Maintainers.txt"
MAINTAINERS_SECTION = "OvmfPkg: Xen-related modules"
# edk2's SetupGit.py settings that shape `git format-patch` output (diff order, hunk headers, abbrev).
INI_XFUNCNAME = r"^\[[A-Za-z0-9_., ]+]"

_EMAIL_RE = re.compile(r"^\s*(?P<name>.*?)(?P<space>\s*)<(?P<email>[^<>]*)>\s*$")


# ---------------------------------------------------------------------------------------------
# Who signs the series


@dataclass(frozen=True)
class Ident:
    """A ``Name <email>`` identity: the author, committer and Signed-off-by of every commit."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


def parse_signoff(text: str) -> Ident:
    """``"Name <email>"`` as an Ident, checked against PatchCheck.py's e-mail address rules."""
    m = _EMAIL_RE.match(text or "")
    if not m:
        raise OvmfgenError(f"--signoff '{text}' is not 'Name <email>'")
    name, email = m.group("name").strip(), m.group("email").strip()
    if not name:
        raise OvmfgenError(f"--signoff '{text}': the name is missing (expected 'Name <email>')")
    if not m.group("space"):
        raise OvmfgenError(f"--signoff '{text}': put a space between the name and '<'")
    if "," in name and not (len(name) > 2 and name[0] == name[-1] == '"'):
        raise OvmfgenError(f"--signoff '{text}': put quotes (\") around a name with a comma")
    if not re.fullmatch(r"[^\s@<>]+@[^\s@<>]+", email):
        raise OvmfgenError(f"--signoff '{text}': '{email}' is not an e-mail address")
    if email.lower() == "devel@edk2.groups.io":
        raise OvmfgenError(f"--signoff '{text}': that is the mailing list, not a person")
    if any(ord(c) < 32 for c in name):
        raise OvmfgenError(f"--signoff '{text}': control characters in the name")
    return Ident(name, email)


def default_signoff(cwd: Path | None = None) -> Ident:
    """The identity from ``git config user.name``/``user.email`` (what ``git commit -s`` would use)."""
    values = []
    for key in ("user.name", "user.email"):
        try:
            proc = run(["git", "config", "--get", key], cwd=cwd or paths.REPO_ROOT, check=False)
        except OvmfgenError:
            proc = None
        values.append(proc.stdout.strip() if proc is not None and proc.returncode == 0 else "")
    name, email = values
    if not name or not email:
        raise OvmfgenError("no Signed-off-by identity: pass --signoff 'Name <email>' or set git config "
                           "user.name and user.email")
    return parse_signoff(f"{name} <{email}>")


# ---------------------------------------------------------------------------------------------
# The in-tree files


def header_include_path(platform: Platform) -> str:
    """Workspace-relative path of the generated ELF header include, e.g. ``OvmfPkg/XenOvmfElfHeader.fdf.inc``."""
    return f"{platform.package_dir}/{platform.dsc_name}ElfHeader.fdf.inc"


def ci_script_path(platform: Platform) -> str:
    """Workspace-relative path of the PlatformCI script, e.g. ``OvmfPkg/PlatformCI/XenOvmfBuild.py``."""
    return f"{platform.package_dir}/PlatformCI/{platform.dsc_name}Build.py"


def _replace_reserved(body: tuple[Statement, ...], include: str) -> tuple[tuple[Statement, ...], int]:
    out: list[Statement] = []
    count = 0
    for stmt in body:
        if isinstance(stmt, ReservedRegion):
            out.append(Include(include, loc=stmt.loc))
            count += 1
        elif isinstance(stmt, Conditional):
            branches = []
            for br in stmt.branches:
                new_body, n = _replace_reserved(br.body, include)
                branches.append(replace(br, body=new_body))
                count += n
            orelse = stmt.orelse
            if orelse is not None:
                orelse, n = _replace_reserved(orelse, include)
                count += n
            out.append(replace(stmt, branches=tuple(branches), orelse=orelse))
        else:
            out.append(stmt)
    return tuple(out), count


def in_tree_platform(platform: Platform) -> Platform:
    """``platform`` as it must be in the edk2 tree: each reserved ELF header region includes the header.

    ovmfgen's own build leaves that region erased and writes the header after the build; upstream has
    no post-processor, so the FDF ``!include``s the generated header file right after the region line
    and the FD the build writes is the PVH ELF.
    """
    include = header_include_path(platform)
    sections: list[Section] = []
    total = 0
    for section in platform.fdf:
        body, n = _replace_reserved(section.body, include)
        total += n
        sections.append(replace(section, body=body))
    if total == 0:
        raise OvmfgenError(f"platform {platform.name} reserves no region for the PVH ELF header "
                           "(no 'reserved:' region in its FD): nothing to put the header in", platform.loc)
    return replace(platform, fdf=tuple(sections))


_GENERATED_LINE = re.compile(r"^#  Generated by ovmfgen from [^\r\n]*\r\n#\r\n", re.M)


def in_tree_text(text: str) -> str:
    """A rendered DSC/FDF without ovmfgen's "Generated by ... edit that file, not this one" header line.

    In the edk2 tree the file is the source a maintainer edits; the cover letter says where it came from.
    """
    return _GENERATED_LINE.sub("", text, count=1)


def in_tree_files(platform: Platform) -> dict[str, bytes]:
    """The platform's DSC and FDF for the edk2 tree (path -> CRLF bytes), FDF including the ELF header."""
    from ovmfgen.platform.render import render

    rendered = render(in_tree_platform(platform))
    return {
        platform.dsc_path: in_tree_text(rendered.dsc).encode("utf-8"),
        platform.fdf_path: in_tree_text(rendered.fdf).encode("utf-8"),
    }


def _crlf(lines: Sequence[str]) -> str:
    return "".join(line.rstrip() + "\r\n" for line in lines)


def _header_fields(header: bytes, fd_size: int, base: int) -> list[tuple[str | None, int, str]]:
    """The header split into commented groups: (group title or None, length, comment)."""
    (_ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize,
     e_phnum, e_shentsize, e_shnum, e_shstrndx) = elf.EHDR32.unpack_from(header, 0)
    fields: list[tuple[str | None, int, str]] = [
        ("Elf32_Ehdr", 8, "e_ident: ELFMAG, ELFCLASS32, ELFDATA2LSB, EV_CURRENT, OSABI 0"),
        (None, 8, "e_ident: ABI version 0, padding"),
        (None, 4, f"e_type {e_type} (ET_EXEC), e_machine {e_machine} (EM_386)"),
        (None, 4, f"e_version {e_version}"),
        (None, 4, f"e_entry {e_entry:#x}: the PVH entry point"),
        (None, 4, f"e_phoff {e_phoff:#x}"),
        (None, 4, f"e_shoff {e_shoff:#x}: no section headers"),
        (None, 4, f"e_flags {e_flags:#x}"),
        (None, 4, f"e_ehsize {e_ehsize:#x}, e_phentsize {e_phentsize:#x}"),
        (None, 4, f"e_phnum {e_phnum}, e_shentsize {e_shentsize:#x}"),
        (None, 4, f"e_shnum {e_shnum}, e_shstrndx {e_shstrndx}"),
    ]
    names = ("p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags", "p_align")
    for i in range(e_phnum):
        ph = elf.PHDR32.unpack_from(header, e_phoff + i * elf.PHDR32.size)
        kind = {elf.PT_LOAD: "PT_LOAD", elf.PT_NOTE: "PT_NOTE"}.get(ph[0], str(ph[0]))
        title = {
            "PT_LOAD": f"Elf32_Phdr PT_LOAD: the whole {fd_size // elf.MIB} MiB image at {base:#x}",
            "PT_NOTE": "Elf32_Phdr PT_NOTE: p_align 4 (QEMU's PVH loader divides by it)",
        }.get(kind, f"Elf32_Phdr {kind}")
        for j, (name, value) in enumerate(zip(names, ph)):
            shown = kind if name == "p_type" else (
                "PF_R|PF_W|PF_X" if name == "p_flags" and value == 7 else
                "PF_R" if name == "p_flags" and value == 4 else f"{value:#x}")
            fields.append((title if j == 0 else None, 4, f"{name} {shown}"))
    namesz, descsz, ntype = elf.NOTE_HDR.unpack_from(header, elf.NOTE_OFFSET)
    (desc,) = struct.unpack_from("<I", header, elf.NOTE_OFFSET + elf.NOTE_HDR.size + namesz)
    fields += [
        ("Elf32_Nhdr: XEN_ELFNOTE_PHYS32_ENTRY", 4, f"n_namesz {namesz}"),
        (None, 4, f"n_descsz {descsz}"),
        (None, 4, f"n_type {ntype} (XEN_ELFNOTE_PHYS32_ENTRY)"),
        (None, namesz, 'name "Xen"'),
        (None, descsz, f"desc {desc:#x}: XenResetVector's PVH entry, 0x30 bytes below the image end"),
    ]
    if sum(length for _, length, _ in fields) != len(header):
        raise AssertionError("ELF header layout does not cover the header")  # elf.pvh_header changed shape
    return fields


def _data_block(header: bytes, fd_size: int, base: int) -> list[str]:
    lines = ["DATA = {"]
    offset = 0
    fields = _header_fields(header, fd_size, base)
    for index, (title, length, comment) in enumerate(fields):
        if title:
            lines.append(f"  # {title}")
        chunk = ", ".join(f"0x{b:02x}" for b in header[offset:offset + length])
        sep = "," if index < len(fields) - 1 else ""
        lines.append(f"  {chunk}{sep}  # {comment}")
        offset += length
    lines.append("}")
    return lines


def elf_header_include(platform: Platform) -> str:
    """``XenOvmfElfHeader.fdf.inc`` (CRLF): the PVH ELF header for each FD size the platform supports.

    One ``!if $(FD_SIZE_IN_KB) == N`` block per size in the platform's ``elf.header_region``, each a
    ``DATA`` block holding ``elf.pvh_header(size, elf.base)`` byte for byte, annotated field by field.
    """
    spec = platform.elf
    if spec is None or not spec.header_region:
        raise OvmfgenError(f"platform {platform.name} has no 'elf:' header regions: it is not a PVH platform",
                           platform.loc)
    base = spec.base
    lines = [
        "## @file",
        f"#  PVH ELF header of the {platform.dsc_name} flash image, for each supported FD size.",
        "#",
        "#  Xen (xl/libxl: type='pvh', kernel='OVMF.fd') and QEMU (-kernel OVMF.fd) load",
        f"#  the flash image as a 32-bit ELF at {base:#x} and start it at the address in its",
        "#  XEN_ELFNOTE_PHYS32_ENTRY note: XenResetVector's PVH entry point, 0x30 bytes",
        "#  below the end of the image. Entry point and load size depend on the FD size,",
        "#  hence one header for each FD_SIZE_IN_KB. The note segment has p_align 4:",
        "#  QEMU's PVH loader aligns the note name to p_align (a division by zero on 0).",
        "#",
        "#  The header occupies the start of the region OvmfXen keeps as a VarStore",
        "#  placeholder, which Xen never uses: hvmloader still loads the same image",
        "#  below 4 GiB for HVM guests.",
        "#",
        "#  SPDX-License-Identifier: BSD-2-Clause-Patent",
        "#",
        "##",
        "",
    ]
    for size_kb, reserved in spec.header_region:
        fd_size = size_kb * 1024
        header = elf.pvh_header(fd_size, base)
        if reserved < len(header):
            raise OvmfgenError(f"platform {platform.name}: the {size_kb} KiB FD reserves {reserved:#x} bytes for "
                               f"the ELF header, which needs {len(header):#x}", platform.loc)
        lines += [f"!if $(FD_SIZE_IN_KB) == {size_kb}", *_data_block(header, fd_size, base), "!endif", ""]
    while lines and not lines[-1]:
        lines.pop()
    return _crlf(lines)


def ci_script(platform: Platform, template: bytes) -> bytes:
    """The stuart PlatformCI script for the platform, derived from the tree's ``XenBuild.py``."""
    text = template.decode("utf-8")
    dsc_line = re.compile(r'^(\s*return\s+)"OvmfXen\.dsc"(\s*)$', re.M)
    title_line = re.compile(r"^# Script to Build OVMF UEFI firmware(\s*)$", re.M)
    if len(dsc_line.findall(text)) != 1 or len(title_line.findall(text)) != 1:
        raise OvmfgenError(f"{CI_TEMPLATE} in the edk2 tree is not the XenBuild.py this series is derived from "
                           '(expected one `return "OvmfXen.dsc"` and one "# Script to Build" line)')
    text = dsc_line.sub(lambda m: f'{m.group(1)}"{platform.dsc_name}.dsc"{m.group(2)}', text)
    title = f"# Script to Build the {platform.dsc_name} UEFI firmware for Xen PVH and HVM guests"
    text = title_line.sub(lambda m: title + m.group(1), text)
    return text.encode("utf-8")


def add_ci_job(text: bytes, platform: Platform) -> bytes:
    """The Ubuntu GCC5 Platform CI pipeline with a DEBUG X64 job for the platform after upstream's Xen job.

    Like upstream's Xen job it skips the QEMU run: without Xen the firmware stops in XenPlatformPei.
    """
    lines = text.decode("utf-8").split("\r\n")
    anchor = f"          {CI_ANCHOR_JOB}:"
    job = f"{platform.dsc_name.upper()}_X64_DEBUG"
    if any(line.strip() == f"{job}:" for line in lines):
        raise OvmfgenError(f"{CI_PIPELINE} already has a {job} job")
    try:
        start = lines.index(anchor)
    except ValueError:
        raise OvmfgenError(f"{CI_PIPELINE} in the edk2 tree has no {CI_ANCHOR_JOB} job to add {job} after") from None
    end = start + 1
    while end < len(lines) and lines[end].strip():
        end += 1
    block = [
        f"          {job}:",
        f'            Build.File: "$(package)/PlatformCI/{platform.dsc_name}Build.py"',
        '            Build.Arch: "X64"',
        '            Build.Flags: ""',
        '            Build.Target: "DEBUG"',
        "            # Xen-only platform: without Xen it stops in XenPlatformPei",
        '            Run.Flags: "QEMU_SKIP=TRUE"',
        "            Run: $(should_run)",
        "",
    ]
    lines[end + 1:end + 1] = block
    return "\r\n".join(lines).encode("utf-8")


def add_maintainers(text: bytes, patterns: Sequence[str]) -> bytes:
    """Maintainers.txt with ``F: pattern`` lines added, in order, to the Xen section (OvmfPkg)."""
    lines = text.decode("utf-8").split("\r\n")
    try:
        start = lines.index(MAINTAINERS_SECTION)
    except ValueError:
        raise OvmfgenError(f"{MAINTAINERS} in the edk2 tree has no '{MAINTAINERS_SECTION}' section") from None
    end = start + 1
    while end < len(lines) and lines[end].strip():
        end += 1
    for pattern in patterns:
        entry = f"F: {pattern}"
        files = [i for i in range(start + 1, end) if lines[i].startswith("F:")]
        if entry in (lines[i] for i in files):
            raise OvmfgenError(f"{MAINTAINERS} already lists '{entry}'")
        if not files:
            raise OvmfgenError(f"{MAINTAINERS}: the '{MAINTAINERS_SECTION}' section lists no files")
        at = next((i for i in files if lines[i] > entry), files[-1] + 1)
        lines.insert(at, entry)
        end += 1
    return "\r\n".join(lines).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# The series, as data


@dataclass(frozen=True)
class Commit:
    """One commit of the series: subject, body (why), and the files it writes (path -> bytes)."""

    subject: str
    body: str
    files: tuple[tuple[str, bytes], ...]
    builds: bool            # whether the platform DSC exists once this commit is applied

    @property
    def paths(self) -> tuple[str, ...]:
        """The files this commit adds or changes."""
        return tuple(p for p, _ in self.files)


@dataclass(frozen=True)
class Series:
    """The patch series for a platform against one edk2 release."""

    platform: str
    source: str             # the platform YAML it was generated from
    tag: str
    upstream_commit: str
    release_date: str       # YYYY-MM-DD: every date in the series derives from it
    cover_subject: str
    cover_body: str
    commits: tuple[Commit, ...]


_KEEP_TOGETHER = re.compile(r"(?<=\d) (?=MiB\b)|(?<=-D) |(?<=-b) |(?<=-p) |(?<=-a) |(?<=-t) ")


def _wrap(paragraphs: Sequence[str], width: int = BODY_WIDTH) -> str:
    """Paragraphs filled to ``width``; one starting with a blank or ``-``, or with a line break, is kept.

    A number stays on the line of its unit ("2 MiB") and an option on the line of its value ("-D X").
    """
    out = []
    for para in paragraphs:
        if para[:1] in (" ", "-") or "\n" in para:
            out.append(para)
        else:
            glued = _KEEP_TOGETHER.sub("\x00", para)
            filled = textwrap.fill(glued, width=width, break_long_words=False, break_on_hyphens=False)
            out.append(filled.replace("\x00", " "))
    for para in out:
        for line in para.splitlines():
            if len(line) > width + 3:
                raise AssertionError(f"commit message line too long: {line}")  # a preformatted paragraph
    return "\n\n".join(out)


def _sizes(platform: Platform) -> str:
    mib = [f"{kb // 1024}" for kb, _ in platform.elf.header_region] if platform.elf else []
    return (", ".join(mib[:-1]) + " and " + mib[-1]) if len(mib) > 1 else "".join(mib)


def plan_series(platform: Platform, tree_root: Path, tag: str, upstream_commit: str, release_date: str) -> Series:
    """The series for ``platform`` against the edk2 tree at ``tree_root``: pure data, no git involved."""
    if platform.package_dir != "OvmfPkg":
        raise OvmfgenError(f"platform {platform.name} lives in {platform.package_dir}/: the upstream series is "
                           "for OvmfPkg platforms (PlatformCI, Maintainers.txt section)", platform.loc)
    if platform.overrides:
        raise OvmfgenError(f"platform {platform.name} overrides edk2 files ({', '.join(o.path for o in platform.overrides)}): "
                           "the upstream series cannot carry overrides; upstream those changes first",
                           platform.overrides[0].loc)
    name = platform.dsc_name
    inc = header_include_path(platform)
    base = platform.elf.base if platform.elf else elf.DEFAULT_BASE

    def read(rel: str) -> bytes:
        try:
            return (tree_root / rel).read_bytes()
        except OSError as exc:
            raise OvmfgenError(f"cannot read {rel} in the edk2 tree {tree_root}: {exc.strerror or exc}") from None

    header_inc = elf_header_include(platform).encode("utf-8")
    platform_files = in_tree_files(platform)
    timer = ("the local APIC timer instead of the ACPI PM timer" if platform.feature("timer") == "lapic"
             else "the ACPI PM timer")
    c1 = Commit(
        subject=f"OvmfPkg: Add PVH ELF header for the {name} flash image",
        body=_wrap([
            f"{name}, the Xen-only platform added by the next patch, is booted by Xen's toolstack as a PVH "
            f"guest (type='pvh', kernel=<the flash image>): libxl loads the image as an ELF at 1 MiB, where a "
            "PVH guest has RAM, instead of just below 4 GiB where hvmloader puts it for HVM guests. So the "
            "image starts with an ELF header, in the region OvmfXen keeps as a VarStore placeholder that Xen "
            "never uses.",
            "OvmfXen's XenElfHeader.fdf.inc hand-writes that header for a 2 MiB image: a 1 or 4 MiB build gets "
            "a wrong entry point and load size. This include carries a header computed for each supported "
            f"FD_SIZE_IN_KB ({_sizes(platform)} MiB): a PT_LOAD of the whole image at {base:#x} and a "
            "XEN_ELFNOTE_PHYS32_ENTRY note pointing at XenResetVector's PVH entry point, 0x30 bytes below the "
            "end of the image.",
            "The note segment has p_align 4, not 0: QEMU's PVH loader (-kernel) aligns the note name to p_align "
            "and dies with SIGFPE on 0 (QEMU 7.2), while Xen's libelf takes either.",
            f"Nothing includes the file yet; {name}.fdf will.",
        ]),
        files=((inc, header_inc),),
        builds=False,
    )
    c2 = Commit(
        subject=f"OvmfPkg: Add {name} platform for Xen PVH guests",
        body=_wrap([
            f"Add {name}.dsc and {name}.fdf, a platform for Xen guests only, as proposed on xen-devel "
            "(\"[RFC] OVMF on PVH\", 2018). Without the QEMU/KVM paths the early boot code no longer needs "
            "\"if Xen do this, else do that\", and the platform can use drivers that work on both PVH and HVM "
            f"guests, such as {timer}.",
            "It is derived from OvmfXen: XenResetVector with its PVH entry point, XenPlatformPei, the Xen PV "
            f"drivers. The region at FD offset 0 holds the PVH ELF header from {inc.rsplit('/', 1)[-1]} "
            "(previous patch), so the OVMF.fd the build writes is both",
            f" - a PVH kernel that libxl (type='pvh', kernel='OVMF.fd') and QEMU\n"
            f"   (-kernel OVMF.fd) load at {base:#x}, and\n"
            " - the flash image hvmloader loads below 4 GiB for HVM guests.",
            f"Build with: build -p {platform.dsc_path} -a X64 -t GCC5 (-D FD_SIZE_1MB, -D FD_SIZE_2MB or "
            f"-D FD_SIZE_4MB to choose the FD size; {platform.feature('fd_size')} MiB by default).",
        ]),
        files=tuple(sorted(platform_files.items())),
        builds=True,
    )
    ci_rel = ci_script_path(platform)
    c3 = Commit(
        subject=f"OvmfPkg: Add {name} to PlatformCI and Maintainers.txt",
        body=_wrap([
            f"Add {ci_rel.split('/', 1)[1]}, modelled on XenBuild.py, so that stuart builds {name}:",
            f"  stuart_build -c {ci_rel} \\\n    -a X64 TOOL_CHAIN_TAG=GCC5",
            f"and a {name.upper()}_X64_DEBUG job to the Ubuntu GCC5 Platform CI pipeline. Like "
            "OVMF_XEN_X64_DEBUG it skips the QEMU run: without Xen the firmware stops in XenPlatformPei "
            "(\"Xen isn't detected\").",
            f"List the new files with the other Xen-related OvmfPkg modules in {MAINTAINERS}.",
        ]),
        files=(
            (MAINTAINERS, add_maintainers(read(MAINTAINERS), [f"{platform.package_dir}/{name}*", ci_rel])),
            (CI_PIPELINE, add_ci_job(read(CI_PIPELINE), platform)),
            (ci_rel, ci_script(platform, read(CI_TEMPLATE))),
        ),
        builds=True,
    )
    commits = (c1, c2, c3)
    for c in commits:
        if len(c.subject) > SUBJECT_MAX:
            raise OvmfgenError(f"subject longer than {SUBJECT_MAX} characters: {c.subject}")
    cover_subject = f"OvmfPkg: Add {name}, a Xen-only platform that boots as PVH"
    cover_body = _wrap([
        f"This series adds {name}, an OVMF platform for Xen guests only, whose flash image is at the same "
        "time a PVH kernel: Xen's toolstack (type='pvh', kernel='OVMF.fd') and QEMU (-kernel) load it at "
        "1 MiB and enter it through XenResetVector's PVH entry point, and hvmloader still loads it for "
        "HVM guests.",
        f"It is based on {tag},\ncommit {upstream_commit}.",
        " - patch 1 adds the PVH ELF header, computed for each FD size\n"
        f"   ({_sizes(platform)} MiB; p_align 4 for QEMU): it replaces the hand-written\n"
        "   2 MiB-only header OvmfXen uses, and nothing includes it yet;\n"
        f" - patch 2 adds {name}.dsc/.fdf, derived from OvmfXen, with the header\n"
        "   inside the FD;\n"
        " - patch 3 adds a stuart PlatformCI script and pipeline job, and the\n"
        "   Maintainers.txt entries.",
        "Every patch passes BaseTools/Scripts/PatchCheck.py and the tree builds after each of them. To try "
        "it:",
        f"  build -p {platform.dsc_path} -a X64 -t GCC5 -b DEBUG\n"
        "  qemu-system-x86_64 -accel tcg -m 512 -display none \\\n"
        f"    -kernel Build/{name}/DEBUG_GCC5/FV/OVMF.fd \\\n"
        "    -debugcon file:debug.log -global isa-debugcon.iobase=0x402\n"
        "  (without Xen, debug.log ends in XenPlatformPei: \"ERROR: Xen isn't\n"
        "  detected\")",
        f"{name}.dsc/.fdf and the header were generated by ovmfgen from {platform.source}.",
    ])
    return Series(platform=platform.name, source=platform.source, tag=tag, upstream_commit=upstream_commit,
                  release_date=release_date, cover_subject=cover_subject, cover_body=cover_body, commits=commits)


# ---------------------------------------------------------------------------------------------
# git


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every git command: the user's and the system's git configuration shut out.

    (Their ``format.*``/``diff.*`` settings would change the patch files; ``core.autocrlf`` the blobs.)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
    env.update(extra or {})
    return env


def _git(args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
         env: Mapping[str, str] | None = None, check: bool = True) -> str:
    proc = run(["git", *args], cwd=cwd, env=git_env(env), check=check)
    return proc.stdout


def _edk2_git_options(tree_root: Path) -> list[str]:
    """``-c`` options for the diff settings edk2's BaseTools/Scripts/SetupGit.py configures."""
    conf = tree_root / "BaseTools" / "Conf"
    return ["-c", "core.abbrev=12", "-c", "diff.algorithm=patience", "-c", "diff.renames=copies",
            "-c", f"diff.orderFile={conf / 'diff.order'}", "-c", f"core.attributesFile={conf / 'gitattributes'}",
            "-c", f"diff.ini.xfuncname={INI_XFUNCNAME}", "-c", "core.whitespace=cr-at-eol",
            "-c", "core.autocrlf=false", "-c", "core.safecrlf=false"]


def _date(release_date: str, minutes: int) -> str:
    """A git date ``minutes`` after midnight UTC of ``release_date`` (YYYY-MM-DD)."""
    try:
        day = datetime.strptime(release_date, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise OvmfgenError(f"edk2 release date '{release_date}' is not YYYY-MM-DD") from None
    return f"@{int((day + timedelta(minutes=minutes)).timestamp())} +0000"


def _ident_env(ident: Ident, date: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": ident.name, "GIT_AUTHOR_EMAIL": ident.email, "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": ident.name, "GIT_COMMITTER_EMAIL": ident.email, "GIT_COMMITTER_DATE": date}


# Attributes that make git store and check out every file byte for byte (no EOL conversion, filters).
_RAW_ATTRIBUTES = "* -text -filter -ident -eol -working-tree-encoding\n"


@dataclass(frozen=True)
class BaseRepo:
    """The bare repository holding the base snapshot of the edk2 tree (one commit, ``refs/heads/base``)."""

    git_dir: Path
    commit: str


def base_dir(tree_digest: str, tag: str) -> Path:
    """Where the base snapshot of the tree with identity ``tree_digest`` is kept in the cache."""
    return paths.cache_dir() / "patch" / f"base-{tag}-{tree_digest[:16]}-v{BASE_SCHEMA}.git"


def ensure_base(tree_root: Path, tree_digest: str, tag: str, release_date: str) -> BaseRepo:
    """The base commit: a snapshot of ``tree_root`` in a bare repo in the cache (made once, ~15 s).

    The tree is only read (``git --work-tree``); its ``.gitignore`` files are overridden (``add -f``:
    upstream tracks generated files some of them name) and attributes switched off, so the snapshot
    holds the tree's bytes exactly. Made in a temporary directory and renamed into place.
    """
    final = base_dir(tree_digest, tag)
    marker = final / BASE_MARKER
    if marker.is_file():
        commit = marker.read_text(encoding="utf-8").strip()
        if run(["git", "--git-dir", final, "cat-file", "-e", f"{commit}^{{commit}}"], env=git_env(),
               check=False).returncode == 0:
            return BaseRepo(final, commit)
    if not (tree_root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{tree_root} is not an edk2 tree (no OvmfPkg/)")
    final.parent.mkdir(parents=True, exist_ok=True)
    say(f"making the base commit: a snapshot of the edk2 tree ({tag}) in {display_path(final)} (once)")
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=final.parent))
    try:
        _git(["init", "-q", "--bare", tmp])
        (tmp / "info").mkdir(exist_ok=True)
        (tmp / "info" / "attributes").write_text(_RAW_ATTRIBUTES, encoding="utf-8")
        index = {"GIT_INDEX_FILE": str(tmp / "snapshot.index")}
        common = ["--git-dir", tmp, "--work-tree", tree_root, "-c", "core.autocrlf=false", "-c", "core.safecrlf=false"]
        _git([*common, "add", "-A", "-f", "--", ".", *BASE_EXCLUDES], env=index)
        tree = _git([*common, "write-tree"], env=index).strip()
        message = f"{tag}\n\nThe edk2 tree ovmfgen builds against, as a snapshot (no history).\n"
        env = _ident_env(Ident(*BASE_IDENT), _date(release_date, 0))
        commit = run(["git", "--git-dir", tmp, "commit-tree", tree], env=git_env(env),
                     input_text=message).stdout.strip()
        _git(["--git-dir", tmp, "update-ref", BASE_REF, commit])
        _git(["--git-dir", tmp, "symbolic-ref", "HEAD", BASE_REF])
        (tmp / "snapshot.index").unlink(missing_ok=True)
        (tmp / BASE_MARKER).write_text(commit + "\n", encoding="utf-8")
        if marker.is_file():        # another ovmfgen finished first: keep its (identical) snapshot
            shutil.rmtree(tmp)
            return BaseRepo(final, marker.read_text(encoding="utf-8").strip())
        if final.exists():          # an incomplete one (no marker): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BaseRepo(final, commit)


def _work_repo(base: BaseRepo, where: Path) -> Path:
    """An empty repo at ``where`` that sees the base's objects (alternates): commits without a checkout."""
    _git(["init", "-q", where])
    (where / ".git" / "objects" / "info" / "alternates").write_text(
        str((base.git_dir / "objects").resolve()) + "\n", encoding="utf-8")
    (where / ".git" / "info").mkdir(exist_ok=True)
    (where / ".git" / "info" / "attributes").write_text(_RAW_ATTRIBUTES, encoding="utf-8")
    return where


def _make_commit(repo: Path, parent: str, files: Sequence[tuple[str, bytes]], message: str, env: Mapping[str, str],
                 scratch: Path) -> str:
    """A commit on ``parent`` writing ``files``, through a private index (nothing checked out)."""
    index = {"GIT_INDEX_FILE": str(scratch / "commit.index")}
    _git(["read-tree", parent], cwd=repo, env=index)
    for i, (rel, data) in enumerate(files):
        blob_file = scratch / f"blob{i}"
        blob_file.write_bytes(data)
        blob = _git(["hash-object", "-w", "--no-filters", blob_file], cwd=repo).strip()
        existing = _git(["ls-files", "-s", "--", rel], cwd=repo, env=index).split()
        mode = existing[0] if existing else "100644"     # a changed file keeps its mode
        _git(["update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}"], cwd=repo, env=index)
    tree = _git(["write-tree"], cwd=repo, env=index).strip()
    return run(["git", "commit-tree", tree, "-p", parent], cwd=repo, env=git_env(env),
               input_text=message).stdout.strip()


def _message(commit: Commit, cc: Sequence[str], signer: Ident) -> str:
    trailers = [f"Cc: {c}" for c in cc] + [f"Signed-off-by: {signer}"]
    return f"{commit.subject}\n\n{commit.body}\n\n" + "\n".join(trailers) + "\n"


@dataclass(frozen=True)
class Recipients:
    """What GetMaintainer.py says for one commit: people (Cc:) and mailing lists (To:)."""

    people: tuple[str, ...]
    lists: tuple[str, ...]


def get_maintainers(repo: Path, commit: str, tree_root: Path) -> Recipients:
    """Run edk2's ``BaseTools/Scripts/GetMaintainer.py`` on ``commit`` (Maintainers.txt from ``repo``'s worktree)."""
    script = tree_root / "BaseTools" / "Scripts" / "GetMaintainer.py"
    proc = run([sys.executable, script, commit], cwd=repo, env=git_env(), check=False)
    if proc.returncode != 0:
        raise CommandError([sys.executable, str(script), commit], proc.returncode, proc.stdout)
    people, lists = [], []
    for line in proc.stdout.splitlines():
        if not line.startswith("  "):
            continue
        address = line.strip()
        if "<" in address and ">" in address:
            people.append(address[: address.index(">") + 1])
        elif address:
            lists.append(address)
    return Recipients(tuple(sorted(set(people))), tuple(sorted(set(lists))))


@dataclass(frozen=True)
class CheckResult:
    """PatchCheck.py's verdict on one patch file (or on the commit range)."""

    name: str
    ok: bool
    output: str

    @property
    def warnings(self) -> tuple[str, ...]:
        """PatchCheck's WARNING lines (a long body line, a new binary file): reported, not fatal upstream."""
        return tuple(ln.strip() for ln in self.output.splitlines() if ln.startswith("WARNING"))

    @property
    def clean(self) -> bool:
        """Passed with no warning: what this module requires of its own series."""
        return self.ok and not self.warnings


def patchcheck(targets: Sequence[str | Path], tree_root: Path, cwd: Path | None = None) -> list[CheckResult]:
    """Run the tree's ``BaseTools/Scripts/PatchCheck.py`` (python3) on each target: a patch file or a rev range."""
    script = tree_root / "BaseTools" / "Scripts" / "PatchCheck.py"
    results = []
    for target in targets:
        proc = run([sys.executable, script, str(target)], cwd=cwd, env=git_env(), check=False)
        # PatchCheck exits -1 (255) on a problem; it prints "passed all checks" for a good message and code.
        results.append(CheckResult(Path(str(target)).name, proc.returncode == 0, proc.stdout))
    return results


@dataclass(frozen=True)
class Generated:
    """A written series: the directory, the cover letter and patches, and PatchCheck's verdicts."""

    out_dir: Path
    cover: Path
    patches: tuple[Path, ...]
    series: Series
    base: BaseRepo
    checks: tuple[CheckResult, ...]


def _fill_cover(text: str, series: Series) -> str:
    if "*** SUBJECT HERE ***" not in text or "*** BLURB HERE ***" not in text:
        raise OvmfgenError("git format-patch wrote a cover letter without its placeholders")
    text = text.replace("*** SUBJECT HERE ***", series.cover_subject, 1)
    text = text.replace("*** BLURB HERE ***", series.cover_body, 1)
    return text.rstrip("\n") + f"\n\nbase-commit: {series.upstream_commit}\n"


def write_series(series: Series, base: BaseRepo, signer: Ident, out_dir: Path, tree_root: Path) -> Generated:
    """Commit the series on the base, run GetMaintainer.py and format-patch, check, publish to ``out_dir``.

    The commits are made twice: first without trailers, so GetMaintainer.py can be run on each (with the
    series' final Maintainers.txt, which names the new files), then with their ``Cc:`` lines and
    ``Signed-off-by:``. Nothing is written to ``out_dir`` unless every patch passes PatchCheck.py; the
    directory is replaced as a whole (no stale patches from a longer earlier series).
    """
    from ovmfgen.fsutil import replace_dir

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise OvmfgenError(f"cannot write the series to {display_path(out_dir)}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryDirectory(prefix="ovmfgen-patch-") as tmp:
            scratch = Path(tmp)
            repo = _work_repo(base, scratch / "repo")
            dates = [_date(series.release_date, i + 1) for i in range(len(series.commits))]

            # Pass 1: the commits without trailers, for GetMaintainer.py.
            parent = base.commit
            draft = []
            for commit, date in zip(series.commits, dates):
                msg = f"{commit.subject}\n\n{commit.body}\n"
                parent = _make_commit(repo, parent, commit.files, msg, _ident_env(signer, date), scratch)
                draft.append(parent)
            maintainers = dict(f for c in series.commits for f in c.files).get(MAINTAINERS)
            (repo / MAINTAINERS).write_bytes(maintainers if maintainers is not None
                                             else (tree_root / MAINTAINERS).read_bytes())
            recipients = [get_maintainers(repo, c, tree_root) for c in draft]

            # Pass 2: the real commits.
            parent = base.commit
            for commit, date, rcpt in zip(series.commits, dates, recipients):
                parent = _make_commit(repo, parent, commit.files, _message(commit, rcpt.people, signer),
                                      _ident_env(signer, date), scratch)
            tip = parent
            lists = sorted({a for r in recipients for a in r.lists})

            fp = ["format-patch", "-q", "--cover-letter", "--numbered", "--no-signature", "--zero-commit",
                  "-M", "--stat=1000", "--stat-graph-width=20", "--subject-prefix=PATCH", "-o", staging]
            fp += [f"--to={a}" for a in lists]
            _git([*_edk2_git_options(tree_root), *fp, f"{base.commit}..{tip}"], cwd=repo,
                 env=_ident_env(signer, dates[-1]))
            cover = staging / COVER_LETTER
            cover.write_text(_fill_cover(cover.read_text(encoding="utf-8"), series), encoding="utf-8")
            patches = sorted(p for p in staging.glob("*.patch") if p.name != COVER_LETTER)
            if len(patches) != len(series.commits):
                raise OvmfgenError(f"git format-patch wrote {len(patches)} patches for {len(series.commits)} commits")

            # edk2's checks: each patch file, and the commits (adds the one-package-per-commit rule).
            _git(["read-tree", tip], cwd=repo)    # PatchCheck lists *.dec files with `git ls-files`
            checks = patchcheck(patches, tree_root, cwd=staging)
            checks += [replace(c, name=f"commits 1-{len(series.commits)}")
                       for c in patchcheck([f"{base.commit}..{tip}"], tree_root, cwd=repo)]
            bad = [c for c in checks if not c.clean]
            if bad:
                first = bad[0]
                reason = next((ln.strip(" *") for ln in first.output.splitlines()
                               if ln.startswith((" *", "WARNING"))), "")
                raise OvmfgenError(f"PatchCheck.py rejects {first.name}: {reason or first.output.strip()[-200:]}")
        replace_dir(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OvmfgenError(f"cannot write the series to {display_path(out_dir)}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    moved = tuple(out_dir / p.name for p in patches)
    return Generated(out_dir, out_dir / COVER_LETTER, moved, series, base, tuple(checks))


def check_writable(out: Path) -> None:
    """Fail early (one line) when the series cannot be written to ``out`` (replaced as a whole)."""
    for where in (out, *out.parents):
        if where.exists():
            if not where.is_dir():
                shown = "" if where == out else f" ({display_path(where)} is a file)"
                raise OvmfgenError(f"cannot write the series to {display_path(out)}: not a directory{shown}")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent):
            pass
    except OSError as exc:
        raise OvmfgenError(f"cannot write the series to {display_path(out)}: {exc.strerror or exc}") from None


def default_output_dir(platform_name: str) -> Path:
    """``dist/patches/<platform>/``."""
    return paths.DIST_DIR / "patches" / platform_name


def generate(platform_name: str, out_dir: Path | None = None, signoff: str | None = None,
             validate_platform: bool = True) -> Generated:
    """Load (and validate) the platform and write its upstream series for the pinned edk2 to ``out_dir``."""
    from ovmfgen.edk2.tree import PIN, locate
    from ovmfgen.platform.load import load_platform

    signer = parse_signoff(signoff) if signoff is not None else default_signoff()
    platform = load_platform(platform_name)
    out = Path(out_dir) if out_dir is not None else default_output_dir(platform.name)
    check_writable(out)
    tree = locate()
    if validate_platform:
        from ovmfgen.platform.validate import validate

        validate(platform)
    ident = tree.identity
    tag = str(ident.get("tag") or PIN.tag)
    upstream = str(ident.get("commit") or PIN.commit)
    release_date = str(ident.get("release_date") or PIN.release_date)
    series = plan_series(platform, tree.root, tag, upstream, release_date)
    base = ensure_base(tree.root, tree.digest, tag, release_date)
    return write_series(series, base, signer, out, tree.root)


# ---------------------------------------------------------------------------------------------
# Applying and building: what a maintainer does with the series


def patch_files(patch_dir: Path) -> list[Path]:
    """The patches of a series directory in order, cover letter excluded."""
    found = sorted(p for p in Path(patch_dir).glob("[0-9][0-9][0-9][0-9]-*.patch") if p.name != COVER_LETTER)
    if not found:
        raise OvmfgenError(f"no patches in {display_path(patch_dir)}")
    return found


def apply_series(base: BaseRepo, patches: Sequence[Path], dest: Path, committer: Ident) -> list[str]:
    """Clone the base into ``dest`` (a pristine copy of the pinned tree) and ``git am`` the patches.

    ``--keep-cr``: edk2's files are CRLF (edk2's SetupGit.py sets am.keepcr). Returns the new commits,
    oldest first.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git(["clone", "-q", "-c", "core.autocrlf=false", base.git_dir, dest])
    (dest / ".git" / "info").mkdir(exist_ok=True)
    (dest / ".git" / "info" / "attributes").write_text(_RAW_ATTRIBUTES, encoding="utf-8")
    env = {"GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}
    try:
        _git(["am", "-q", "--keep-cr", *[p.resolve() for p in patches]], cwd=dest, env=env)
    except CommandError as exc:
        raise OvmfgenError(f"git am does not apply the series to {base.commit[:12]} (the pinned tree): "
                           f"{exc.tail(3).strip()}") from None
    return _git(["rev-list", "--reverse", f"{base.commit}..HEAD"], cwd=dest).split()


@dataclass(frozen=True)
class StepResult:
    """What building the tree after one commit gave."""

    index: int              # 1-based position in the series
    commit: str
    subject: str
    status: str             # "built" | "nothing to build" | "failed"
    seconds: float
    detail: str
    fd: Path | None = None

    @property
    def ok(self) -> bool:
        """A step passes when it built (and the FD checked out) or had nothing to build."""
        return self.status != "failed"

    def line(self, total: int) -> str:
        """One report line: ``[2/3] subject: built in 212 s (...)``."""
        took = f" in {self.seconds:.0f} s" if self.status != "nothing to build" else ""
        return f"[{self.index}/{total}] {self.subject}: {self.status}{took}" + (f" ({self.detail})" if self.detail else "")


StepOutcome = tuple[str, str, "Path | None"]   # status, detail, FD


def check_each(repo: Path, commits: Sequence[str], step: Callable[[Path, int], StepOutcome],
               progress: Callable[[str], None] | None = None) -> list[StepResult]:
    """Check out every commit of ``commits`` in turn in ``repo`` and run ``step(repo, index)`` on it.

    One workspace for all commits, so a build step is incremental after the first (git checkout only
    touches the files a commit changes). ``progress`` gets a line before and after each step. Every commit is checked even after a failure, so the report
    says which ones are broken; the tip is checked out again at the end.
    """
    results = []
    tip = _git(["rev-parse", "HEAD"], cwd=repo).strip()
    try:
        for i, commit in enumerate(commits, 1):
            _git(["checkout", "-q", "--detach", commit], cwd=repo)
            subject = _git(["log", "-1", "--format=%s", commit], cwd=repo).strip()
            if progress is not None:
                progress(f"[{i}/{len(commits)}] {subject}: checking ...")
            start = time.monotonic()
            try:
                status, detail, fd = step(repo, i)
            except OvmfgenError as exc:
                status, detail, fd = "failed", exc.message, None
            results.append(StepResult(i, commit, subject, status, time.monotonic() - start, detail, fd))
            if progress is not None:
                progress(results[-1].line(len(commits)))
    finally:
        _git(["checkout", "-q", "--detach", tip], cwd=repo)
    return results


def build_env(workspace: Path, basetools: Path, conf_dir: Path) -> dict[str, str]:
    """The environment of a plain upstream ``build`` in ``workspace`` (what edksetup.sh would set up)."""
    from ovmfgen.fsutil import write_if_changed

    # Written only when they change: the next (incremental) build then sees the same Conf.
    for name in ("target", "tools_def", "build_rule"):
        write_if_changed(conf_dir / f"{name}.txt", (basetools / "Conf" / f"{name}.template").read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("PACKAGES_PATH", "EDK_TOOLS_BIN")}
    env.update({
        "WORKSPACE": str(workspace), "EDK_TOOLS_PATH": str(basetools), "CONF_PATH": str(conf_dir),
        "PYTHON_COMMAND": sys.executable,
        # edksetup.sh pins it: AutoGen picks each module's STACK_COOKIE_VALUE by hash(), so without it
        # every run rewrites every AutoGen.h and an incremental build recompiles everything.
        "PYTHONHASHSEED": "1",
        "PATH": f"{basetools / 'BinWrappers' / 'PosixLike'}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


def edk2_build_step(platform: Platform, basetools: Path, work: Path, target: str = "DEBUG",
                    jobs: int | None = None) -> Callable[[Path, int], StepOutcome]:
    """A ``check_each`` step: plain upstream ``build -p <dsc> -a X64 -t GCC5 -b TARGET``, then ``check_elf``.

    A commit without the platform DSC has nothing to build. Logs go to ``work/build-<n>.log``.
    """
    if target not in TARGETS:
        raise OvmfgenError(f"target '{target}' is not one of {', '.join(TARGETS)}")
    output_dir = platform.header_field("OUTPUT_DIRECTORY") or f"Build/{platform.dsc_name}"

    def step(repo: Path, index: int) -> StepOutcome:
        if not (repo / platform.dsc_path).is_file():
            return "nothing to build", f"no {platform.dsc_path} yet", None
        env = build_env(repo, basetools, work / "Conf")
        log = work / f"build-{index}.log"
        argv = ["build", "-p", platform.dsc_path, "-a", ARCH, "-t", TOOL_CHAIN, "-b", target,
                "-n", str(jobs or os.cpu_count() or 1)]
        proc = run(argv, cwd=repo, env=env, stdout_path=log, check=False, timeout=3 * 3600)
        if proc.returncode != 0:
            return "failed", f"build exit {proc.returncode}: {_first_error(log)}; log {display_path(log)}", None
        fd = repo / output_dir / f"{target}_{TOOL_CHAIN}" / "FV" / f"{platform.fd_name}.fd"
        if not fd.is_file():
            return "failed", f"build succeeded but wrote no {display_path(fd)}", None
        findings = elf.check_elf(fd.read_bytes())
        bad = [f for f in findings if not f.ok]
        if bad:
            return "failed", f"{fd.name} fails check-elf: {bad[0].rule}: {bad[0].detail}", fd
        return "built", f"{fd.name} is a PVH ELF: check-elf {len(findings)}/{len(findings)} ok", fd

    return step


def _first_error(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    try:
        from ovmfgen.build.diagnose import summarize_failure

        return summarize_failure(text).message
    except Exception:  # noqa: BLE001 - the summary is a convenience; fall back to the log's error lines
        errors = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()]
        return errors[0] if errors else (text.strip().splitlines() or ["empty log"])[-1]


@dataclass(frozen=True)
class Verification:
    """``git am`` + per-commit builds of a series in a pristine clone of the pinned tree."""

    repo: Path
    commits: tuple[str, ...]
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        """Every step passed."""
        return all(s.ok for s in self.steps)

    @property
    def fd(self) -> Path | None:
        """The FD built at the tip of the series (the last step that built one)."""
        return next((s.fd for s in reversed(self.steps) if s.fd is not None), None)


def verify_series(patch_dir: Path, work: Path, platform_name: str, each: bool = True, target: str = "DEBUG",
                  jobs: int | None = None, progress: Callable[[str], None] | None = None) -> Verification:
    """Apply the series in ``patch_dir`` to a pristine clone of the pinned tree in ``work`` and build it.

    ``each``: build after every commit (bisectability); otherwise only at the tip. Nothing of ovmfgen is
    involved in the build: upstream's ``build`` with EDK_TOOLS_PATH = the pinned BaseTools, WORKSPACE =
    the clone, Conf from the BaseTools templates.
    """
    from ovmfgen.edk2.tree import PIN, locate
    from ovmfgen.platform.load import load_platform

    platform = load_platform(platform_name)
    tree = locate()
    ident = tree.identity
    base = ensure_base(tree.root, tree.digest, str(ident.get("tag") or PIN.tag),
                       str(ident.get("release_date") or PIN.release_date))
    work = Path(work)
    repo = work / "edk2"
    commits = apply_series(base, patch_files(patch_dir), repo, Ident(*BASE_IDENT))
    step = edk2_build_step(platform, tree.basetools, work, target=target, jobs=jobs)
    chosen = commits if each else commits[-1:]
    steps = check_each(repo, chosen, step, progress)
    if not each:
        steps = [replace(s, index=len(commits)) for s in steps]
    return Verification(repo, tuple(commits), tuple(steps))


# ---------------------------------------------------------------------------------------------
# The command


def patch_command(platform: str, output: str | None = None, signoff: str | None = None,
                  check_each_commit: bool = False, target: str = "DEBUG", jobs: int | None = None) -> Generated:
    """``invoke patch``: write the series to ``output`` (dist/patches/PLATFORM/), PatchCheck it, and with
    ``check_each_commit`` apply it to a pristine tree and build after every commit."""
    gen = generate(platform, Path(output) if output else None, signoff)
    size = sum(p.stat().st_size for p in (gen.cover, *gen.patches))
    say(f"{display_path(gen.out_dir)}: cover letter + {len(gen.patches)} patches ({size} bytes), "
        f"based on {gen.series.tag} ({gen.series.upstream_commit[:12]})")
    for p in gen.patches:
        say(f"  {p.name}")
    files = [c for c in gen.checks if c.name.endswith(".patch")]
    say(f"PatchCheck.py: {sum(c.clean for c in files)}/{len(files)} patch files pass with no warning; "
        f"the commits pass too (one package per commit)")
    if check_each_commit:
        work = paths.BUILD_DIR / "patch-check" / gen.series.platform
        say(f"applying with git am to a pristine {gen.series.tag} in {display_path(work / 'edk2')} and building "
            "after each commit")
        ver = verify_series(gen.out_dir, work, platform, each=True, target=target, jobs=jobs, progress=say)
        if not ver.ok:
            failed = [s for s in ver.steps if not s.ok]
            raise OvmfgenError(f"the tree does not build after commit {failed[0].index} of {len(ver.commits)} "
                               f"({failed[0].subject}): {failed[0].detail}")
    return gen
