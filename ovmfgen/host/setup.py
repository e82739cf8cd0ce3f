"""``invoke setup``: make this machine ready to build (apt packages, the pinned edk2 tree, BaseTools).

Idempotent and cached: a second run checks a few files and says it has nothing to do. Everything it
makes goes to a temp file/dir beside its final place and is renamed in, so a killed run never leaves
something that looks complete; the next run removes the leftovers and carries on.

The edk2 tree comes, when the submodule is not initialised, from Debian's source package of the pinned
release, fetched by apt with a private configuration in the cache (the system's apt configuration is
only read, to find the Debian archive this machine already uses), checked against the signed index and
the pinned sha256, and unpacked as is: upstream's content, no Debian patches.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import paths
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.tree import PIN, Edk2Tree
from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import atomic_write_bytes, replace_dir, sha256_file, write_if_changed
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say

APT_PACKAGES = ("nasm", "acpica-tools", "uuid-dev", "build-essential", "dpkg-dev", "qemu-system-x86", "ccache", "mtools", "dosfstools")

# Suites of the Debian archive proper. An entry serving one of these (and `main`) is the Debian archive;
# -security/-updates/-backports suites and third-party repositories ("nodistro", "cloud-sdk-...") are not.
DEBIAN_SUITES = frozenset({
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "sid", "experimental",
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke",
})

SOURCES_FILE = "sources.json"
APT_SOURCES_NAME = "ovmfgen-edk2-src.sources"
TMP_INFIX = ".tmp-"


# --------------------------------------------------------------------------------------------------
# apt sources: find the Debian archive this machine uses


@dataclass(frozen=True)
class AptSource:
    """One enabled apt source entry (one URI of it)."""

    types: tuple[str, ...]
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None  # verbatim: a keyring path, fingerprints, or an inline key (deb822 multi-line)
    origin: str  # "file:line", for messages


def parse_one_line_sources(text: str, origin: str) -> list[AptSource]:
    """Entries of a one-line-format file (``deb [opts] uri suite comp...``)."""
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts: dict[str, str] = {}
        m = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        kind, optstr, uri, suite, comps = m.groups()
        for opt in (optstr or "").split():
            key, _, value = opt.partition("=")
            opts[key.lower()] = value
        entries.append(AptSource(
            types=(kind,), uri=uri, suites=(suite,), components=tuple(comps.split()),
            signed_by=opts.get("signed-by") or None, origin=f"{origin}:{lineno}",
        ))
    return entries


def parse_deb822_sources(text: str, origin: str) -> list[AptSource]:
    """Entries of a deb822 ``.sources`` file (paragraphs of ``Field: value`` with continuation lines)."""
    entries = []
    fields: dict[str, list[str]] = {}
    start = 0
    current: str | None = None

    def flush() -> None:
        if not fields:
            return
        get = lambda k: " ".join(fields.get(k, [])).split()  # noqa: E731
        enabled = (get("enabled") or ["yes"])[0].lower() != "no"
        # Verbatim: the first line (may be empty before an inline key), then continuation lines.
        signed = fields.get("signed-by") or []
        signed_by = "\n".join(signed) if any(s.strip() for s in signed) else None
        if enabled:
            for uri in get("uris"):
                entries.append(AptSource(
                    types=tuple(get("types")), uri=uri, suites=tuple(get("suites")),
                    components=tuple(get("components")), signed_by=signed_by or None,
                    origin=f"{origin}:{start}",
                ))
        fields.clear()

    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#"):
            continue
        if not raw.strip():
            flush()
            current = None
            continue
        if raw[0] in " \t":
            if current is not None:
                fields[current].append(raw)
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        if not fields:
            start = lineno
        current = key.strip().lower()
        fields[current] = [value.strip()]
    flush()
    return entries


def read_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled entry apt reads: sources.list, then sources.list.d/*.list and *.sources (sorted)."""
    entries: list[AptSource] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        entries += parse_one_line_sources(main.read_text(encoding="utf-8", errors="replace"), str(main))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list":
                entries += parse_one_line_sources(f.read_text(encoding="utf-8", errors="replace"), str(f))
            elif f.suffix == ".sources":
                entries += parse_deb822_sources(f.read_text(encoding="utf-8", errors="replace"), str(f))
    return entries


