"""``invoke build``: render a platform into its workspace, build it with stuart (offline), make the
PVH ELF, check it, and publish the artifacts atomically. A rebuild with unchanged inputs is a no-op.

It takes the platform ``platform.resolve`` resolved (tree, options, render, overrides, paths); the
steps live beside this module: ``plan`` (inputs and their hash), ``workspace`` (lock, files), ``stuart`` (the child, progress),
``diagnose`` (the first real error), ``manifest`` (no-op check, manifest.json), ``publish`` (atomic swap).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import elf
from ovmfgen.builder.child import linkcache
from ovmfgen.builder.diagnose import summarize_failure
from ovmfgen.builder.noop import build_digest, read_manifest, record_build
from ovmfgen.builder.manifest import make_manifest, up_to_date
from ovmfgen.builder.report import fv_usage_from_log, fv_usage_from_report
from ovmfgen.builder.measure import PCRLOCK_NAME, predict
from ovmfgen.builder.plan import Plan, link_cache_dir, plan
from ovmfgen.builder.publish import publish
from ovmfgen.builder.secureboot import EnrollFailed, describe, enroll, read_store
from ovmfgen.builder.stuart import run_stuart
from ovmfgen.builder.workspace import prepare_workspace, workspace_lock
from ovmfgen.edk2.conventions import fd_size_bytes, fd_size_kb
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import ELF_NAME, LOG_NAME, MANIFEST_NAME
from ovmfgen.platform.resolve import Resolved
from ovmfgen.platform.validate import validate
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
    plan: Plan | None = None    # what it built from (decided before building)


def post_build(p: Plan, log_text: str, seconds: float) -> dict[str, bytes]:
    """FD -> PVH ELF, loader checks, FV usage, predicted TPM measurements, manifest: the files to publish."""
    try:
        fd = p.fd_path.read_bytes()
    except OSError:
        raise BuildFailed(f"the build did not produce {display_path(p.fd_path)} (log: {display_path(p.log_path)})") \
            from None
    if len(fd) != fd_size_bytes(p.fd_size):
        raise BuildFailed(f"{display_path(p.fd_path)} is {len(fd)} bytes, expected a {p.fd_size} MiB FD")
    files: dict[str, bytes] = {p.fd_file_name: fd}
    elf_info = None
    sb_info = None
    store = None
    spec = p.platform.elf
    if p.platform.secure_boot is not None and spec is None:
        raise BuildFailed("Secure Boot needs a platform with a PVH ELF (elf:): its store sits after the header")
    if spec is not None:
        reserved = spec.reserved_for(fd_size_kb(p.fd_size))
        try:
            image = elf.make_pvh_elf(fd, spec.base, reserved)
        except OvmfgenError as exc:
            raise BuildFailed(f"cannot make the PVH ELF from {display_path(p.fd_path)}: {exc.message}") from None
        sb = p.platform.secure_boot
        if sb is not None:
            # After the header, before the checks: the store is part of the final bytes (the FD gets the
            # same store; it differs from the ELF only in the header's page).
            try:
                image = enroll(image, sb, p.fd_size)
                store = read_store(image, sb, p.fd_size)
                sb_info = describe(store, sb)
            except EnrollFailed as exc:
                raise BuildFailed(f"Secure Boot: {exc.message}") from None
            files[p.fd_file_name] = fd = fd[:sb.store_offset] + image[sb.store_offset:]
        findings = elf.check_elf(image)
        failed = [f for f in findings if not f.ok]
        if failed:
            raise BuildFailed(f"the PVH ELF fails loader rule {failed[0].rule}: {failed[0].detail} "
                              f"({len(failed)} of {len(findings)} rules failed)")
        files[ELF_NAME] = image
        elf_info = {"base": hex(spec.base), "entry": hex(spec.base + len(fd) - elf.PVH_ENTRY_FROM_END),
                    "reserved": hex(reserved) if reserved is not None else None,
                    "rules_passed": len(findings)}
    measurements = None
    if p.platform.feature("tpm") != "off":
        try:
            measurements, files[PCRLOCK_NAME] = predict(p, fd, store)
        except OvmfgenError as exc:
            raise BuildFailed(f"{p.platform.name}: {exc.message}") from None
    files[LOG_NAME] = log_text.encode("utf-8", errors="replace")
    try:
        fv = fv_usage_from_report(p.report_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        fv = {}
    if not fv:
        fv = fv_usage_from_log(log_text)
    manifest = make_manifest(p, files, fv, elf_info, seconds, sb_info, measurements)
    files[MANIFEST_NAME] = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
    return files


def check_ccache() -> None:
    if not (CCACHE_MASQUERADE / "gcc").exists():
        raise OvmfgenError(f"--ccache needs Debian's ccache ({CCACHE_MASQUERADE}/gcc is missing): "
                           "run `invoke setup` (it installs ccache)")


def build(resolved: Resolved) -> BuildResult:
    """Plan, no-op check, lock, validate, write the workspace, stuart, ELF, publish."""
    t0 = time.monotonic()
    request = resolved.request
    if request.ccache:
        check_ccache()
    # Taken before the plan reads anything: an input edited during the build makes the stamp miss.
    digest = build_digest(request, resolved.layout)
    p = plan(resolved)
    label = resolved.label
    if not request.force and not request.clean and up_to_date(p):
        say(f"{label}: up to date, nothing to do ({display_path(p.dist)}, input hash {p.input_hash[:12]})")
        record_build(request, resolved.layout, digest, p.dist, p.input_hash, label)
        return BuildResult(p.dist, read_manifest(p.dist) or {}, True, time.monotonic() - t0, p)
    lock_path = p.layout.build_root / ".locks" / f"{p.workspace.name}.lock"
    with workspace_lock(lock_path, label) as lock:
        if not request.force and not request.clean and up_to_date(p):
            # Built by whoever held the lock before us.
            say(f"{label}: up to date, nothing to do ({display_path(p.dist)})")
            return BuildResult(p.dist, read_manifest(p.dist) or {}, True, time.monotonic() - t0, p)

        validate(resolved)
        if request.clean and p.workspace.exists():
            say(f"removing {display_path(p.workspace)} (--clean)")
            shutil.rmtree(p.workspace)
        prepare_workspace(p)
        say(f"building {label} in {display_path(p.workspace)}")
        t_build = time.monotonic()
        rc, log_text = run_stuart(p, lock)
        if rc != 0:
            fail = summarize_failure(log_text, (p.workspace, p.edk2_root), resolved.source_map())
            raise BuildFailed(fail.one_line(label, display_path(p.log_path)), fail.location)
        if request.ccache:
            linkcache.trim(str(link_cache_dir()))  # ccache bounds itself (max_size); this one is ours to bound
        files = post_build(p, log_text, time.monotonic() - t_build)
        publish(files, p.dist)
        manifest = json.loads(files[MANIFEST_NAME])
        elapsed = time.monotonic() - t0
        sizes = ", ".join(f"{n} {len(d) // 1024} KiB" for n, d in files.items() if n in (p.fd_file_name, ELF_NAME))
        say(f"published {display_path(p.dist)} ({sizes}) in {elapsed:.0f} s")
        record_build(request, resolved.layout, digest, p.dist, p.input_hash, label)
        return BuildResult(p.dist, manifest, False, elapsed, p)
