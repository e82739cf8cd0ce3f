"""``invoke build``: render a platform into its workspace, build it with stuart (offline), make the
PVH ELF, check it, and publish the artifacts atomically. A rebuild with unchanged inputs is a no-op.

Where things go
---------------
* Workspace (EDK2's WORKSPACE): ``build/<platform>/`` for the platform's default FD size and
  features, ``build/<platform>.<variant>/`` otherwise. It holds the rendered ``<package>/<name>.dsc``
  and ``.fdf``, copies of the platform's override files (which shadow the edk2 tree's files at the
  same path: the edk2 tree is on PACKAGES_PATH and never written to), ``Conf/`` (from BaseTools'
  templates) and ``Build/``. Separate workspaces per variant keep EDK2's incremental build correct
  and cheap when switching between variants.
* Artifacts: ``dist/<platform>/<target>[-<variant>]/``: ``OVMF.fd`` (the raw FD), ``ovmf.elf`` (the
  PVH ELF), ``build.log`` (stuart's console output) and ``manifest.json``.

The variant rule (``dist_dir``/``variant_suffix``)
-------------------------------------------------
The default FD size with the default features has no suffix: ``dist/xen-pvh/DEBUG/``. Otherwise the
suffix joins, in this order and with ``-``:

1. the FD size when it is not the platform's default: ``4M``;
2. each feature set to a value other than the platform's default, by feature name, as its tag:
   ``hvcon`` (debug_output=hypervisor-console), ``debugcon``, ``acpitimer``, ``lapictimer``,
   ``nonet``/``net``, ``noshell``/``shell``; any other as ``<name>-<value>`` (non-alphanumerics
   dropped);
3. ``D`` and the first 8 hex digits of the sha256 of the sorted extra ``-D NAME=VALUE`` pairs
   (beyond the FD size), when there are any.

So ``--fd-size 4M`` gives ``dist/xen-pvh/DEBUG-4M/``, ``--feature debug_output=hypervisor-console``
gives ``dist/xen-pvh/DEBUG-hvcon/`` and both give ``dist/xen-pvh/DEBUG-4M-hvcon/``.

No-op and locking
-----------------
The input hash covers the rendered files, the override files, the edk2 identity digest, the tool
versions (gcc, binutils, nasm, iasl), target, FD size, defines, features, version stamps, ovmfgen's
version and the code that shapes the artifacts. When it equals the published manifest's and the
published files still match their recorded sha256, the build says so and returns (no lock, no
validation, no edk2 tooling imported). ``--force`` builds anyway (EDK2's own incremental build).
A per-workspace ``fcntl`` lock serialises builds of the same workspace; the stuart child inherits
it, so a killed ovmfgen does not let a second build into a workspace still being written.

Publishing
----------
Artifacts are written to a staging directory beside the final one, then swapped in with one
``renameat2(RENAME_EXCHANGE)`` (falling back to ``fsutil.replace_dir``): a failed or killed build
leaves the previous good artifacts in place, never a mix.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from ovmfgen import __version__, paths
from ovmfgen.fsutil import sha256_file
from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.platform.model import Platform
from ovmfgen.run import PIPE, STDOUT, popen, quote, run, stop
from ovmfgen.ui import is_interactive, say

TARGETS = ("DEBUG", "RELEASE", "NOOPT")
TOOL_CHAIN = "GCC5"
ARCH = "X64"
FD_SIZES_MIB = (1, 2, 4)
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
ELF_NAME = "ovmf.elf"
LOG_NAME = "build.log"
STATE_DIR = ".ovmfgen"                  # inside a workspace: what ovmfgen itself keeps there
CCACHE_MASQUERADE = Path("/usr/lib/ccache")
PCD_VERSION = "gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString"
PCD_RELEASE_DATE = "gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareReleaseDateString"
STUART_PLATFORM = Path(__file__).resolve().parent / "child" / "stuart_platform.py"
# The modules whose code shapes the artifacts: a change to them invalidates the no-op.
RECIPE_MODULES = ("build/core.py", "build/child/stuart_platform.py", "build/child/linkcache.py", "elf.py")
PROGRESS_EVERY_S = 15.0                  # plain progress lines (no TTY / CI)

FEATURE_TAGS = {
    ("debug_output", "hypervisor-console"): "hvcon",
    ("debug_output", "debugcon"): "debugcon",
    ("timer", "acpi"): "acpitimer",
    ("timer", "lapic"): "lapictimer",
    ("network", "false"): "nonet",
    ("network", "true"): "net",
    ("shell", "false"): "noshell",
    ("shell", "true"): "shell",
}

_DEFINE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FD_SIZE_DEFINE = re.compile(r"^FD_SIZE_([124])MB$")


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Layout:
    """Where platforms, overrides, workspaces and artifacts live (the repository's dirs by default)."""

    platforms_dir: Path = paths.PLATFORMS_DIR
    overrides_dir: Path = paths.OVERRIDES_DIR
    build_root: Path = paths.BUILD_DIR
    dist_root: Path = paths.DIST_DIR


def parse_fd_size(text: str | int | None) -> int | None:
    """``1M``/``2M``/``4M`` (also ``2``, ``2MB``, ``2MiB``) -> MiB; None stays None."""
    if text is None or text == "":
        return None
    t = str(text).strip().upper()
    for suffix in ("MIB", "MB", "M"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    if t.isdigit() and int(t) in FD_SIZES_MIB:
        return int(t)
    raise OvmfgenError(f"bad FD size '{text}': expected one of 1M, 2M, 4M")


def parse_target(text: str) -> str:
    """DEBUG, RELEASE or NOOPT (any case)."""
    t = str(text).strip().upper()
    if t not in TARGETS:
        raise OvmfgenError(f"bad target '{text}': expected one of {', '.join(TARGETS)}")
    return t


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["NAME=VALUE", "FLAG"]`` -> ``{"NAME": "VALUE", "FLAG": "TRUE"}`` (later wins)."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name = name.strip()
        value = value.strip() if sep else "TRUE"
        if not _DEFINE_NAME.match(name):
            raise OvmfgenError(f"bad {what} '{item}': expected NAME=VALUE")
        if what == "define" and ("=" in value or not value or any(c.isspace() for c in value)):
            # stuart takes BLD_*_NAME=VALUE arguments with exactly one '='.
            raise OvmfgenError(f"bad define '{item}': the value must be non-empty, without '=' or spaces")
        out[name] = value
    return out


def _pcd_text(value: str, what: str) -> str:
    if not value or any(c in value for c in '"\\=') or not value.isprintable():
        raise OvmfgenError(f"bad {what} '{value}': printable text without quotes, backslashes or '='")
    return value


@dataclass(frozen=True)
class Request:
    """One build: everything that selects what gets built (and the knobs that do not change it)."""

    platform: str
    target: str = "DEBUG"
    fd_size: int | None = None                      # MiB; None: the platform's default
    defines: tuple[tuple[str, str], ...] = ()       # extra -D (FD_SIZE_* folded into fd_size)
    features: tuple[tuple[str, str], ...] = ()      # feature overrides
    jobs: int | None = None
    force: bool = False
    clean: bool = False
    ccache: bool = False
    version_string: str | None = None
    release_date: str | None = None


def make_request(platform: str, target: str = "DEBUG", fd_size: str | int | None = None,
                 defines: Sequence[str] = (), features: Sequence[str] = (), jobs: int | str | None = None,
                 force: bool = False, clean: bool = False, ccache: bool = False,
                 version_string: str | None = None, release_date: str | None = None) -> Request:
    """Check and normalise command-line options into a ``Request`` (raises a one-line OvmfgenError)."""
    size = parse_fd_size(fd_size)
    defs = parse_assignments(defines, "define")
    feats = parse_assignments(features, "feature")
    for name in [n for n in defs if _FD_SIZE_DEFINE.match(n)]:
        value = defs.pop(name)
        if value.upper() != "TRUE":
            raise OvmfgenError(f"-D {name}={value}: use --fd-size instead")
        mib = int(_FD_SIZE_DEFINE.match(name).group(1))  # type: ignore[union-attr]
        if size is not None and size != mib:
            raise OvmfgenError(f"-D {name} contradicts --fd-size {size}M")
        size = mib
    if "fd_size" in feats:
        mib = parse_fd_size(feats.pop("fd_size"))
        if size is not None and size != mib:
            raise OvmfgenError(f"--feature fd_size={mib} contradicts --fd-size {size}M")
        size = mib
    n_jobs = None
    if jobs not in (None, ""):
        try:
            n_jobs = int(jobs)
        except ValueError:
            n_jobs = 0
        if n_jobs < 1:
            raise OvmfgenError(f"bad --jobs '{jobs}': expected a positive number")
    return Request(
        platform=platform, target=parse_target(target), fd_size=size,
        defines=tuple(sorted(defs.items())), features=tuple(sorted(feats.items())), jobs=n_jobs,
        force=force, clean=clean, ccache=ccache,
        version_string=_pcd_text(version_string, "--version-string") if version_string else None,
        release_date=_pcd_text(release_date, "--release-date") if release_date else None,
    )


# ---------------------------------------------------------------------------------------------
# Variants: dist/ and workspace directories


def _default_features(platform: str, platforms_dir: Path) -> tuple[tuple[str, str], ...]:
    """The platform's features as its YAML sets them (cached while the file is unchanged)."""
    try:
        stamp = (platforms_dir / f"{platform}.yaml").stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _default_features_cached(platform, platforms_dir, stamp)


@lru_cache(maxsize=16)
def _default_features_cached(platform: str, platforms_dir: Path, _stamp: int) -> tuple[tuple[str, str], ...]:
    from ovmfgen.platform.load import load_platform

    return load_platform(platform, platforms_dir).default_features


def _feature_tag(name: str, value: str) -> str:
    tag = FEATURE_TAGS.get((name, value))
    if tag:
        return tag
    return re.sub(r"[^A-Za-z0-9]", "", name) + "-" + re.sub(r"[^A-Za-z0-9]", "", value)


def variant_suffix(default_features: Mapping[str, str], fd_size: int | None = None,
                   features: Mapping[str, str] | None = None,
                   defines: Mapping[str, str] | None = None) -> str:
    """The variant part of the dist/workspace names ("" for the default build; see the module doc)."""
    parts: list[str] = []
    default_fd = int(default_features.get("fd_size", "2"))
    if fd_size is not None and fd_size != default_fd:
        parts.append(f"{fd_size}M")
    for name, value in sorted((features or {}).items()):
        if name == "fd_size" or default_features.get(name) == value:
            continue
        parts.append(_feature_tag(name, value))
    extra = sorted((k, v) for k, v in (defines or {}).items() if not _FD_SIZE_DEFINE.match(k))
    if extra:
        text = " ".join(f"{k}={v}" for k, v in extra)
        parts.append("D" + hashlib.sha256(text.encode()).hexdigest()[:8])
    return "-".join(parts)


def dist_dir(platform: str, target: str = "DEBUG", fd_size: str | int | None = None,
             features: Mapping[str, str] | None = None, defines: Mapping[str, str] | None = None,
             layout: Layout | None = None) -> Path:
    """``dist/<platform>/<target>[-<variant>]/``: where ``build`` publishes that build's artifacts.

    ``fd_size`` (``"4M"``, 4, ...) and ``features`` (feature overrides, e.g.
    ``{"debug_output": "hypervisor-console"}``) add a suffix only where they differ from the
    platform's defaults, e.g. ``dist/xen-pvh/DEBUG-hvcon``.
    """
    lay = layout or Layout()
    target = parse_target(target)
    size = parse_fd_size(fd_size)
    suffix = ""
    if size is not None or features or defines:
        suffix = variant_suffix(dict(_default_features(platform, lay.platforms_dir)), size, features, defines)
    return lay.dist_root / platform / (f"{target}-{suffix}" if suffix else target)


def workspace_dir(platform: str, suffix: str, layout: Layout | None = None) -> Path:
    """``build/<platform>/`` for the default variant, ``build/<platform>.<suffix>/`` otherwise."""
    lay = layout or Layout()
    return lay.build_root / (f"{platform}.{suffix}" if suffix else platform)


# ---------------------------------------------------------------------------------------------
# Inputs and their hash


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


def default_version_string(identity: Mapping[str, object]) -> str:
    """``<edk2 tag or commit>-ovmfgen-<version>``, as distributions stamp theirs."""
    tag = identity.get("tag")
    commit = str(identity.get("commit") or "")
    base = str(tag) if tag else (f"edk2-{commit[:12]}" if commit else "edk2-unknown")
    return f"{base}-ovmfgen-{__version__}"


def smbios_date(iso: str) -> str:
    """``2025-02-21`` -> ``02/21/2025`` (SMBIOS type 0 BIOS release date format)."""
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})$", iso.strip())
    if not m:
        raise OvmfgenError(f"bad release date '{iso}': expected YYYY-MM-DD")
    return f"{m.group(2)}/{m.group(3)}/{m.group(1)}"