def debian_archive(etc_apt: Path = Path("/etc/apt")) -> AptSource:
    """The Debian archive entry this machine uses: serves a main distribution suite with `main`.

    Raises OvmfgenError when there is none (security/updates mirrors and third-party repositories
    cannot serve the pinned source package).
    """
    for entry in read_apt_sources(etc_apt):
        if not entry.uri or entry.uri.startswith("cdrom:"):
            continue
        if "main" in entry.components and any(s in DEBIAN_SUITES for s in entry.suites):
            return entry
    raise OvmfgenError(
        f"no Debian archive entry in {etc_apt}/sources.list or {etc_apt}/sources.list.d/ "
        f"(one serving a Debian suite such as bookworm with `main`); cannot fetch the {PIN.debian_source} "
        f"source package"
    )


def deb_src_entry(archive: AptSource, suite: str = PIN.suite) -> str:
    """The deb822 text of the private deb-src entry: the machine's Debian archive, the pinned suite."""
    lines = ["Types: deb-src", f"URIs: {archive.uri}", f"Suites: {suite}", "Components: main"]
    if archive.signed_by:
        first, *rest = archive.signed_by.split("\n")
        lines.append(f"Signed-By: {first}".rstrip())
        lines += rest  # continuation lines of an inline key, kept verbatim (they start with a space)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# small helpers


def clean_stale(directory: Path) -> list[Path]:
    """Remove the temp files/dirs a killed run left in ``directory`` (only call it under the setup lock)."""
    removed = []
    if directory.is_dir():
        for p in sorted(directory.iterdir()):
            if p.name.startswith(".") and (TMP_INFIX in p.name or p.name.endswith(".old")):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def staging_dir(final: Path) -> Path:
    """A fresh temp dir beside ``final`` (same file system, so it can be renamed into place)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_INFIX}", dir=final.parent))
    d.chmod(0o755)  # mkdtemp's 0700 would follow the directory when it is renamed into place
    return d


@contextlib.contextmanager
def setup_lock() -> Iterator[None]:
    """Hold ``<cache>/edk2/.lock`` so two setups never work on the cache at once."""
    d = edk2.edk2_cache()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another `invoke setup` (lock {d / '.lock'})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _first_error(output: str) -> str:
    """The most telling line of a failed tool's output (apt's first `E:`, else the last line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("E:"):
            return ln
    return lines[-1] if lines else "no output"


def _log_failure(name: str, exc: CommandError) -> Path:
    """Keep a failed command's full output in the cache; return the log's path for the error line."""
    log = edk2.edk2_cache() / f"{name}.log"
    atomic_write_bytes(log, f"$ {' '.join(exc.argv)}\n{exc.output}".encode())
    return log


# --------------------------------------------------------------------------------------------------
# 1. apt packages


def missing_apt_packages(packages: tuple[str, ...] = APT_PACKAGES) -> list[str]:
    """The ``packages`` dpkg does not report as installed."""
    try:
        proc = run(["dpkg-query", "-W", "-f", "${Package}\t${Status}\n", *packages], check=False)
    except CommandError:
        raise OvmfgenError("dpkg-query not found: ovmfgen setup needs a Debian-based system") from None
    installed = set()
    for line in proc.stdout.splitlines():
        name, _, status = line.partition("\t")
        if status.strip() == "install ok installed":
            installed.add(name.split(":")[0])
    return [p for p in packages if p not in installed]


