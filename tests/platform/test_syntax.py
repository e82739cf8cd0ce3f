"""The structural DSC/FDF reader: what it keeps as written, and where it locates what it refuses."""

from __future__ import annotations

import pytest

from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.model import Block, Component, Conditional, Pcd
from ovmfgen.platform.syntax import parse_dsc, parse_fdf

SPANNING = """\
[Defines]
  PLATFORM_NAME = X
[PcdsFixedAtBuild]
  gTok.PcdA|1
!if "IA32" in "$(ARCH)"
  [Components.IA32]
  !if $(A) == TRUE
    Pkg/A.inf
  !endif
!else
  [Components.X64]
    Pkg/B.inf {
      <LibraryClasses>
        L|Pkg/L.inf
    }
!endif

[LibraryClasses]
  Z|Pkg/Z.inf
"""


def test_if_around_section_headers_is_kept_as_written() -> None:
    sections = parse_dsc(SPANNING, "x.dsc")
    assert [s.header for s in sections] == ["Defines", "PcdsFixedAtBuild", "LibraryClasses"]
    body = sections[1].body
    assert body[0] == Pcd("gTok.PcdA", "1", ())
    assert isinstance(body[1], Block) and body[1].loc.line == 5
    assert body[1].text.splitlines()[0] == '!if "IA32" in "$(ARCH)"'
    assert body[1].text.splitlines()[-1] == "!endif"
    assert "  [Components.X64]" in body[1].text.splitlines()
    # The block reads back the same (what render writes is what import reads).
    again = parse_dsc("[PcdsFixedAtBuild]\n" + body[1].text + "\n", "y.dsc")
    assert again[0].body == (body[1],)


def test_ordinary_conditional_stays_structured() -> None:
    sections = parse_dsc("[Components]\n!if $(A)\n  Pkg/A.inf\n!else\n  Pkg/B.inf\n!endif\n", "x.dsc")
    (cond,) = sections[0].body
    assert isinstance(cond, Conditional) and cond.branches[0].body == (Component("Pkg/A.inf"),)


def test_fdf_if_around_fv_sections_is_kept_as_written() -> None:
    text = "[FV.A]\nINF Pkg/A.inf\n!if $(N) == TRUE\n[FV.B]\nBlockSize = 0x1000\nINF Pkg/B.inf\n!endif\n[FV.C]\n"
    sections = parse_fdf(text, "x.fdf")
    assert [s.header for s in sections] == ["FV.A", "FV.C"]
    assert isinstance(sections[0].body[-1], Block)


def test_structured_pcd_field_assignment() -> None:
    (section,) = parse_dsc("[PcdsFixedAtBuild]\n  gTok.PcdS.Field.Sub|0x1\n  gTok.PcdS[0].F|{0x1, 0x2}\n", "x.dsc")
    assert section.body == (Pcd("gTok.PcdS.Field.Sub", "0x1", ()), Pcd("gTok.PcdS[0].F", "{0x1, 0x2}", ()))


@pytest.mark.parametrize(("text", "message"), [
    ("[Components]\n!if $(A)\n  Pkg/A.inf\n", "x.dsc:2:1: error: unterminated !if block in [Components]"),
    ("[Components]\n!endif\n", "x.dsc:2:1: error: !endif without matching !if"),
    ("[Components]\n!if $(A)\n[LibraryClasses]\n", "x.dsc:2:1: error: unterminated !if block in [Components]"),
    ("  Pkg/A.inf\n", "x.dsc:1:1: error: statement outside any section: Pkg/A.inf"),
])
def test_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(OvmfgenError) as info:
        parse_dsc(text, "x.dsc")
    assert str(info.value) == message
