"""Release conditions: ``when: {edk2: ">= edk2-stable202605"}`` in a platform.

What differs between edk2 releases is data in the platform, selected at load time by the tree's tag.
Tags compare by their date number (``edk2-stable202605`` -> 202605), so a condition written today
keeps meaning the same for every later release.

A condition is one or more comparisons joined by commas, all of which must hold:
``">= edk2-stable202605"``, ``"< edk2-stable202605"``, ``">= edk2-stable202505, < edk2-stable202611"``;
a bare tag means ``==``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_TAG_RE = re.compile(r"^edk2-stable(\d{6})\b")
_PART_RE = re.compile(r"^(>=|<=|==|!=|>|<)?\s*(\S+)$")
_OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
EXAMPLE = "'>= edk2-stable202605'"


class ConditionError(ValueError):
    """A condition that does not parse; its message is the text after ``error: ``."""


def tag_number(tag: str) -> int | None:
    """The date number of an edk2 release tag (``edk2-stable202605`` -> 202605), None for other names.

    A ``git describe`` name past a tag (``edk2-stable202605-12-gabcdef``) counts as that tag's release.
    """
    m = _TAG_RE.match(tag)
    if not m:
        return None
    number = int(m.group(1))
    return number if 1 <= number % 100 <= 12 else None


@dataclass(frozen=True)
class Condition:
    """A parsed release condition: (operator, date number, tag as written) terms, all of which must hold."""

    text: str
    terms: tuple[tuple[str, int, str], ...]

    def holds(self, tag: str) -> bool:
        """True when the tree named ``tag`` satisfies every term (ConditionError for an undated tag)."""
        number = tag_number(tag)
        if number is None:
            raise ConditionError(f"the edk2 tree '{tag}' has no release date number (edk2-stableYYYYMM), "
                                 f"so 'edk2: {self.text}' cannot be decided")
        return all(_OPS[op](number, wanted) for op, wanted, _ in self.terms)


def parse_condition(text: str) -> Condition:
    """``">= edk2-stable202605, < edk2-stable202611"`` -> Condition (ConditionError when malformed)."""
    terms: list[tuple[str, int, str]] = []
    for part in text.split(","):
        part = part.strip()
        m = _PART_RE.match(part)
        if not part or not m:
            raise ConditionError(f"edk2 condition '{text}' is not 'OP edk2-stableYYYYMM' (e.g. {EXAMPLE})")
        op, tag = m.group(1) or "==", m.group(2)
        number = tag_number(tag)
        if number is None or tag != f"edk2-stable{number}":
            raise ConditionError(f"edk2 condition '{text}': '{tag}' is not a release tag edk2-stableYYYYMM "
                                 f"(e.g. {EXAMPLE})")
        terms.append((op, number, tag))
    return Condition(text.strip(), tuple(terms))
