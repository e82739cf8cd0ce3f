"""apt on this machine: the sources it reads (to find the Debian archive it uses) and installing packages.

The system's apt configuration is only read; installing needs root (otherwise the error gives the
`sudo apt-get` line).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ovmfgen import paths
from ovmfgen.errors import OvmfgenError
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say

# Suites of the Debian archive proper. An entry serving one of these (and `main`) is the Debian archive;
# -security/-updates/-backports suites and third-party repositories ("nodistro", "cloud-sdk-...") are not.
DEBIAN_SUITES = frozenset({
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "sid", "experimental",
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke",
})


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


def debian_archive(etc_apt: Path = Path("/etc/apt"), what: str = "Debian source packages") -> AptSource:
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
        f"(one serving a Debian suite such as bookworm with `main`); cannot fetch {what}"
    )


def deb_src_entry(archive: AptSource, suite: str) -> str:
    """The deb822 text of a private deb-src entry: the machine's Debian archive, ``suite``."""
    lines = ["Types: deb-src", f"URIs: {archive.uri}", f"Suites: {suite}", "Components: main"]
    if archive.signed_by:
        first, *rest = archive.signed_by.split("\n")
        lines.append(f"Signed-By: {first}".rstrip())
        lines += rest  # continuation lines of an inline key, kept verbatim (they start with a space)
    return "\n".join(lines) + "\n"


def missing_apt_packages(packages: tuple[str, ...]) -> list[str]:
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


def ensure_apt_packages(packages: tuple[str, ...]) -> bool:
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
        log = exc.save_log(paths.cache_dir() / "apt" / "apt-install.log")
        raise OvmfgenError(f"apt-get could not install {' '.join(missing)}: {exc.first_error()} "
                           f"(full output: {log})") from None
    still = missing_apt_packages(packages)
    if still:
        raise OvmfgenError(f"apt-get ran but these packages are still not installed: {' '.join(still)}")
    return True


def private_apt_options(adir: Path) -> list[str]:
    """apt options that read only the sources in ``adir`` and keep lists/caches there (system apt untouched)."""
    return [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={adir / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={adir / 'lists'}",
        "-o", f"Dir::Cache={adir / 'cache'}",
    ]