def default_release_date(identity: Mapping[str, object], edk2_root: Path) -> str:
    """The edk2 release date (from its identity, else the checkout's commit date), SMBIOS format."""
    iso = identity.get("release_date")
    if not iso:
        proc = None
        try:
            proc = run(["git", "-C", edk2_root, "log", "-1", "--format=%cs", "HEAD"], check=False)
        except OvmfgenError:
            pass
        if proc is None or proc.returncode != 0 or not proc.stdout.strip():
            raise OvmfgenError(f"cannot tell the release date of the edk2 tree at {edk2_root}: pass --release-date")
        iso = proc.stdout.strip()
    return smbios_date(str(iso))


def pcd_arguments(version_string: str, release_date: str) -> list[str]:
    """``--pcd`` values for the version stamps, as Fedora's edk2-build.py writes them (``L<text>\\0``)."""
    return [f"{PCD_VERSION}=L{version_string}\\0", f"{PCD_RELEASE_DATE}=L{release_date}\\0"]


@dataclass(frozen=True)
class Plan:
    """Everything decided before building: paths, the stuart command, the inputs and their hash."""

    request: Request
    platform: Platform
    layout: Layout
    suffix: str
    workspace: Path
    dist: Path
    rendered: dict[str, bytes]
    overrides: dict[str, bytes]
    edk2_root: Path
    edk2_tools: Path
    edk2_identity: dict
    fd_size: int                            # MiB
    features: dict[str, str]                # effective features
    defines: dict[str, str]                 # every -D passed (FD_SIZE_xMB included)
    version_string: str
    release_date: str
    tools: dict[str, str]
    inputs: dict = field(hash=False)
    input_hash: str = ""

    @property
    def output_base(self) -> Path:
        """EDK2's BUILD_OUTPUT_BASE: ``<workspace>/<OUTPUT_DIRECTORY>/<TARGET>_<TOOLCHAIN>``."""
        out = self.platform.header_field("OUTPUT_DIRECTORY") or "Build"
        return self.workspace / out / f"{self.request.target}_{TOOL_CHAIN}"

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
        if req.ccache:
            argv += ["--ccache-dir", str(ccache_dir()), "--link-cache-dir", str(link_cache_dir())]
        argv += [f"TARGET={req.target}", f"TOOL_CHAIN_TAG={TOOL_CHAIN}",
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
    """Where --ccache builds cache LTO links (ovmfgen/build/child/linkcache.py): beside ccache's directory."""
    return paths.cache_dir() / "linkcache"


def plan(request: Request, layout: Layout | None = None) -> Plan:
    """Load and render the platform, read overrides, the edk2 identity and tool versions; hash them.

    Cheap (no edk2 tooling is imported): the no-op check runs on this alone.
    """
    from ovmfgen.edk2.tree import locate
    from ovmfgen.platform.load import load_platform
    from ovmfgen.platform.render import render

    lay = layout or Layout()
    overrides = dict(request.features)
    if request.fd_size is not None:
        overrides["fd_size"] = str(request.fd_size)
    platform = load_platform(request.platform, lay.platforms_dir, feature_overrides=overrides)
    defaults = dict(platform.default_features)
    features = dict(platform.features)
    fd_size = int(features.get("fd_size", "2"))
    suffix = variant_suffix(defaults, fd_size, features, dict(request.defines))
    workspace = workspace_dir(platform.name, suffix, lay)
    dist = lay.dist_root / platform.name / (f"{request.target}-{suffix}" if suffix else request.target)
    rendered = {f"{platform.package_dir}/{name}": data for name, data in render(platform).files().items()}
    override_root = lay.overrides_dir / platform.name
    override_files: dict[str, bytes] = {}
    for ov in platform.overrides:
        try:
            override_files[ov.path] = (override_root / ov.path).read_bytes()
        except OSError as exc:
            raise OvmfgenError(f"cannot read override overrides/{platform.name}/{ov.path}: "
                               f"{exc.strerror or exc}", ov.loc) from None
    tree = locate()
    version_string = request.version_string or default_version_string(tree.identity)
    release_date = request.release_date or default_release_date(tree.identity, tree.root)
    defines = {f"FD_SIZE_{fd_size}MB": "TRUE", **dict(request.defines)}
    tools = tool_versions()
    inputs = {
        "ovmfgen": __version__,
        "recipe": recipe_digest(),
        "platform": platform.name,
        "target": request.target,
        "toolchain": TOOL_CHAIN,
        "arch": ARCH,
        "fd_size": f"{fd_size}M",
        "defines": dict(sorted(defines.items())),
        "features": dict(sorted(features.items())),
        "version_string": version_string,
        "release_date": release_date,
        "rendered": {k: sha256_bytes(v) for k, v in sorted(rendered.items())},
        "overrides": {k: sha256_bytes(v) for k, v in sorted(override_files.items())},
        "edk2": tree.digest,
        "tools": tools,
    }
    return Plan(
        request=request, platform=platform, layout=lay, suffix=suffix, workspace=workspace, dist=dist,
        rendered=rendered, overrides=override_files, edk2_root=tree.root, edk2_tools=tree.basetools,
        edk2_identity=tree.identity, fd_size=fd_size, features=features, defines=defines,
        version_string=version_string, release_date=release_date, tools=tools, inputs=inputs,
        input_hash=input_hash(inputs),
    )


# ---------------------------------------------------------------------------------------------
# The published manifest


def read_manifest(dist: Path) -> dict | None:
    """The manifest published in ``dist`` (None when absent or unreadable)."""
    try:
        data = json.loads((dist / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def outputs_intact(dist: Path, manifest: Mapping[str, object]) -> bool:
    """True when every output the manifest lists is in ``dist`` with its recorded size and sha256."""
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return False
    for name, rec in outputs.items():
        path = dist / name
        try:
            if not isinstance(rec, dict) or path.stat().st_size != rec.get("size"):
                return False
            if sha256_file(path) != rec.get("sha256"):
                return False
        except OSError:
            return False
    return True


def up_to_date(p: Plan) -> bool:
    """The published artifacts were built from exactly these inputs and are intact."""
    manifest = read_manifest(p.dist)
    return bool(manifest) and manifest.get("input_hash") == p.input_hash and outputs_intact(p.dist, manifest)


MANIFEST_KEYS = (
    "schema", "platform", "target", "toolchain", "arch", "fd_size", "defines", "features", "version_string",
    "release_date", "input_hash", "inputs", "edk2", "tools", "outputs", "fv_usage", "elf", "build_seconds",
    "stuart_command", "jobs", "ccache",
)


def make_manifest(p: Plan, outputs: Mapping[str, bytes], fv_usage: Mapping[str, dict], elf_info: dict | None,
                  seconds: float) -> dict:
    """The manifest.json content (keys: ``MANIFEST_KEYS``)."""
    ident = p.edk2_identity
    return {
        "schema": MANIFEST_SCHEMA,
        "platform": p.platform.name,
        "target": p.request.target,
        "toolchain": TOOL_CHAIN,
        "arch": ARCH,
        "fd_size": f"{p.fd_size}M",
        "defines": dict(sorted(p.defines.items())),
        "features": dict(sorted(p.features.items())),
        "version_string": p.version_string,
        "release_date": p.release_date,
        "input_hash": p.input_hash,
        "inputs": p.inputs,
        "edk2": {"tag": ident.get("tag"), "commit": ident.get("commit"), "source": ident.get("source"),
                 "release_date": ident.get("release_date"), "digest": p.inputs["edk2"]},
        "tools": dict(p.tools),
        "outputs": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in outputs.items()},
        "fv_usage": {k: dict(v) for k, v in fv_usage.items()},
        "elf": elf_info,
        "build_seconds": round(seconds, 1),
        "stuart_command": quote(p.stuart_argv()),
        "jobs": p.request.jobs or os.cpu_count() or 1,
        "ccache": p.request.ccache,
    }


# ---------------------------------------------------------------------------------------------
# FV usage (build report, else the build log)


_REPORT_FV = re.compile(r"^Fv Name:\s+(\S+)\s+\(([\d.]+)% Full\)")
_REPORT_SIZE = re.compile(r"^Size:\s+(0x[0-9A-Fa-f]+)")
_REPORT_OCCUPIED = re.compile(r"^Occupied Size:\s+(0x[0-9A-Fa-f]+)")
_REPORT_FREE = re.compile(r"^Free Size:\s+(0x[0-9A-Fa-f]+)")
_LOG_FV = re.compile(r"^(\S+) \[(\d+)%Full\] (\d+) \(0x[0-9a-fA-F]+\) total, (\d+) \(0x[0-9a-fA-F]+\) used, "
                     r"(\d+) \(0x[0-9a-fA-F]+\) free")


def fv_usage_from_report(text: str) -> dict[str, dict]:
    """Per FV: size, used, free (bytes) and percent full, from a ``-Y FLASH`` build report."""
    usage: dict[str, dict] = {}
    size: int | None = None
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _REPORT_SIZE.match(line)
        if m:
            size = int(m.group(1), 16)
            continue
        m = _REPORT_FV.match(line)
        if m:
            current = m.group(1)
            if current not in usage:
                usage[current] = {"size": size, "used": None, "free": None, "percent_full": float(m.group(2))}
            else:
                current = None  # the same FV again inside another FD
            continue
        if current:
            m = _REPORT_OCCUPIED.match(line)
            if m:
                usage[current]["used"] = int(m.group(1), 16)
                continue
            m = _REPORT_FREE.match(line)
            if m:
                usage[current]["free"] = int(m.group(1), 16)
                current = None
    return dict(sorted(usage.items()))


def fv_usage_from_log(text: str) -> dict[str, dict]:
    """The same from the build log's "FV Space Information" lines (when there is no report)."""
    usage = {}
    for raw in text.splitlines():
        m = _LOG_FV.match(strip_log_prefix(raw).strip())
        if m:
            usage[m.group(1)] = {"size": int(m.group(3)), "used": int(m.group(4)), "free": int(m.group(5)),
                                 "percent_full": float(m.group(2))}
    return dict(sorted(usage.items()))


# ---------------------------------------------------------------------------------------------
# Reading stuart's output: progress and the first real error


_LOG_PREFIX = re.compile(r"^(?:INFO|WARNING|ERROR|CRITICAL|DEBUG|SECTION|PROGRESS) - ")
_BUILDING = re.compile(r"^Building \.\.\. (\S+\.inf) \[(\w+)\]")
_COMPILER_ERROR = re.compile(
    r"^(?P<file>/?[^\s:]+?):(?P<line>\d+)(?::(?P<col>\d+))?: (?:fatal )?error: (?P<msg>.+)$")
_LINKER_ERROR = re.compile(r"^(?P<where>.*?): (?P<msg>(?:undefined reference to|multiple definition of) .+)$")
_EDK2_ERROR = re.compile(r"^(?P<where>.*?)\s*:\s*error (?P<code>[0-9A-Fa-f]{4}): (?P<msg>.+)$")
_WHERE_LINE = re.compile(r"^(?P<path>.+?)\((?P<line>\d+)\)$")
_MAKE_DIR = re.compile(r"^\s*make tbuild \[(?P<dir>[^\]]+)\]")
_FAILED_MODULE = re.compile(r"^\s*(?P<inf>\S+\.inf) \[")
# Consequences of the first error, never the first error itself.
_FOLLOW_UP_CODES = {"7000", "F002"}
# stuart's closing words after any failure: they say nothing about the cause.
_GENERIC_STUART_ERRORS = {"Error", "Build failed", "Build Process Exception", "Pre Build failed",
                          "Post Build failed", "SetEnv failed"}


def strip_log_prefix(line: str) -> str:
    """A console line without stuart's ``LEVEL - `` prefix."""
    return _LOG_PREFIX.sub("", line, count=1)


@dataclass(frozen=True)
class Failure:
    """The first real error of a failed build."""

    message: str
    module: str | None = None
    location: Location | None = None

    def one_line(self, label: str, log: str) -> str:
        """The summary the CLI prints after the location (which OvmfgenError adds in front)."""
        module = f"module {self.module}, " if self.module else ""
        return f"{label}: {self.message} ({module}log {log})"


def _rel(path: str, roots: Sequence[Path]) -> str:
    p = Path(path)
    for root in roots:
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            continue
    return path


def summarize_failure(log_text: str, roots: Sequence[Path] = (), source_map: Mapping[str, Path] | None = None) \
        -> Failure:
    """The first real compiler/linker/AutoGen error in a stuart/edk2 build log, with its module.

    ``roots`` (workspace, edk2 tree) make paths relative; ``source_map`` maps such a relative path
    to the file a person edits (an override copied into the workspace -> overrides/<platform>/...).
    """
    lines = [strip_log_prefix(ln.rstrip("\r\n")) for ln in log_text.splitlines()]
    source_map = source_map or {}

    def locate(path: str, line: int = 0, col: int = 0) -> Location:
        rel = _rel(path, roots)
        shown = source_map.get(rel)
        return Location(display_path(shown) if shown else (rel if rel != path else display_path(path)), line, col)

    # The module that failed, from edk2's follow-up messages.
    module = None
    for i, line in enumerate(lines):
        if "error F002" in line and i + 1 < len(lines):
            m = _FAILED_MODULE.match(lines[i + 1])
            if m:
                module = _rel(m.group("inf"), roots)
                break
        if "error 7000" in line and i + 1 < len(lines) and module is None:
            m = _MAKE_DIR.match(lines[i + 1])
            if m:
                module = _rel(m.group("dir"), roots)

    for i, line in enumerate(lines):
        s = line.strip()
        m = _COMPILER_ERROR.match(s)
        if m and not s.startswith("make"):
            mod = module or _last_building(lines[:i], roots)
            return Failure(m.group("msg").strip(), mod,
                           locate(m.group("file"), int(m.group("line")), int(m.group("col") or 0)))
        m = _LINKER_ERROR.match(s)
        if m:
            return Failure(f"link error: {m.group('msg').strip()}", module or _last_building(lines[:i], roots))
        m = _EDK2_ERROR.match(s)
        if m and m.group("code").upper() not in _FOLLOW_UP_CODES:
            msg = m.group("msg").strip()
            detail = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(("\t", "    ")) else ""
            if detail and len(msg) + len(detail) < 200:
                msg = f"{msg} {detail}"
            where = m.group("where").strip()
            loc = None
            wm = _WHERE_LINE.match(where)
            if wm:
                loc = locate(wm.group("path"), int(wm.group("line")))
            elif where and where not in ("build.py...", "") and ("/" in where):
                loc = locate(where)
            return Failure(f"AutoGen error {m.group('code')}: {msg}", module, loc)
    # No compiler or edk2 error: stuart's own complaint (SetEnv, the DSC parse, a Python exception...).
    for i, raw in enumerate(log_text.splitlines()):
        m = re.match(r"^(CRITICAL|ERROR) - (.+)$", raw.strip())
        if m and m.group(2).strip() not in _GENERIC_STUART_ERRORS:
            return Failure(f"stuart: {m.group(2).strip()}", module)
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            last = next((ln.strip() for ln in lines[i + 1:] if ln and not ln.startswith((" ", "\t"))), "")
            return Failure(f"stuart crashed: {last or 'Python traceback'}", module)
    return Failure("the build failed without a recognisable error message", module)


def _last_building(lines: Sequence[str], roots: Sequence[Path]) -> str | None:
    for line in reversed(lines):
        m = _BUILDING.match(line.strip())
        if m:
            return _rel(m.group(1), roots)
    return None


class Progress:
    """Modules built / total while edk2 runs: a bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, label: str, interactive: bool | None = None, stream: IO[str] | None = None,
                 every: float = PROGRESS_EVERY_S) -> None:
        self.label = label
        self.interactive = is_interactive() if interactive is None else interactive
        self.stream = stream or sys.stderr
        self.every = every
        self.start = time.monotonic()
        self.done = 0
        self.total: int | None = None
        self.phase = "AutoGen"
        self._seen: set[tuple[str, str]] = set()
        self._last_print = 0.0
        self._drawn = False
        self._counted = False
        self._lock = threading.Lock()

    def feed(self, line: str, count_modules: object = None) -> None:
        """Update from one console line; ``count_modules`` () -> total, called when AutoGen is done."""
        s = strip_log_prefix(line).strip()
        m = _BUILDING.match(s)
        if m or (s.endswith("done!") and self.phase == "AutoGen"):
            # AutoGen is over (its "..... done!" may come before or after other lines): count once.
            self.phase = "make"
            if not self._counted and callable(count_modules):
                self._counted = True
                self.total = count_modules() or self.total
        if m:
            key = (m.group(1), m.group(2))
            if key not in self._seen:
                self._seen.add(key)
                self.done += 1
        elif s.startswith(("Generating ", "Fd File Name:")) or s.startswith("GenFds"):
            self.phase = "GenFds"
        self.show()

    def text(self) -> str:
        """The current state in words."""
        elapsed = int(time.monotonic() - self.start)
        total = self.total if self.total and self.total >= self.done else None
        count = f"{self.done}/{total}" if total else f"{self.done}"
        pct = f" ({100 * self.done // total}%)" if total else ""
        return f"{self.label}: {self.phase}, {count} modules{pct}, {elapsed // 60}:{elapsed % 60:02d}"

    def bar(self, width: int = 28) -> str:
        """``[#####.....] 120/260 modules`` for a terminal."""
        total = self.total if self.total and self.total >= self.done else None
        filled = int(width * self.done / total) if total else 0
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.text()}"

    def show(self, force: bool = False) -> None:
        """Redraw the bar (terminal) or print a line every ``every`` seconds (plain)."""
        with self._lock:
            self._show(force)

    def _show(self, force: bool) -> None:
        now = time.monotonic()
        if self.interactive:
            if force or now - self._last_print >= 0.2:
                self.stream.write("\r\x1b[Kovmfgen: " + self.bar())
                self.stream.flush()
                self._drawn = True
                self._last_print = now
        elif force or now - self._last_print >= self.every:
            self.stream.write(f"ovmfgen: {self.text()}\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        """End the bar's line."""
        if self.interactive and self._drawn:
            self.show(force=True)
            self.stream.write("\n")
            self.stream.flush()


def count_module_makefiles(build_arch_dir: Path) -> int:
    """Modules AutoGen prepared: one GNUmakefile per module under ``<BUILD_OUTPUT_BASE>/<ARCH>``."""
    n = 0
    for _root, _dirs, files in os.walk(build_arch_dir):
        if "GNUmakefile" in files:
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Locking


@dataclass
class Lock:
    """An acquired per-workspace lock (an open, flocked file)."""

    path: Path
    fd: int


@contextmanager
def workspace_lock(path: Path, what: str) -> Iterator[Lock]:
    """Hold an exclusive ``fcntl`` lock on ``path``; say "waiting for lock" when someone else has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            say(f"waiting for lock {display_path(path)}: another build of {what} is running"
                + (f" (pid {holder})" if holder.isdigit() else ""))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield Lock(path, fd)
    finally:
        os.close(fd)  # releases the lock (unless a child inherited it: then when that child exits too)


# ---------------------------------------------------------------------------------------------
# Atomic publish


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False when unsupported here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def recover_dist(final: Path) -> None:
    """Clean what an interrupted publish left beside ``final`` (and restore it if only the old copy is left)."""
    parent = final.parent
    if not parent.is_dir():
        return
    old = parent / f".{final.name}.old"
    if old.is_dir() and not final.exists():
        os.replace(old, final)  # fsutil.replace_dir was interrupted between its two renames
    for stale in parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def publish(files: Mapping[str, bytes], final: Path) -> None:
    """Write ``files`` into a staging dir beside ``final`` and swap it in atomically.

    ``manifest.json`` is written last; until the swap, ``final`` keeps the previous artifacts.
    """
    from ovmfgen.fsutil import replace_dir

    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dist(final)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        names = sorted(files, key=lambda n: (n == MANIFEST, n))
        for name in names:
            with open(staging / name, "wb") as fh:
                fh.write(files[name])
                fh.flush()
                os.fsync(fh.fileno())
        dfd = os.open(staging, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if final.exists() and _exchange(staging, final):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the previous artifacts
        else:
            replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# The workspace


def prepare_workspace(p: Plan) -> list[str]:
    """Write the rendered files and overrides into the workspace (only where changed).

    Overrides the platform no longer lists are removed (they would still shadow edk2's files).
    Returns the workspace-relative paths written.
    """
    from ovmfgen.fsutil import atomic_write_bytes, write_if_changed

    ws = p.workspace
    written = [rel for rel, data in p.rendered.items() if write_if_changed(ws / rel, data)]
    state = ws / STATE_DIR / "overrides.json"
    try:
        previous = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = []
    for rel in previous if isinstance(previous, list) else []:
        if rel not in p.overrides and rel not in p.rendered:
            (ws / rel).unlink(missing_ok=True)
    written += [rel for rel, data in p.overrides.items() if write_if_changed(ws / rel, data)]
    atomic_write_bytes(state, (json.dumps(sorted(p.overrides), indent=1) + "\n").encode())
    return written


# ---------------------------------------------------------------------------------------------
# The build


class BuildFailed(OvmfgenError):
    """The edk2 build (or a post-build check) failed: one line naming the first real error."""


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` did."""

    dist: Path
    manifest: dict
    noop: bool
    seconds: float


def run_stuart(p: Plan, lock: Lock | None = None, progress: Progress | None = None) -> tuple[int, str]:
    """Run the stuart command, teeing its output to ``p.log_path``; returns (exit status, log text)."""
    argv = p.stuart_argv()
    say(f"stuart command (rerunnable as is): {quote(argv)}")
    p.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # stream lines as they come: progress depends on it
    pass_fds = (lock.fd,) if lock is not None else ()
    if lock is not None:
        os.set_inheritable(lock.fd, True)  # the workspace stays locked while stuart runs, whatever happens to us
    arch_dir = p.output_base / ARCH
    prog = progress or Progress(f"{p.platform.name} {p.request.target}")
    try:
        # Its own session: on an interrupt we stop stuart *and* edk2's build/make/gcc under it.
        proc = popen(argv, cwd=p.workspace, env=env, stdout=PIPE, stderr=STDOUT,
                     errors="replace", bufsize=1, pass_fds=pass_fds, start_new_session=True)
    except OSError as exc:
        raise OvmfgenError(f"cannot start stuart_build: {exc}") from None
    chunks: list[str] = []
    done = threading.Event()

    def tick() -> None:  # keep the bar/lines moving through long silent steps (LTO links, GenFds)
        while not done.wait(1.0):
            prog.show()

    ticker = threading.Thread(target=tick, name="ovmfgen-progress", daemon=True)
    ticker.start()
    try:
        with open(p.log_path, "w", encoding="utf-8", errors="replace") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                chunks.append(line)
                prog.feed(line, lambda: count_module_makefiles(arch_dir))
            rc = proc.wait()
    except BaseException:
        stop(proc, group=True)  # stuart and edk2's build/make/gcc under it
        raise
    finally:
        done.set()
        ticker.join()
        prog.close()
        if lock is not None:
            os.set_inheritable(lock.fd, False)
    return rc, "".join(chunks)


def _source_map(p: Plan) -> dict[str, Path]:
    ov_root = p.layout.overrides_dir / p.platform.name
    out = {rel: ov_root / rel for rel in p.overrides}
    return out


def post_build(p: Plan, log_text: str, seconds: float) -> dict[str, bytes]:
    """FD -> PVH ELF, loader checks, FV usage, manifest: the files to publish."""
    from ovmfgen import elf

    try:
        fd = p.fd_path.read_bytes()
    except OSError:
        raise BuildFailed(f"the build did not produce {display_path(p.fd_path)} (log: {display_path(p.log_path)})") \
            from None
    if len(fd) != p.fd_size * elf.MIB:
        raise BuildFailed(f"{display_path(p.fd_path)} is {len(fd)} bytes, expected a {p.fd_size} MiB FD")
    files: dict[str, bytes] = {p.fd_file_name: fd}
    elf_info = None
    spec = p.platform.elf
    if spec is not None:
        reserved = spec.reserved_for(p.fd_size * 1024)
        try:
            image = elf.make_pvh_elf(fd, spec.base, reserved)
        except OvmfgenError as exc:
            raise BuildFailed(f"cannot make the PVH ELF from {display_path(p.fd_path)}: {exc.message}") from None
        findings = elf.check_elf(image)
        failed = [f for f in findings if not f.ok]
        if failed:
            raise BuildFailed(f"the PVH ELF fails loader rule {failed[0].rule}: {failed[0].detail} "
                              f"({len(failed)} of {len(findings)} rules failed)")
        files[ELF_NAME] = image
        elf_info = {"base": hex(spec.base), "entry": hex(spec.base + len(fd) - elf.PVH_ENTRY_FROM_END),
                    "reserved": hex(reserved) if reserved is not None else None,
                    "rules_passed": len(findings)}
    files[LOG_NAME] = log_text.encode("utf-8", errors="replace")
    try:
        fv = fv_usage_from_report(p.report_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        fv = {}
    if not fv:
        fv = fv_usage_from_log(log_text)
    manifest = make_manifest(p, files, fv, elf_info, seconds)
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
    return files


def _check_ccache() -> None:
    if not (CCACHE_MASQUERADE / "gcc").exists():
        raise OvmfgenError(f"--ccache needs Debian's ccache ({CCACHE_MASQUERADE}/gcc is missing): "
                           "run `invoke setup` (it installs ccache)")


def build(request: Request, layout: Layout | None = None) -> BuildResult:
    """Plan, no-op check, lock, validate, render into the workspace, stuart, ELF, publish."""
    t0 = time.monotonic()
    if request.ccache:
        _check_ccache()
    p = plan(request, layout)
    label = f"{p.platform.name} {request.target}" + (f" ({p.suffix})" if p.suffix else "")
    if not request.force and not request.clean and up_to_date(p):
        say(f"{label}: up to date, nothing to do ({display_path(p.dist)}, input hash {p.input_hash[:12]})")
        return BuildResult(p.dist, read_manifest(p.dist) or {}, True, time.monotonic() - t0)
    lock_path = p.layout.build_root / ".locks" / f"{p.workspace.name}.lock"
    with workspace_lock(lock_path, label) as lock:
        if not request.force and not request.clean and up_to_date(p):
            # Built by whoever held the lock before us.
            say(f"{label}: up to date, nothing to do ({display_path(p.dist)})")
            return BuildResult(p.dist, read_manifest(p.dist) or {}, True, time.monotonic() - t0)
        from ovmfgen.platform.validate import validate

        validate(p.platform, p.edk2_root)
        if request.clean and p.workspace.exists():
            say(f"removing {display_path(p.workspace)} (--clean)")
            shutil.rmtree(p.workspace)
        prepare_workspace(p)
        say(f"building {label} in {display_path(p.workspace)}")
        t_build = time.monotonic()
        rc, log_text = run_stuart(p, lock)
        if rc != 0:
            fail = summarize_failure(log_text, (p.workspace, p.edk2_root), _source_map(p))
            raise BuildFailed(fail.one_line(label, display_path(p.log_path)), fail.location)
        if request.ccache:
            from ovmfgen.build.child import linkcache

            linkcache.trim(str(link_cache_dir()))  # ccache bounds itself (max_size); this one is ours to bound
        files = post_build(p, log_text, time.monotonic() - t_build)
        publish(files, p.dist)
        manifest = json.loads(files[MANIFEST])
        elapsed = time.monotonic() - t0
        sizes = ", ".join(f"{n} {len(d) // 1024} KiB" for n, d in files.items() if n in (p.fd_file_name, ELF_NAME))
        say(f"published {display_path(p.dist)} ({sizes}) in {elapsed:.0f} s")
        return BuildResult(p.dist, manifest, False, elapsed)


def build_command(platform: str, target: str = "DEBUG", fd_size: str | None = None, defines: Sequence[str] = (),
                  features: Sequence[str] = (), jobs: int | str | None = None, force: bool = False,
                  ccache: bool = False, version_string: str | None = None, release_date: str | None = None,
                  clean: bool = False, layout: Layout | None = None) -> Path:
    """``invoke build``: build ``platform`` and publish it; returns the dist directory.

    A build whose inputs match the published manifest is a no-op (under a second); ``force``
    builds anyway, ``clean`` first removes the variant's workspace.
    """
    request = make_request(platform, target, fd_size, defines, features, jobs, force, clean, ccache,
                           version_string, release_date)
    return build(request, layout).dist