def ensure_apt_packages(packages: tuple[str, ...] = APT_PACKAGES) -> bool:
    """Install the missing ``packages`` (apt-get update only then). Returns True if it did something."""
    missing = missing_apt_packages(packages)
    if not missing:
        return False
    if os.geteuid() != 0:
        raise OvmfgenError(f"missing packages: {' '.join(missing)}; run: sudo apt-get install -y {' '.join(missing)}")
    say(f"installing apt packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update"], env=env, timeout=900)
        run(["apt-get", "install", "-y", *missing], env=env, timeout=3600)
    except CommandError as exc:
        log = _log_failure("apt-install", exc)
        raise OvmfgenError(f"apt-get could not install {' '.join(missing)}: {_first_error(exc.output)} "
                           f"(full output: {log})") from None
    still = missing_apt_packages(packages)
    if still:
        raise OvmfgenError(f"apt-get ran but these packages are still not installed: {' '.join(still)}")
    return True


# --------------------------------------------------------------------------------------------------
# 2. the Debian source package


def apt_dir() -> Path:
    """The private apt configuration/state used to fetch the source package."""
    return paths.cache_dir() / "apt"


def apt_options(adir: Path) -> list[str]:
    """apt options that read only our sources and keep lists/caches in ``adir`` (system apt untouched)."""
    return [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={adir / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={adir / 'lists'}",
        "-o", f"Dir::Cache={adir / 'cache'}",
    ]


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


def check_file(path: Path, sha256: str, size: int, what: str) -> None:
    """Raise a one-line OvmfgenError unless ``path`` has this size and sha256."""
    if not path.is_file():
        raise OvmfgenError(f"{what}: {path.name} was not downloaded")
    actual_size = path.stat().st_size
    actual = sha256_file(path)
    if actual != sha256 or actual_size != size:
        raise OvmfgenError(
            f"checksum mismatch for {path.name} ({what}): sha256 {actual} ({actual_size} bytes), "
            f"expected {sha256} ({size} bytes)"
        )


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
    archive = debian_archive(etc_apt)
    adir = apt_dir()
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (adir / sub).mkdir(parents=True, exist_ok=True)
    write_if_changed(adir / "sources.list.d" / APT_SOURCES_NAME, deb_src_entry(archive).encode())
    opts = apt_options(adir)
    say(f"fetching Debian's {PIN.suite} source index (from the archive in {archive.origin})")
    try:
        run(["apt-get", *opts, "--error-on=any", "update"], timeout=600)
    except CommandError as exc:
        log = _log_failure("apt-source", exc)
        raise OvmfgenError(f"could not fetch Debian's {PIN.suite} source index (no network?): "
                           f"{_first_error(exc.output)} (full output: {log})") from None
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
                log = _log_failure("apt-source", exc)
                raise OvmfgenError(f"apt-get source {PIN.debian_source}={release.version} failed: "
                                   f"{_first_error(exc.output)} (full output: {log})") from None
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


# --------------------------------------------------------------------------------------------------
# unpacking


def unpack_tarball(tarball: Path, final: Path, topdir: str) -> None:
    """Unpack ``tarball``'s ``topdir/`` to ``final`` atomically: into a temp dir beside it, then rename.

    A run killed mid-way leaves only a ``.NAME.tmp-*`` dir, which ``clean_stale`` removes; ``final``
    is either absent, the previous tree, or the complete new one.
    """
    staging = staging_dir(final)
    try:
        with tarfile.open(tarball) as tar:
            # The tarball is checksum-verified; the `tar` filter still refuses paths escaping `staging`
            # while keeping edk2's own absolute symlink (EmulatorPkg's X11IncludeHack).
            tar.extractall(staging, filter="tar")
        top = staging / topdir
        if not top.is_dir():
            raise OvmfgenError(f"{tarball.name} has no {topdir}/ directory")
        replace_dir(top, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def debian_removed_files(debian_tarball: Path) -> list[str]:
    """The files Debian strips from upstream's tree (debian/binary-check.remove, applied by get-orig-source)."""
    try:
        with tarfile.open(debian_tarball) as tar:
            member = tar.extractfile("debian/binary-check.remove")
            text = member.read().decode("utf-8") if member else ""
    except KeyError:
        return []
    return sorted(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def empty_submodules(root: Path) -> list[str]:
    """Submodule paths in the tree's .gitmodules that are absent or empty (not shipped)."""
    gm = root / ".gitmodules"
    if not gm.is_file():
        return []
    out = []
    for m in re.finditer(r"^\s*path\s*=\s*(\S+)\s*$", gm.read_text(encoding="utf-8"), re.M):
        d = root / m.group(1)
        if not d.is_dir() or not any(d.iterdir()):
            out.append(m.group(1))
    return sorted(out)


def debian_identity(record: dict, removed: list[str], empty: list[str]) -> dict:
    """The identity of the pinned tree unpacked from Debian's orig tarball."""
    return {
        "schema": edk2.IDENTITY_SCHEMA,
        "tag": PIN.tag,
        "commit": PIN.commit,
        "url": PIN.url,
        "release_date": PIN.release_date,
        "source": "debian",
        "debian": {
            "package": record["package"],
            "version": record["version"],
            "suite": record["suite"],
            "checked_against": "the Sources index of the apt-verified (signed) InRelease, and the pin",
            "tarballs": record["tarballs"],
        },
        "debian_removed_files": removed,
        "empty_submodules": empty,
        "changes": list(edk2.CHANGES),
        "basetools_applications": list(edk2.BASETOOLS_APPLICATIONS),
    }


def write_identity(directory: Path, identity: dict) -> None:
    """Record ``identity`` (the last step: its presence says the tree is complete)."""
    atomic_write_bytes(directory / edk2.IDENTITY_FILE,
                       (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode())


def install_debian_tree(directory: Path, downloads: Path, record: dict) -> dict:
    """Unpack the verified orig tarball to ``directory/tree`` and record its identity."""
    # Invalidate first: from here until write_identity the tree is not known complete, and BaseTools
    # built from a previous tree are not trusted with the new one.
    (directory / edk2.IDENTITY_FILE).unlink(missing_ok=True)
    (directory / edk2.BASETOOLS_DIR / edk2.BASETOOLS_MARKER).unlink(missing_ok=True)
    root = directory / "tree"
    say(f"unpacking {PIN.orig_tarball} to {root}")
    unpack_tarball(downloads / PIN.orig_tarball, root, PIN.orig_topdir)
    if not (root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{PIN.orig_tarball} unpacked without OvmfPkg/: not an edk2 tree")
    debian_tar = next(n for n in record["tarballs"] if n != PIN.orig_tarball)
    removed = debian_removed_files(downloads / debian_tar)
    present = [f for f in removed if (root / f).exists()]
    if present:
        raise OvmfgenError(f"{PIN.orig_tarball}: files Debian says it removed are present: {present}")
    identity = debian_identity(record, removed, empty_submodules(root))
    write_identity(directory, identity)
    return identity


# --------------------------------------------------------------------------------------------------
# 3. BaseTools


def build_basetools(tree_root: Path, directory: Path) -> Path:
    """Copy ``tree_root``/BaseTools to ``directory``/basetools and build its C tools there.

    The edk2 tree itself is never written to. Returns EDK_TOOLS_PATH.
    """
    final = directory / edk2.BASETOOLS_DIR
    staging = staging_dir(final)
    try:
        bt = staging / "BaseTools"
        shutil.copytree(tree_root / "BaseTools", bt, symlinks=True)
        jobs = str(max(1, os.cpu_count() or 1))
        say(f"building BaseTools (make -j{jobs}, without BrotliCompress) in {final}")
        argv = ["make", "-C", bt / "Source" / "C", f"-j{jobs}", f"EDK2_PATH={tree_root}",
                f"APPLICATIONS={' '.join(edk2.BASETOOLS_APPLICATIONS)}"]
        try:
            run(argv, stdout_path=staging / "build.log", timeout=3600)
        except CommandError as exc:
            log = _log_failure("basetools", exc)
            raise OvmfgenError(f"BaseTools build failed: {_first_error(exc.output)} (full log: {log})") from None
        missing = [a for a in edk2.BASETOOLS_APPLICATIONS if not (bt / "Source" / "C" / "bin" / a).is_file()]
        if missing:
            raise OvmfgenError(f"BaseTools build produced no {', '.join(missing)}")
        (staging / edk2.BASETOOLS_MARKER).write_text(
            json.dumps({"edk2_root": str(tree_root), "applications": list(edk2.BASETOOLS_APPLICATIONS)}) + "\n")
        replace_dir(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "BaseTools"


# --------------------------------------------------------------------------------------------------
# the edk2 tree, by source


def local_identity(root: Path, source: str) -> dict:
    """The identity of a tree outside the cache (submodule or $OVMFGEN_EDK2 checkout)."""
    commit = edk2.git_head(root)
    pinned = commit == PIN.commit
    return {
        "schema": edk2.IDENTITY_SCHEMA,
        "tag": PIN.tag if pinned else None,
        "commit": commit,
        "url": PIN.url,
        "release_date": PIN.release_date if pinned else None,
        "source": source,
        "empty_submodules": empty_submodules(root),
        "changes": list(edk2.CHANGES),
        "basetools_applications": list(edk2.BASETOOLS_APPLICATIONS),
    }


def ensure_local_tree(root: Path, source: str, force: bool = False) -> bool:
    """BaseTools and identity for a submodule/$OVMFGEN_EDK2 tree. Returns True if it did something."""
    if not (root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{root} is not an edk2 tree (no OvmfPkg/)")
    missing = edk2.missing_submodules(root)
    if missing:
        raise OvmfgenError(f"{root} lacks submodules the firmware needs: run "
                           f"`git -C {root} submodule update --init {' '.join(missing)}`")
    directory = edk2.local_dir(root)
    clean_stale(directory)
    identity = edk2.read_identity(directory)
    wanted = local_identity(root, source)
    if not force and identity == wanted and edk2.basetools_ready(directory):
        return False
    (directory / edk2.IDENTITY_FILE).unlink(missing_ok=True)
    build_basetools(root, directory)
    write_identity(directory, wanted)
    return True


def ensure_debian_tree(force: bool = False) -> bool:
    """The pinned tree from Debian's orig tarball, and its BaseTools. Returns True if it did something."""
    directory = edk2.debian_dir()
    stale = clean_stale(directory)
    if stale:
        say(f"removed what an interrupted setup left: {', '.join(p.name for p in stale)}")
    did = False
    identity = edk2.read_identity(directory)
    if force or identity is None or not (directory / "tree" / "OvmfPkg").is_dir():
        downloads, record = ensure_downloads(force)
        install_debian_tree(directory, downloads, record)
        did = True
    if force or not edk2.basetools_ready(directory):
        build_basetools(edk2.debian_tree_root(), directory)
        did = True
    return did


def ensure_edk2(force: bool = False) -> tuple[Edk2Tree, bool]:
    """Make the tree ``edk2.locate()`` will choose ready; return it and whether anything was done."""
    override = os.environ.get("OVMFGEN_EDK2")
    with setup_lock():
        if override:
            did = ensure_local_tree(Path(override).expanduser().resolve(), "env", force)
        elif edk2.submodule_initialised():
            did = ensure_local_tree(edk2.submodule_root().resolve(), "submodule", force)
        else:
            did = ensure_debian_tree(force)
    return edk2.locate(), did


def setup_all(force: bool = False) -> None:
    """Make this machine ready to build: apt packages, the pinned edk2 tree, BaseTools.

    Idempotent: when all is in place it only checks and says so (well under 2 s). ``force`` refetches,
    re-unpacks and rebuilds (the previous tree stays usable until the new one is complete).
    """
    start = time.monotonic()
    did = ensure_apt_packages()
    tree, did_edk2 = ensure_edk2(force)
    took = time.monotonic() - start
    what = f"edk2 {tree.identity.get('tag') or tree.identity.get('commit')} ({tree.identity['source']}) at {tree.root}"
    if did or did_edk2:
        say(f"setup done in {took:.1f} s: {what}; EDK_TOOLS_PATH={tree.basetools}")
    else:
        say(f"setup: already done, nothing to do ({took:.2f} s): {what}")
