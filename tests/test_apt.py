"""ovmfgen.apt: the apt sources this machine reads (the Debian archive), and installed packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import etc_apt
from ovmfgen.errors import OvmfgenError
from ovmfgen import apt


DEB822_MACHINE = """\
    Types: deb
    # http://snapshot.example/archive/debian/20250520T000000Z
    URIs: http://mirror.example/debian
    Suites: bookworm bookworm-updates
    Components: main
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

    Types: deb
    URIs: http://mirror.example/debian-security
    Suites: bookworm-security
    Components: main
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
    """


# ---- apt source derivation


def test_deb822_picks_the_archive_and_carries_signed_by(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, parts={
        "debian.sources": DEB822_MACHINE,
        "nodesource.sources": "Types: deb\nURIs: https://third.example/node\nSuites: nodistro\n"
                              "Components: main\nSigned-By: /usr/share/keyrings/nodesource.gpg\n",
    })
    a = apt.debian_archive(d)
    assert a.uri == "http://mirror.example/debian"
    assert a.signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert a.origin.endswith("debian.sources:1")
    assert apt.deb_src_entry(a, "trixie") == (
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def test_one_line_format_security_first_and_signed_by_option(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, sources_list="""\
        # a comment
        deb http://mirror.example/debian-security bookworm-security main
        deb [arch=amd64 signed-by=/etc/apt/keyrings/deb.gpg] http://mirror.example/debian bookworm main contrib
        deb-src http://mirror.example/debian bookworm main
        """)
    a = apt.debian_archive(d)
    assert (a.uri, a.suites, a.signed_by) == ("http://mirror.example/debian", ("bookworm",), "/etc/apt/keyrings/deb.gpg")
    assert a.origin.endswith("sources.list:3")
    assert "Signed-By: /etc/apt/keyrings/deb.gpg\n" in apt.deb_src_entry(a, "trixie")


def test_one_line_without_signed_by_writes_none(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, parts={"mirror.list": "deb http://m.example/debian stable main\n"})
    a = apt.debian_archive(d)
    assert a.signed_by is None
    assert "Signed-By" not in apt.deb_src_entry(a, "trixie")


def test_third_party_updates_disabled_and_other_files_are_skipped(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, parts={
        "a.list": "deb https://third.example/apt cloud-sdk-bookworm main\n"
                  "deb http://m.example/debian bookworm-updates main\n"
                  "deb http://m.example/debian bookworm-backports main\n"
                  "deb http://m.example/debian bookworm contrib\n",
        "b.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n",
        "c.list.disabled-by-farm": "deb http://ignored.example/debian bookworm main\n",
        "d.sources": "Types: deb\nURIs: http://good.example/debian\nSuites: trixie\nComponents: main non-free\n",
    })
    assert apt.debian_archive(d).uri == "http://good.example/debian"


def test_no_debian_archive_is_one_clear_error(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, parts={
        "debian.sources": "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n"
                          "Components: main\n",
        "node.list": "deb [signed-by=/k.gpg] https://third.example/node nodistro main\n",
    })
    with pytest.raises(OvmfgenError) as ei:
        apt.debian_archive(d)
    msg = str(ei.value)
    assert msg.startswith("error: no Debian archive entry") and "\n" not in msg


def test_missing_apt_dir_is_the_same_error(tmp_path: Path) -> None:
    with pytest.raises(OvmfgenError, match="no Debian archive entry"):
        apt.debian_archive(tmp_path / "nowhere")


def test_inline_signed_by_key_is_carried_verbatim(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, parts={"debian.sources": (
        "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n"
    )})
    a = apt.debian_archive(d)
    entry = apt.deb_src_entry(a, "trixie")
    assert entry.endswith("Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n"
                          " -----END PGP PUBLIC KEY BLOCK-----\n")


def test_this_machine_has_a_debian_archive() -> None:
    """The real /etc/apt of the machine running the tests (a Debian one, as setup requires)."""
    a = apt.debian_archive()
    assert "://" in a.uri and "main" in a.components


def test_missing_apt_packages_sees_installed_and_absent() -> None:
    assert apt.missing_apt_packages(("dpkg", "no-such-package-ovmfgen")) == ["no-such-package-ovmfgen"]
