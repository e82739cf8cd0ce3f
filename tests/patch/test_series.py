"""ovmfgen.patch.series: who signs the series (Signed-off-by as PatchCheck.py wants it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ovmfgen.patch import series as patch_series
from ovmfgen.errors import OvmfgenError


# --- Signed-off-by ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Jane Doe <jane@example.com>", "  Jane Doe   <jane@example.com> ",
                                  '"Doe, Jane" <jane@example.com>'])
def test_signoff_accepts_name_and_address(text: str) -> None:
    ident = patch_series.parse_signoff(text)
    assert ident.email == "jane@example.com" and str(ident) == f"{ident.name} <jane@example.com>"


@pytest.mark.parametrize("text, message", [
    ("jane@example.com", "is not 'Name <email>'"),
    ("<jane@example.com>", "the name is missing"),
    ("Jane<jane@example.com>", "put a space between the name and '<'"),
    ("Doe, Jane <jane@example.com>", "put quotes"),
    ("Jane Doe <jane at example.com>", "is not an e-mail address"),
    ("edk2 <devel@edk2.groups.io>", "the mailing list"),
])
def test_signoff_rejects_what_patchcheck_rejects(text: str, message: str) -> None:
    with pytest.raises(OvmfgenError, match=re.escape(message)):
        patch_series.parse_signoff(text)


def test_default_signoff_comes_from_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gitconfig"
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    config.write_text("[user]\n\tname = Git User\n\temail = git.user@example.org\n")
    assert patch_series.default_signoff(tmp_path) == patch_series.Ident("Git User", "git.user@example.org")
    config.write_text("[user]\n\tname = Git User\n")
    with pytest.raises(OvmfgenError, match="no Signed-off-by identity: pass --signoff"):
        patch_series.default_signoff(tmp_path)
