"""Release conditions: tags compare by their date number; malformed conditions say what is wrong."""

from __future__ import annotations

import pytest

from ovmfgen.platform.release import ConditionError, parse_condition, tag_number


def test_tag_numbers() -> None:
    assert tag_number("edk2-stable202502") == 202502
    assert tag_number("edk2-stable202605-12-gabcdef012") == 202605   # git describe past a tag
    assert tag_number("edk2-stable202613") is None                    # no 13th month
    assert tag_number("vUDK2018") is None and tag_number("b03a21a63e3b") is None


@pytest.mark.parametrize("text, tag, holds", [
    (">= edk2-stable202605", "edk2-stable202605", True),
    (">= edk2-stable202605", "edk2-stable202502", False),
    ("< edk2-stable202605", "edk2-stable202502", True),
    ("edk2-stable202502", "edk2-stable202502", True),
    ("!= edk2-stable202502", "edk2-stable202605", True),
    (">= edk2-stable202505, < edk2-stable202611", "edk2-stable202605", True),
    (">= edk2-stable202505, < edk2-stable202611", "edk2-stable202611", False),
    ("> edk2-stable202502", "edk2-stable202505-3-g0123456", True),
])
def test_conditions_hold_by_date(text: str, tag: str, holds: bool) -> None:
    assert parse_condition(text).holds(tag) is holds


@pytest.mark.parametrize("text, message", [
    ("=> edk2-stable202605", "edk2 condition '=> edk2-stable202605' is not 'OP edk2-stableYYYYMM' "
                             "(e.g. '>= edk2-stable202605')"),
    (">= 202605", "edk2 condition '>= 202605': '202605' is not a release tag edk2-stableYYYYMM "
                  "(e.g. '>= edk2-stable202605')"),
    (">= edk2-stable202605,", "edk2 condition '>= edk2-stable202605,' is not 'OP edk2-stableYYYYMM' "
                              "(e.g. '>= edk2-stable202605')"),
])
def test_malformed_conditions(text: str, message: str) -> None:
    with pytest.raises(ConditionError) as ei:
        parse_condition(text)
    assert str(ei.value) == message


def test_an_undated_tree_cannot_decide() -> None:
    with pytest.raises(ConditionError, match="the edk2 tree 'my-branch' has no release date number"):
        parse_condition(">= edk2-stable202605").holds("my-branch")
