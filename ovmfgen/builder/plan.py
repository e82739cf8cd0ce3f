"""The build plan: everything decided before building (paths, the stuart command, the inputs, their hash).

No-op
-----
The input hash covers the rendered files, the override files, the edk2 identity digest, the tool
versions (gcc, binutils, nasm, iasl), target, FD size, defines, features, version stamps, ovmfgen's
version and the code that shapes the artifacts. When it equals the published manifest's and the
published files still match their recorded sha256, the build says so and returns (no lock, no
validation, no edk2 tooling imported). ``--force`` builds anyway (EDK2's own incremental build).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ovmfgen import __version__, paths
from ovmfgen.builder.child.pathfree import source_date_epoch
from ovmfgen.edk2.conventions import ARCH, fd_size_label, toolchain_tag
from ovmfgen.edk2.tree import Edk2Tree
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.resolve import Resolved
from ovmfgen.run import run

STATE_DIR = ".ovmfgen"                  # inside a workspace: what ovmfgen itself keeps there
PCD_VERSION = "gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString"
PCD_RELEASE_DATE = "gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareReleaseDateString"
STUART_PLATFORM = Path(__file__).resolve().parent / "child" / "stuart_platform.py"
# The modules whose code shapes the artifacts: a change to them invalidates the no-op.
RECIPE_MODULES = ("request.py", "builder/plan.py", "builder/workspace.py", "builder/stuart.py", "builder/manifest.py",
                  "builder/publish.py", "builder/command.py", "builder/child/stuart_platform.py",
                  "builder/child/linkcache.py", "builder/child/pathfree.py", "edk2/conventions.py", "edk2/modules.py", "elf.py",
                  "platform/reads.py", "platform/resolve.py")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _first_line(argv: Sequence[str], pick: int = 0) -> str:
    try:
        proc = run(argv, check=False)
    except OvmfgenError:
        return "missing"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return "missing"
    return lines[min(pick, len(lines) - 1)]


def tool_versions() -> dict[str, str]:
    """The version lines of the tools that shape the firmware (gcc, binutils, nasm, iasl)."""
    return {
        "gcc": _first_line(["gcc", "--version"]),
        "binutils": _first_line(["ld", "--version"]),
        "nasm": _first_line(["nasm", "-v"]),
        # iasl -v: a banner whose second line carries the version.
        "iasl": _first_line(["iasl", "-v"], pick=1),
    }


def recipe_digest() -> str:
    """sha256 over the ovmfgen modules whose code shapes the artifacts."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent.parent
    for name in RECIPE_MODULES:
        h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return h.hexdigest()


def input_hash(inputs: Mapping[str, object]) -> str:
    """sha256 of the canonical JSON of ``inputs`` (sorted keys, no spaces)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_bytes(text.encode("utf-8"))


def default_version_string(tree: Edk2Tree) -> str:
    """``<edk2 tree's name>-ovmfgen-<version>``, as distributions stamp theirs."""
    return f"{tree.tag}-ovmfgen-{__version__}"


def smbios_date(iso: str) -> str:
    """``2025-02-21`` -> ``02/21/2025`` (SMBIOS type 0 BIOS release date format)."""
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})$", iso.strip())
    if not m:
        raise OvmfgenError(f"bad release date '{iso}': expected YYYY-MM-DD")
    return f"{m.group(2)}/{m.group(3)}/{m.group(1)}"


def default_release_date(tree: Edk2Tree) -> str:
    """The edk2 tree's release date (from its identity: the tag's, else the commit's), SMBIOS format."""
    return smbios_date(tree.release_date)


def pcd_arguments(version_string: str, release_date: str) -> list[str]:
    """``--pcd`` values for the version stamps, as Fedora's edk2-build.py writes them (``L<text>\\0``)."""
    return [f"{PCD_VERSION}=L{version_string}\\0", f"{PCD_RELEASE_DATE}=L{release_date}\\0"]


