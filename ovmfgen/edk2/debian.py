"""The default edk2 tree from Debian's source package, fetched by apt with a private configuration.

The system's apt configuration is only read, to find the Debian archive this machine already uses.
The tarballs are checked against the signed Sources index and the pinned sha256; the orig tarball
is upstream's content (no Debian patches are applied).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import paths
from ovmfgen.cacheentry import clean_stale, staging_dir
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.fetch import check_file
from ovmfgen.edk2.tree import PIN
from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import atomic_write_bytes, write_if_changed
from ovmfgen.apt import deb_src_entry, debian_archive, private_apt_options
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say

SOURCES_FILE = "sources.json"
APT_SOURCES_NAME = "ovmfgen-edk2-src.sources"


def apt_dir() -> Path:
    """The private apt configuration/state used to fetch the source package."""
    return paths.cache_dir() / "apt"


@dataclass(frozen=True)
class SourceRelease:
    """What the signed Sources index says of one version of the source package."""

    version: str
    files: dict  # name -> {"sha256": hex, "size": int}

    @property
    def debian_tarball(self) -> str:
        """The name of the debian/ tarball."""
        names = [n for n in self.files if n.endswith((".debian.tar.xz", ".debian.tar.gz", ".debian.tar.bz2"))]
        if len(names) != 1:
            raise OvmfgenError(f"{PIN.debian_source} {self.version}: expected one debian tarball, index lists {names}")
        return names[0]


def parse_showsrc(text: str, package: str = PIN.debian_source,
                  upstream_version: str = PIN.upstream_version) -> list[SourceRelease]:
    """The releases of ``package`` with ``upstream_version`` in `apt-cache showsrc` output."""
    releases = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        current = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current].append(line.strip())
            elif ":" in line:
                current, _, value = line.partition(":")
                fields[current] = [value.strip()] if value.strip() else []
        if (fields.get("Package") or [""])[0] != package:
            continue
        version = (fields.get("Version") or [""])[0]
        bare = version.split(":", 1)[-1]
        if bare.rsplit("-", 1)[0] != upstream_version:
            continue
        files = {}
        for entry in fields.get("Checksums-Sha256", []):
            parts = entry.split()
            if len(parts) == 3:
                files[parts[2]] = {"sha256": parts[0], "size": int(parts[1])}
        releases.append(SourceRelease(version=version, files=files))
    return releases


def _newest(releases: list[SourceRelease]) -> SourceRelease:
    """The highest version (Debian ordering, by dpkg)."""
    best = releases[0]
    for r in releases[1:]:
        if run(["dpkg", "--compare-versions", r.version, "gt", best.version], check=False).returncode == 0:
            best = r
    return best


def adopt_downloads(staging: Path, release: SourceRelease, downloads: Path) -> dict:
    """Verify the fetched tarballs in ``staging`` and move them into ``downloads``.

    Each tarball must match the signed index, and the orig tarball the pinned sha256 too. On any
    mismatch nothing is moved (the caller removes ``staging``). Returns the record kept beside them.
    """
    orig = PIN.orig_tarball
    if orig not in release.files:
        raise OvmfgenError(f"{PIN.debian_source} {release.version} in Debian's index has no {orig}")
    names = [orig, release.debian_tarball]
    for name in names:
        info = release.files[name]
        check_file(staging / name, info["sha256"], info["size"], f"Debian's signed index for {release.version}")
    check_file(staging / orig, PIN.orig_sha256, PIN.orig_size, f"pinned for {PIN.tag}")
    downloads.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(staging / name, downloads / name)
    record = {
        "package": PIN.debian_source, "version": release.version, "suite": PIN.suite,
        "tarballs": {name: release.files[name] for name in names},
    }
    atomic_write_bytes(downloads / SOURCES_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


def cached_downloads(downloads: Path) -> dict | None:
    """The record of verified tarballs in ``downloads`` when they are all there and still match."""
    try:
        record = json.loads((downloads / SOURCES_FILE).read_text(encoding="utf-8"))
        tarballs = record["tarballs"]
        if tarballs[PIN.orig_tarball]["sha256"] != PIN.orig_sha256:
            return None
        for name, info in tarballs.items():
            check_file(downloads / name, info["sha256"], info["size"], "cached download")
    except (OSError, ValueError, KeyError, TypeError, OvmfgenError):
        return None
    return record


def fetch_source_package(downloads: Path, etc_apt: Path = Path("/etc/apt")) -> dict:
    """Fetch the pinned source package's tarballs through a private apt configuration; verify; keep."""
    archive = debian_archive(etc_apt, f"the {PIN.debian_source} source package")
    adir = apt_dir()
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (adir / sub).mkdir(parents=True, exist_ok=True)
    write_if_changed(adir / "sources.list.d" / APT_SOURCES_NAME, deb_src_entry(archive, PIN.suite).encode())
    opts = private_apt_options(adir)
    say(f"fetching Debian's {PIN.suite} source index (from the archive in {archive.origin})")
    try:
        run(["apt-get", *opts, "--error-on=any", "update"], timeout=600)
    except CommandError as exc:
        log = exc.save_log(edk2.edk2_cache() / "apt-source.log")
        raise OvmfgenError(f"could not fetch Debian's {PIN.suite} source index (no network?): "
                           f"{exc.first_error()} (full output: {log})") from None
    proc = run(["apt-cache", *opts, "showsrc", PIN.debian_source], check=False)
    releases = parse_showsrc(proc.stdout)
    if not releases:
        raise OvmfgenError(f"Debian's {PIN.suite} index has no {PIN.debian_source} {PIN.upstream_version} "
                           f"source package")
    release = _newest(releases)
    orig = release.files.get(PIN.orig_tarball)
    if orig is None or orig["sha256"] != PIN.orig_sha256 or orig["size"] != PIN.orig_size:
        raise OvmfgenError(f"checksum mismatch: Debian's signed index lists {PIN.orig_tarball} as {orig}, "
                           f"pinned sha256 {PIN.orig_sha256} ({PIN.orig_size} bytes)")
    staging = staging_dir(downloads / "fetch")
    try:
        say(f"downloading {PIN.debian_source} {release.version} source tarballs (~30 MB)")
        try:
            run(["apt-get", *opts, "source", "--download-only", f"{PIN.debian_source}={release.version}"],
                cwd=staging, timeout=1800)
        except CommandError as exc:
            # Seen: the .dsc answers 404 while both tarballs download (apt exits 100 after fetching
            # them). The tarballs are all we use; anything short of both is a failure.
            if not all((staging / n).is_file() for n in (PIN.orig_tarball, release.debian_tarball)):
                log = exc.save_log(edk2.edk2_cache() / "apt-source.log")
                raise OvmfgenError(f"apt-get source {PIN.debian_source}={release.version} failed: "
                                   f"{exc.first_error()} (full output: {log})") from None
        return adopt_downloads(staging, release, downloads)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_downloads(force: bool = False) -> tuple[Path, dict]:
    """The directory holding the verified tarballs and their record, fetching them if needed."""
    downloads = edk2.edk2_cache() / "downloads"
    clean_stale(downloads)
    record = None if force else cached_downloads(downloads)
    if record is None:
        record = fetch_source_package(downloads)
    return downloads, record


def debian_removed_files(debian_tarball: Path) -> list[str]:
    """The files Debian strips from upstream's tree (debian/binary-check.remove, applied by get-orig-source)."""
    try:
        with tarfile.open(debian_tarball) as tar:
            member = tar.extractfile("debian/binary-check.remove")
            text = member.read().decode("utf-8") if member else ""
    except KeyError:
        return []
    return sorted(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
