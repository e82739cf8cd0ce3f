"""Release conditions: ``when: {edk2: ">= edk2-stable202605"}`` in a platform.

What differs between edk2 releases is data in the platform, selected at load time by where the tree
stands among releases (``releases.Position``): a release tag (``edk2-stable202605``) is that release, a
checkout named by ``git describe`` (``edk2-stable202605-3-g5ccd4da``) comes after the release it descends
from and before the next one. So a checkout past edk2-stable202605 holds ``">= edk2-stable202605"`` and
``"< edk2-stable202608"``, and not ``"== edk2-stable202605"``.

A condition is one or more comparisons joined by commas, all of which must hold:
``">= edk2-stable202605"``, ``"< edk2-stable202605"``, ``">= edk2-stable202505, < edk2-stable202611"``;
a bare tag means ``==``.

A condition that names one release (a bare tag, or ``== TAG``) on an override or a delta is a fix for
that release's upstream: ``Condition.carried`` is that release for a LATER tree, where the entry keeps
applying while its patch applies (platform/overrides.py says in one line when it no longer does).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from ovmfgen.edk2.releases import Position, position

_PART_RE = re.compile(r"^(>=|<=|==|!=|>|<)?\s*(\S+)$")
_OPS: dict[str, Callable[[Position, Position], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
EXAMPLE = "'>= edk2-stable202605'"


class ConditionError(ValueError):
    """A condition that does not parse; its message is the text after ``error: ``."""


def tag_number(tag: str) -> int | None:
    """The date number of the release a tree is or descends from (``edk2-stable202605`` and
    ``edk2-stable202605-12-gabcdef`` -> 202605), None for other names."""
    pos = position(tag)
    return pos.release if pos is not None else None


def tree_position(tag: str, text: str) -> Position:
    """Where the tree named ``tag`` stands (ConditionError naming the condition ``text`` when unknown)."""
    pos = position(tag)
    if pos is None:
        raise ConditionError(f"the edk2 tree '{tag}' is neither a release tag (edk2-stableYYYYMM) nor "
                             f"git describe past one (edk2-stableYYYYMM-N-gHASH), so 'edk2: {text}' cannot be decided")
    return pos


@dataclass(frozen=True)
class Condition:
    """A parsed release condition: (operator, position, tag as written) terms, all of which must hold."""

    text: str
    terms: tuple[tuple[str, Position, str], ...]

    def holds(self, tag: str) -> bool:
        """True when the tree named ``tag`` satisfies every term (ConditionError for a tree of no position)."""
        pos = tree_position(tag, self.text)
        return all(_OPS[op](pos, wanted) for op, wanted, _ in self.terms)

    @property
    def single_release(self) -> str | None:
        """The release this condition names alone (``edk2-stable202605``, ``== edk2-stable202605``)."""
        if len(self.terms) == 1 and self.terms[0][0] == "==":
            return self.terms[0][2]
        return None

    def carried(self, tag: str) -> str | None:
        """For a condition naming one release and a tree after it: that release (the entry is a fix of its
        upstream, carried to later trees); None otherwise."""
        one = self.single_release
        if one is None:
            return None
        return one if tree_position(tag, self.text) > self.terms[0][1] else None


def parse_condition(text: str) -> Condition:
    """``">= edk2-stable202605, < edk2-stable202611"`` -> Condition (ConditionError when malformed)."""
    terms: list[tuple[str, Position, str]] = []
    for part in text.split(","):
        part = part.strip()
        m = _PART_RE.match(part)
        if not part or not m:
            raise ConditionError(f"edk2 condition '{text}' is not 'OP edk2-stableYYYYMM' (e.g. {EXAMPLE})")
        op, tag = m.group(1) or "==", m.group(2)
        pos = position(tag)
        if pos is None or not pos.is_release:
            raise ConditionError(f"edk2 condition '{text}': '{tag}' is not a release tag edk2-stableYYYYMM "
                                 f"(e.g. {EXAMPLE})")
        terms.append((op, pos, tag))
    return Condition(text.strip(), tuple(terms))