@dataclass(frozen=True)
class Plan:
    """A resolved platform's build, decided: version stamps, tool versions, the inputs and their hash."""

    resolved: Resolved
    toolchain: str                          # the tree's TOOL_CHAIN_TAG (GCC on both known trees)
    version_string: str
    release_date: str
    source_date_epoch: int                  # SOURCE_DATE_EPOCH: the edk2 release's date at 00:00 UTC
    tools: dict[str, str]
    inputs: dict = field(hash=False)
    input_hash: str = ""

    # What the build stages read, as the resolved platform has it.
    request = property(lambda self: self.resolved.request)
    platform = property(lambda self: self.resolved.platform)
    layout = property(lambda self: self.resolved.layout)
    suffix = property(lambda self: self.resolved.suffix)
    workspace = property(lambda self: self.resolved.workspace)
    dist = property(lambda self: self.resolved.dist)
    rendered = property(lambda self: self.resolved.rendered_files)
    overrides = property(lambda self: self.resolved.overrides)
    fd_size = property(lambda self: self.resolved.fd_size)
    features = property(lambda self: self.resolved.features)
    defines = property(lambda self: self.resolved.defines)
    edk2_root = property(lambda self: self.resolved.tree.root)
    edk2_tools = property(lambda self: self.resolved.tree.basetools)
    edk2_identity = property(lambda self: self.resolved.tree.identity)

    @property
    def output_base(self) -> Path:
        """EDK2's BUILD_OUTPUT_BASE: ``<workspace>/<OUTPUT_DIRECTORY>/<TARGET>_<TOOLCHAIN>``."""
        out = self.platform.header_field("OUTPUT_DIRECTORY") or "Build"
        return self.workspace / out / f"{self.request.target}_{self.toolchain}"

    @property
    def fd_path(self) -> Path:
        """The FD the build publishes."""
        return self.output_base / "FV" / f"{self.platform.fd_name}.fd"

    @property
    def report_path(self) -> Path:
        """The build report stuart asks for (BUILDREPORT_FILE)."""
        return self.output_base / "BUILD_REPORT.TXT"

    @property
    def log_path(self) -> Path:
        """Where this build's console output is captured (published as build.log)."""
        return self.workspace / STATE_DIR / f"build-{self.request.target}.log"

    @property
    def fd_file_name(self) -> str:
        """``OVMF.fd``."""
        return f"{self.platform.fd_name}.fd"

    def stuart_argv(self) -> list[str]:
        """The exact stuart command, complete: rerunnable by hand in the prepared workspace."""
        req = self.request
        argv = [stuart_build_executable(), "-c", str(STUART_PLATFORM),
                "--workspace", str(self.workspace), "--edk2", str(self.edk2_root),
                "--edk-tools-path", str(self.edk2_tools), "--dsc", self.platform.dsc_path,
                "--arch", ARCH, "--name", self.platform.header_field("PLATFORM_NAME") or req.platform]
        for pcd in pcd_arguments(self.version_string, self.release_date):
            argv += ["--pcd", pcd]
        # Same cookies for every build of this platform and target: reproducible, cache-friendly.
        argv += ["--stack-cookie-seed", f"{self.platform.name}/{req.target}"]
        # The tree's release date, never the wall clock (child/pathfree.py keeps build paths out).
        argv += ["--source-date-epoch", str(self.source_date_epoch)]
        if req.ccache:
            argv += ["--ccache-dir", str(ccache_dir()), "--link-cache-dir", str(link_cache_dir())]
        argv += [f"TARGET={req.target}", f"TOOL_CHAIN_TAG={self.toolchain}",
                 f"MAX_CONCURRENT_THREAD_NUMBER={req.jobs or os.cpu_count() or 1}"]
        argv += [f"BLD_*_{k}={v}" for k, v in sorted(self.defines.items())]
        return argv


def stuart_build_executable() -> str:
    """``stuart_build`` of the Python running ovmfgen (its venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "stuart_build"
    if beside.is_file():
        return str(beside)
    found = shutil.which("stuart_build")
    if not found:
        raise OvmfgenError("stuart_build not found: install edk2-pytool-extensions (pip install -e .)")
    return found


def ccache_dir() -> Path:
    """CCACHE_DIR for --ccache builds: under ovmfgen's cache."""
    return paths.cache_dir() / "ccache"


def link_cache_dir() -> Path:
    """Where --ccache builds cache LTO links (ovmfgen/builder/child/linkcache.py): beside ccache's directory."""
    return paths.cache_dir() / "linkcache"


def plan(resolved: Resolved) -> Plan:
    """The build of ``resolved``: version stamps, tool versions, the input hash.

    Cheap (no edk2 tooling is imported): the no-op check runs on this alone.
    """
    req, tree = resolved.request, resolved.tree
    version_string = req.version_string or default_version_string(tree)
    release_date = req.release_date or default_release_date(tree)
    toolchain = toolchain_tag(tree.root)
    tools = tool_versions()
    inputs = {
        "ovmfgen": __version__,
        "recipe": recipe_digest(),
        "platform": resolved.platform.name,
        "target": req.target,
        "toolchain": toolchain,
        "arch": ARCH,
        "fd_size": fd_size_label(resolved.fd_size),
        "defines": dict(sorted(resolved.defines.items())),
        "features": dict(sorted(resolved.features.items())),
        "version_string": version_string,
        "release_date": release_date,
        "rendered": {k: sha256_bytes(v) for k, v in sorted(resolved.rendered_files.items())},
        "overrides": {k: sha256_bytes(v) for k, v in sorted(resolved.overrides.items())},
        "edk2": tree.digest,
        "tools": tools,
    }
    return Plan(
        resolved=resolved, toolchain=toolchain, version_string=version_string, release_date=release_date,
        source_date_epoch=source_date_epoch(tree.release_date), tools=tools, inputs=inputs,
        input_hash=input_hash(inputs),
    )
