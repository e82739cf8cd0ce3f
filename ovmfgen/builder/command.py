"""``invoke build``: render a platform into its workspace, build it with stuart (offline), make the
PVH ELF, check it, and publish the artifacts atomically. A rebuild with unchanged inputs is a no-op.

The steps live beside this module: ``request`` (options), ``layout`` (where things go, variant names),
``plan`` (inputs and their hash), ``workspace`` (lock, files), ``stuart`` (the child, progress),
``diagnose`` (the first real error), ``manifest`` (no-op check, manifest.json), ``publish`` (atomic swap).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import elf
from ovmfgen.builder.child import linkcache
from ovmfgen.builder.diagnose import summarize_failure
from ovmfgen.builder.layout import ELF_NAME, LOG_NAME, Layout
from ovmfgen.builder.manifest import (
    MANIFEST, fv_usage_from_log, fv_usage_from_report, make_manifest, read_manifest, up_to_date,
)
from ovmfgen.builder.plan import Plan, link_cache_dir, plan
from ovmfgen.builder.publish import publish
from ovmfgen.request import Request, make_request
from ovmfgen.builder.stuart import run_stuart
from ovmfgen.builder.workspace import prepare_workspace, workspace_lock
from ovmfgen.edk2.conventions import fd_size_bytes, fd_size_kb
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.platform.overrides import patch_targets
from ovmfgen.platform.validate import override_tag, validate
from ovmfgen.ui import say

CCACHE_MASQUERADE = Path("/usr/lib/ccache")


class BuildFailed(OvmfgenError):
    """The edk2 build (or a post-build check) failed: one line naming the first real error."""


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` did."""

    dist: Path
    manifest: dict
    noop: bool
    seconds: float


def _source_map(p: Plan) -> dict[str, Path]:
    ov_root = p.layout.overrides_for(p.platform.name)
    tag = override_tag(p.platform)
    out: dict[str, Path] = {}
    for ov in p.platform.overrides:
        source = ov_root / ov.source(tag)
        if not ov.patch:
            out[ov.path] = source
            continue
        # A patched file's lines are not the diff's: its errors stay at the workspace copy.
        for rel in patch_targets(source.read_bytes(), f"overrides/{p.platform.name}/{ov.source(tag)}", ov):
            out.pop(rel, None)
    return out


def post_build(p: Plan, log_text: str, seconds: float) -> dict[str, bytes]:
    """FD -> PVH ELF, loader checks, FV usage, manifest: the files to publish."""
    try:
        fd = p.fd_path.read_bytes()
    except OSError:
        raise BuildFailed(f"the build did not produce {display_path(p.fd_path)} (log: {display_path(p.log_path)})") \
            from None
    if len(fd) != fd_size_bytes(p.fd_size):
        raise BuildFailed(f"{display_path(p.fd_path)} is {len(fd)} bytes, expected a {p.fd_size} MiB FD")
    files: dict[str, bytes] = {p.fd_file_name: fd}
    elf_info = None
    spec = p.platform.elf
    if spec is not None:
        reserved = spec.reserved_for(fd_size_kb(p.fd_size))
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
    label = f"{p.platform.name} {request.target}" + (f" ({p.suffix})" if p.suffix else "") + (
        f" [{request.edk2}]" if request.edk2 else "")
    if not request.force and not request.clean and up_to_date(p):
        say(f"{label}: up to date, nothing to do ({display_path(p.dist)}, input hash {p.input_hash[:12]})")
        return BuildResult(p.dist, read_manifest(p.dist) or {}, True, time.monotonic() - t0)
    lock_path = p.layout.build_root / ".locks" / f"{p.workspace.name}.lock"
    with workspace_lock(lock_path, label) as lock:
        if not request.force and not request.clean and up_to_date(p):
            # Built by whoever held the lock before us.
            say(f"{label}: up to date, nothing to do ({display_path(p.dist)})")
            return BuildResult(p.dist, read_manifest(p.dist) or {}, True, time.monotonic() - t0)

        validate(p.platform, p.rendered_platform, p.edk2_root, layout=p.layout)
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
                  clean: bool = False, layout: Layout | None = None, edk2: str | None = None) -> Path:
    """``invoke build``: build ``platform`` against the edk2 tree ``edk2`` (a tag; None: the default
    tree) and publish it; returns the dist directory.

    A build whose inputs match the published manifest is a no-op (under a second); ``force``
    builds anyway, ``clean`` first removes the variant's workspace.
    """
    request = make_request(platform, target, fd_size, defines, features, jobs, force, clean, ccache,
                           version_string, release_date, edk2)
    return build(request, layout).dist
