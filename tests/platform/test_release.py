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
    with pytest.raises(ConditionError) as ei:
        parse_condition(">= edk2-stable202605").holds("my-branch")
    assert str(ei.value) == ("the edk2 tree 'my-branch' is neither a release tag (edk2-stableYYYYMM) nor git "
                             "describe past one (edk2-stableYYYYMM-N-gHASH), so 'edk2: >= edk2-stable202605' "
                             "cannot be decided")


CHECKOUT = "edk2-stable202605-3-g5ccd4da"   # git describe of a checkout 3 commits past edk2-stable202605


@pytest.mark.parametrize("text, holds", [
    (">= edk2-stable202605", True),
    ("> edk2-stable202605", True),
    ("< edk2-stable202608", True),
    (">= edk2-stable202605, < edk2-stable202608", True),
    ("< edk2-stable202605", False),
    ("<= edk2-stable202605", False),
    ("edk2-stable202605", False),          # not that release: 3 commits past it
    ("== edk2-stable202605", False),
    ("!= edk2-stable202605", True),
    (">= edk2-stable202608", False),
])
def test_a_checkout_is_decided_by_its_position(text: str, holds: bool) -> None:
    assert parse_condition(text).holds(CHECKOUT) is holds


@pytest.mark.parametrize("text, tag, carried", [
    ("edk2-stable202605", CHECKOUT, "edk2-stable202605"),              # a later tree: carried
    ("== edk2-stable202605", "edk2-stable202608", "edk2-stable202605"),
    ("edk2-stable202605", "edk2-stable202605", None),                   # the release itself: it holds
    ("edk2-stable202605", "edk2-stable202502", None),                   # an earlier tree: never
    ("edk2-stable202605", "edk2-stable202605-0-gabcdef", None),
    (">= edk2-stable202502, < edk2-stable202605", "edk2-stable202605", None),   # a range says its end
    ("< edk2-stable202605", CHECKOUT, None),
])
def test_a_condition_naming_one_release_is_carried_to_later_trees(text: str, tag: str, carried: str | None) -> None:
    assert parse_condition(text).carried(tag) == carried
