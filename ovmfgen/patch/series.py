"""The series as data: who signs it (``Ident``) and its commits, subjects and bodies (``plan_series``)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import elf, paths
from ovmfgen.edk2.conventions import toolchain_tag
from ovmfgen.edk2.tree import PIN
from ovmfgen.errors import OvmfgenError
from ovmfgen.patch.intree import (
    CI_TEMPLATE, MAINTAINERS, add_ci_job, add_maintainers, ci_pipeline, ci_script, ci_script_path,
    elf_header_include, header_include_path, in_tree_files,
)
from ovmfgen.platform.model import Platform
from ovmfgen.platform.resolve import Resolved
from ovmfgen.run import run

SUBJECT_MAX = 75            # PatchCheck.py: a subject of 76 characters or more is an error
BODY_WIDTH = 72             # PatchCheck.py warns from 76; git's own convention is 72

_EMAIL_RE = re.compile(r"^\s*(?P<name>.*?)(?P<space>\s*)<(?P<email>[^<>]*)>\s*$")


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


def override_commits(r: Resolved) -> tuple[Commit, ...]:
    """One commit per override: the files the platform's build uses in place of edk2's, sent upstream.

    The platform's ``overrides:`` entry carries the commit's subject and body (``commit:``); the series
    cannot carry an override without one, since upstream has nothing to say why. Entries apply in order
    (platform/overrides.py), so a patch on a file an earlier entry replaced is a commit on top of it.
    """
    for ov in r.platform.overrides:
        if not ov.commit_subject:
            raise OvmfgenError(f"override {ov.path} has no 'commit:' (subject and body): the upstream series "
                               "carries each override as its own commit", ov.loc)
    return tuple(Commit(subject=s.override.commit_subject, body=s.override.commit_body, files=s.files, builds=False)
                 for s in r.steps)


def plan_series(r: Resolved) -> Series:
    """The series for the resolved platform against its edk2 tree: pure data, no git involved."""
    platform, tree_root, tag = r.platform, r.tree.root, r.tree.tag
    upstream_commit = str(r.tree.identity.get("commit") or PIN.commit)
    release_date = r.tree.release_date
    if platform.package_dir != "OvmfPkg":
        raise OvmfgenError(f"platform {platform.name} lives in {platform.package_dir}/: the upstream series is "
                           "for OvmfPkg platforms (PlatformCI, Maintainers.txt section)", platform.loc)
    fixes = override_commits(r)
    name = platform.dsc_name
    tc = toolchain_tag(tree_root)
    pipeline, ci_tc = ci_pipeline(tree_root)
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
            f"Build with: build -p {platform.dsc_path} -a X64 -t {tc} (-D FD_SIZE_1MB, -D FD_SIZE_2MB or "
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
            f"  stuart_build -c {ci_rel} \\\n    -a X64 TOOL_CHAIN_TAG={ci_tc}",
            f"and a {name.upper()}_X64_DEBUG job to the Ubuntu {ci_tc} Platform CI pipeline. Like "
            "OVMF_XEN_X64_DEBUG it skips the QEMU run: without Xen the firmware stops in XenPlatformPei "
            "(\"Xen isn't detected\").",
            f"List the new files with the other Xen-related OvmfPkg modules in {MAINTAINERS}.",
        ]),
        files=(
            (MAINTAINERS, add_maintainers(read(MAINTAINERS), [f"{platform.package_dir}/{name}*", ci_rel])),
            (pipeline, add_ci_job(read(pipeline), platform, pipeline)),
            (ci_rel, ci_script(platform, read(CI_TEMPLATE))),
        ),
        builds=True,
    )
    commits = (*fixes, c1, c2, c3)
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
        "".join(f" - patch {i} fixes what the platform needs fixed first:\n   {c.subject};\n"
                for i, c in enumerate(fixes, 1))
        + f" - patch {len(fixes) + 1} adds the PVH ELF header, computed for each FD size\n"
        f"   ({_sizes(platform)} MiB; p_align 4 for QEMU): it replaces the hand-written\n"
        "   2 MiB-only header OvmfXen uses, and nothing includes it yet;\n"
        f" - patch {len(fixes) + 2} adds {name}.dsc/.fdf, derived from OvmfXen, with the header\n"
        "   inside the FD;\n"
        f" - patch {len(fixes) + 3} adds a stuart PlatformCI script and pipeline job, and the\n"
        "   Maintainers.txt entries.",
        "Every patch passes BaseTools/Scripts/PatchCheck.py and the tree builds after each of them. To try "
        "it:",
        f"  build -p {platform.dsc_path} -a X64 -t {tc} -b DEBUG\n"
        "  qemu-system-x86_64 -accel tcg -m 512 -display none \\\n"
        f"    -kernel Build/{name}/DEBUG_{tc}/FV/OVMF.fd \\\n"
        "    -debugcon file:debug.log -global isa-debugcon.iobase=0x402\n"
        "  (without Xen, debug.log ends in XenPlatformPei: \"ERROR: Xen isn't\n"
        "  detected\")",
        f"{name}.dsc/.fdf and the header were generated by ovmfgen from {platform.source}.",
    ])
    return Series(platform=platform.name, source=platform.source, tag=tag, upstream_commit=upstream_commit,
                  release_date=release_date, cover_subject=cover_subject, cover_body=cover_body, commits=commits)
