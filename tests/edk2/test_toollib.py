"""edk2/toollib.py: the Edk2Path a checkout changing under its walk cannot turn into a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovmfgen.edk2 import toollib
from ovmfgen.errors import OvmfgenError


def _package(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / f"{name}.dec").write_text("[Defines]\n", encoding="utf-8")


def test_edk2_path_finds_the_packages(tmp_path: Path) -> None:
    ws, tree = tmp_path / "ws", tmp_path / "tree"
    ws.mkdir()
    _package(tree, "MdePkg")
    path = toollib.edk2_path(ws, [tree])
    assert path.GetAbsolutePathOnThisSystemFromEdk2RelativePath("MdePkg/MdePkg.dec") == \
        str(tree / "MdePkg" / "MdePkg.dec")


def test_a_directory_vanishing_twice_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edk2toollib.uefi.edk2 import path_utilities

    gone = tmp_path / "tree" / ".git" / "objects" / "74"
    calls = []

    def vanishing(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise FileNotFoundError(2, os.strerror(2), str(gone))

    monkeypatch.setattr(path_utilities, "Edk2Path", vanishing)
    with pytest.raises(OvmfgenError) as info:
        toollib.edk2_path(tmp_path / "ws", [tmp_path / "tree"])
    assert len(calls) == 2
    assert str(info.value) == ("error: the edk2 tree changed while ovmfgen read it (No such file or directory: "
                               f"{gone}); run again when nothing else writes to it")


def test_a_directory_vanishing_once_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edk2toollib.uefi.edk2 import path_utilities

    real = path_utilities.Edk2Path
    calls = []

    def once(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            raise FileNotFoundError(2, os.strerror(2), str(tmp_path / "gone"))
        return real(*args, **kwargs)

    ws, tree = tmp_path / "ws", tmp_path / "tree"
    ws.mkdir()
    _package(tree, "MdePkg")
    monkeypatch.setattr(path_utilities, "Edk2Path", once)
    assert toollib.edk2_path(ws, [tree]) is not None and len(calls) == 2
