"""``invoke rebase``: carry a platform to a new edk2 release (a semantic three-way merge into its YAML).

The three sides are upstream's platform (``upstream: dsc/fdf``) in the tree the platform is written for
(base), the same files in the target tree (theirs), and the platform as loaded for the base release
(ours, every statement located in the YAML). Upstream's change is computed statement by statement:
sections, and in each section body the statements keyed by what they define (a component by its INF,
a library class, a PCD, an FV's INF, an FD region by its offset, an include by its path, a build
option, a ``!if`` by its expression; conditionals that stay are compared branch by branch).

Each change is written into the YAML as release-conditioned data, in place: a statement upstream
dropped is wrapped in ``when: {edk2: "< TAG"}``, a new one is inserted after its upstream neighbour
as ``when: {edk2: ">= TAG"}``, a changed one becomes ``then:`` (new) / ``else:`` (as written).
Everything else in the file -- deltas, comments, fragments, order -- is left byte for byte: the text
is edited by line ranges taken from the YAML node marks, never re-dumped.

Where upstream changed something the platform itself changes (the statement differs from base, a
listed delta names it, or it lives in a ``use:`` fragment or a feature ``when:`` arm), the rebase
stops with one located ``conflict:`` line per such place and writes nothing.
"""

from __future__ import annotations

import difflib
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from ovmfgen.edk2.releases import DEFAULT_TAG, position
from ovmfgen.edk2.tree import Edk2Tree, locate
from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.fsutil import write_if_changed
from ovmfgen.paths import Layout
from ovmfgen.platform.importer import dump_yaml, yaml_items
from ovmfgen.platform.load import HEADER_FIELDS, load_platform
from ovmfgen.platform.model import (
    Block, BuildOption, Comment, Component, Conditional, Define, ErrorDirective, Field, Inf, Include,
    LibraryMapping, Pcd, Platform, Raw, Region, RegionContent, RegionPcds, ReservedRegion, Section, SetPcd,
    Statement,
)
from ovmfgen.platform.diff import compare_platform, upstream_files
from ovmfgen.platform.overrides import Carried
from ovmfgen.platform.release import tag_number
from ovmfgen.platform.syntax import parse_dsc, parse_fdf
from ovmfgen.platform.resolve import resolved
from ovmfgen.platform.validate import validate
from ovmfgen.ui import say

Unit = tuple[Statement, ...]
_HEADER_FIELD_NAMES = {*HEADER_FIELDS.values(), "FLASH_DEFINITION"}
_TAG_IN_TEXT = re.compile(r"edk2-stable\d{6}")
_CONDITION = re.compile(r"\bedk2:\s*(\"[^\"]*\"|'[^']*'|[^,}\n]*)")


@dataclass(frozen=True)
class Edit:
    """Replace YAML lines [start, end) (an item list at ``indent``) by release-conditioned data.

    ``new`` are the YAML items for the target release; the old lines become the ``else:`` arm (or,
    with no ``new``, the ``< TAG`` arm). An insertion has start == end.
    """

    start: int
    end: int
    indent: int
    new: tuple[object, ...]
    what: tuple[str, ...]


@dataclass(frozen=True)
class Conflict:
    """Upstream changed something the platform changes too."""

    loc: Location
    message: str

    def line(self) -> str:
        """``platforms/x.yaml:L:C: conflict: ...``."""
        return f"{self.loc}: conflict: {self.message}"


# ---------------------------------------------------------------------------------------------
# Units and their keys


def _units(body: Sequence[Statement], kind: str) -> list[Unit]:
    """Statements grouped as the YAML holds them: an FD region with its PCDs and content is one item."""
    out: list[Unit] = []
    i = 0
    while i < len(body):
        stmt = body[i]
        if isinstance(stmt, Field) and kind == "Defines" and stmt.name in _HEADER_FIELD_NAMES:
            i += 1   # header fields are the platform's own (platform: keys), never merged
            continue
        group = [stmt]
        i += 1
        if isinstance(stmt, Region):
            while i < len(body) and isinstance(body[i], (RegionPcds, RegionContent, ReservedRegion)):
                group.append(body[i])
                i += 1
        out.append(tuple(group))
    return out


def _key(unit: Unit) -> tuple[str, ...]:
    """What a statement defines: equal keys on both sides are the same statement, changed or not."""
    s = unit[0]
    if isinstance(s, Comment):
        return ("comment", s.text)
    if isinstance(s, Include):
        return ("include", s.path)
    if isinstance(s, (Define, Field, SetPcd)):
        return (type(s).__name__.lower(), s.name)
    if isinstance(s, LibraryMapping):
        return ("library", s.lib_class) if s.lib_class != "NULL" else ("library", "NULL", s.inf)
    if isinstance(s, Pcd):
        return ("pcd", s.name)
    if isinstance(s, BuildOption):
        return ("build-option", s.key)
    if isinstance(s, Component):
        return ("component", s.inf)
    if isinstance(s, Inf):
        return ("INF", s.path)
    if isinstance(s, Conditional):
        return ("if", s.branches[0].directive, " ".join(s.branches[0].expr.split()))
    if isinstance(s, Region):
        return ("region", s.offset)
    if isinstance(s, (RegionPcds, RegionContent)):
        return ("region-part", str(s))
    if isinstance(s, Block):
        return ("block", s.text.splitlines()[0] if s.text else "")
    if isinstance(s, (Raw, ErrorDirective, ReservedRegion)):
        return (type(s).__name__.lower(), str(s))
    return (type(s).__name__, str(s))   # pragma: no cover - every statement kind is keyed above


def _describe(unit: Unit) -> str:
    k = _key(unit)
    names = {"library": "library class", "pcd": "PCD", "build-option": "build option", "INF": "FV entry",
             "if": "!if block", "region": "FD region", "define": "DEFINE", "include": "!include"}
    return f"{names.get(k[0], k[0])} {' '.join(k[1:]) if k[0] != 'if' else k[2]}".strip()


def _same_shape(a: Conditional, b: Conditional) -> bool:
    return (len(a.branches) == len(b.branches) and (a.orelse is None) == (b.orelse is None)
            and all((x.directive, " ".join(x.expr.split())) == (y.directive, " ".join(y.expr.split()))
                    for x, y in zip(a.branches, b.branches)))


def _arms(c: Conditional) -> list[tuple[Statement, ...]]:
    return [br.body for br in c.branches] + ([c.orelse] if c.orelse is not None else [])


# ---------------------------------------------------------------------------------------------
# Where our statements are in the YAML text


class _Index:
    """YAML item nodes of the platform file by position: line ranges and parent lists."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        self.items: dict[tuple[int, int], tuple[Node, SequenceNode]] = {}
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        self._walk(root)

    def _walk(self, node: Node | None) -> None:
        if isinstance(node, SequenceNode):
            for item in node.value:
                self.items[(item.start_mark.line + 1, item.start_mark.column + 1)] = (item, node)
                self._walk(item)
        elif isinstance(node, MappingNode):
            for _, value in node.value:
                self._walk(value)

    def item(self, loc: Location | None, source: str) -> tuple[Node, SequenceNode] | None:
        """The YAML list item a statement was loaded from, when it is in this file."""
        if loc is None or loc.path != source:
            return None
        return self.items.get((loc.line, loc.col))

    def span(self, node: Node) -> tuple[int, int, int]:
        """(first line, line after the last, dash column) of a list item (0-based)."""
        start = node.start_mark.line
        # A block node ends where the next token starts: on a later line, before any text there.
        line = node.end_mark.line
        end = line + 1 if line < len(self.lines) and self.lines[line][:node.end_mark.column].strip() else line
        # Blank and comment lines after an item belong to what follows.
        while end > start + 1 and (not self.lines[end - 1].strip() or self.lines[end - 1].lstrip().startswith("#")):
            end -= 1
        return start, end, node.start_mark.column - 2


# ---------------------------------------------------------------------------------------------
# The merge


class _Merge:
    def __init__(self, platform: Platform, index: _Index, target: str) -> None:
        self.platform = platform
        self.index = index
        self.target = target
        self.edits: list[Edit] = []
        self.conflicts: list[Conflict] = []

    # -- conflicts -------------------------------------------------------------------------

    def _delta_for(self, unit: Unit) -> str | None:
        words = " ".join(_key(unit)[1:])
        for d in self.platform.deltas:
            subject = d.subject.strip()
            if subject and (subject == words or subject in words.split() or words.startswith(subject)):
                return f"{d.kind} {subject}"
        return None

    def _conflict(self, unit: Unit, ours: Unit | None, why: str) -> None:
        loc = (ours[0].loc if ours else None) or self.platform.loc
        self.conflicts.append(Conflict(loc, f"upstream changed {_describe(unit)} {why}"))

    def _own(self, unit: Unit, ours: Unit, home: SequenceNode | None) -> tuple[Node, SequenceNode] | None:
        """Our item for ``ours`` when rebase may edit it; else records the conflict and returns None."""
        delta = self._delta_for(unit)
        if delta is not None:
            self._conflict(unit, ours, f"which delta '{delta}' also changes")
            return None
        found = self.index.item(ours[0].loc, self.platform.source)
        if found is None:
            where = ours[0].loc.path if ours[0].loc else "elsewhere"
            self._conflict(unit, ours, f"which the platform takes from a fragment ({where}); edit it there by hand")
            return None
        if home is not None and found[1] is not home:
            self._conflict(unit, ours, "which the platform sets in a when: block; edit it by hand")
            return None
        return found

    # -- bodies ----------------------------------------------------------------------------

    def body(self, base: Sequence[Statement], theirs: Sequence[Statement], ours: Sequence[Statement],
             kind: str) -> None:
        """Merge upstream's change of one statement list into ours."""
        ub, ut, uo = _units(base, kind), _units(theirs, kind), _units(ours, kind)
        kb, kt, ko = [_key(u) for u in ub], [_key(u) for u in ut], [_key(u) for u in uo]
        ours_of: dict[int, int] = {}
        for blk in difflib.SequenceMatcher(None, kb, ko, autojunk=False).get_matching_blocks():
            for n in range(blk.size):
                ours_of[blk.a + n] = blk.b + n
        homes = Counter(id(f[1]) for u in uo if (f := self.index.item(u[0].loc, self.platform.source)))
        home_id = homes.most_common(1)[0][0] if homes else None
        home = next((f[1] for u in uo if (f := self.index.item(u[0].loc, self.platform.source))
                     and id(f[1]) == home_id), None)
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, kb, kt, autojunk=False).get_opcodes():
            if op == "equal":
                for i, j in zip(range(i1, i2), range(j1, j2)):
                    if ub[i] != ut[j]:
                        self._changed(ub[i], ut[j], uo[ours_of[i]] if i in ours_of else None, kind, home)
                continue
            for i in range(i1, i2):
                if i in ours_of:
                    self._removed(ub[i], uo[ours_of[i]], home)
            if j2 > j1:
                self._inserted(ut[j1:j2], ko, uo, ours_of, i1, kind, home)

    def _changed(self, base: Unit, theirs: Unit, ours: Unit | None, kind: str, home: SequenceNode | None) -> None:
        if ours is None:
            return   # the platform dropped it (a delta): upstream's change does not apply
        b, t, o = base[0], theirs[0], ours[0]
        if isinstance(b, Conditional) and isinstance(t, Conditional) and isinstance(o, Conditional) \
                and _same_shape(b, t) and _same_shape(b, o):
            for ab, at, ao in zip(_arms(b), _arms(t), _arms(o)):
                self.body(ab, at, ao, kind)
            return
        if ours != base:
            self._conflict(theirs, ours, "which the platform also changes (it differs from upstream's "
                                         "previous release there)")
            return
        found = self._own(theirs, ours, home)
        if found is not None:
            start, end, indent = self.index.span(found[0])
            self.edits.append(Edit(start, end, indent, tuple(yaml_items(theirs, kind)),
                                   (f"changed {_describe(theirs)}",)))

    def _removed(self, base: Unit, ours: Unit, home: SequenceNode | None) -> None:
        if ours != base:
            self._conflict(base, ours, "(removed it) which the platform also changes")
            return
        found = self._own(base, ours, home)
        if found is not None:
            start, end, indent = self.index.span(found[0])
            self.edits.append(Edit(start, end, indent, (), (f"removed {_describe(base)}",)))

    def _inserted(self, new: list[Unit], ko: list[tuple[str, ...]], uo: list[Unit], ours_of: dict[int, int],
                  before: int, kind: str, home: SequenceNode | None) -> None:
        matched = set(ours_of.values())
        for unit in new:
            # The platform's own statements (no upstream counterpart) with the same key: it added it too.
            # (One matched to a base statement is upstream's, moved: not a conflict.)
            own = [n for n, k in enumerate(ko) if k == _key(unit) and n not in matched]
            if own and _key(unit)[0] != "comment":
                self._conflict(unit, uo[own[0]], "(added it) which the platform already has")
                return
            delta = self._delta_for(unit)
            if delta is not None:
                self._conflict(unit, None, f"(added it) which delta '{delta}' also changes")
                return
        # After our counterpart of the last upstream statement before the insertion, else before the next.
        candidates = [(ours_of[i], "after") for i in range(before - 1, -1, -1) if i in ours_of] + \
                     [(ours_of[i], "before") for i in sorted(ours_of) if i >= before]
        for idx, where in candidates:
            found = self.index.item(uo[idx][0].loc, self.platform.source)
            if found is None or (home is not None and found[1] is not home):
                continue
            start, end, indent = self.index.span(found[0])
            at = end if where == "after" else start
            items = tuple(x for u in new for x in yaml_items(u, kind))
            self.edits.append(Edit(at, at, indent, items, tuple(f"added {_describe(u)}" for u in new)))
            return
        self._conflict(new[0], None, "(added it) where the platform has no statement of its own to place it by")

    # -- sections --------------------------------------------------------------------------

    def sections(self, base: tuple[Section, ...], theirs: tuple[Section, ...], ours: tuple[Section, ...]) -> None:
        """Merge section by section (a new or dropped section is one edit of the dsc:/fdf: list)."""
        hb, ht, ho = [s.header for s in base], [s.header for s in theirs], [s.header for s in ours]
        ours_of = {b: ho.index(b) for b in hb if b in ho}
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, hb, ht, autojunk=False).get_opcodes():
            if op == "equal":
                for i, j in zip(range(i1, i2), range(j1, j2)):
                    if base[i].header in ours_of:
                        self.body(base[i].body, theirs[j].body, ours[ours_of[base[i].header]].body, base[i].kind)
                continue
            for i in range(i1, i2):
                if base[i].header in ours_of:
                    o = ours[ours_of[base[i].header]]
                    self._section_edit(o, (), f"removed section [{o.header}]", after=False)
            if j2 > j1:
                anchor = next((ours[ours_of[hb[i]]] for i in range(i1 - 1, -1, -1) if hb[i] in ours_of), None)
                items = tuple({s.header: yaml_items(s.body, s.kind)} for s in theirs[j1:j2])
                what = " ".join(f"[{s.header}]" for s in theirs[j1:j2])
                if anchor is None:
                    self.conflicts.append(Conflict(self.platform.loc, f"upstream added {what} before every section "
                                                                      "the platform has"))
                else:
                    self._section_edit(anchor, items, f"added section {what}", after=True)

    def _section_edit(self, section: Section, items: tuple[object, ...], what: str, after: bool) -> None:
        found = self.index.item(section.loc, self.platform.source)
        if found is None:
            self.conflicts.append(Conflict(section.loc or self.platform.loc,
                                           f"upstream {what.split(' ', 1)[0]} [{section.header}]'s neighbour, which "
                                           "the platform takes from a fragment; edit it by hand"))
            return
        start, end, indent = self.index.span(found[0])
        if after:
            self.edits.append(Edit(end, end, indent, items, (what,)))
        else:
            self.edits.append(Edit(start, end, indent, items, (what,)))


# ---------------------------------------------------------------------------------------------
# Writing the edits


def _merge_adjacent(edits: list[Edit]) -> list[Edit]:
    """Edits that touch (same list, contiguous lines) become one when: block."""
    out: list[Edit] = []
    for e in sorted(edits, key=lambda e: (e.start, e.end)):
        if out and out[-1].end == e.start and out[-1].indent == e.indent:
            p = out.pop()
            e = Edit(p.start, e.end, e.indent, p.new + e.new, p.what + e.what)
        if out and e.start < out[-1].end:
            raise OvmfgenError(f"rebase: overlapping edits at YAML line {e.start + 1} (a bug)")
        out.append(e)
    return out


def _dump_items(items: Sequence[object]) -> str:
    """YAML for new list items. A long section header stays one plain key (PyYAML's emitter would
    switch to the explicit '? key' form past 128 characters; its loader reads plain keys to 1024)."""
    out = []
    for item in items:
        if isinstance(item, dict) and len(item) == 1 and len(next(iter(item))) > 100:
            key, value = next(iter(item.items()))
            out.append(f"- {key}:\n" + "".join(_indented(dump_yaml(value), 4)))
        else:
            out.append(dump_yaml([item]))
    return "".join(out)


def _indented(text: str, pad: int) -> list[str]:
    return [(" " * pad + line).rstrip() + "\n" if line.strip() else "\n" for line in text.splitlines()]


def apply_edits(text: str, edits: list[Edit], conditions: tuple[str, str]) -> str:
    """The YAML text with every edit applied (bottom up, so line numbers stay valid). ``conditions``: the
    release condition of upstream's new data and of what it replaces (``release_conditions``)."""
    lines = text.splitlines(keepends=True)
    for e in reversed(_merge_adjacent(edits)):
        ind = " " * e.indent
        old = lines[e.start:e.end]
        block: list[str] = []
        # New data (added, or changed with the old as else:) holds from the target on; dropped data before it.
        block.append(f'{ind}- when: {{edk2: "{conditions[0] if e.new else conditions[1]}"}}\n')
        block.append(f"{ind}  then:\n")
        if e.new:
            block += _indented(_dump_items(e.new), e.indent + 4)
        else:
            block += ["    " + line if line.strip() else line for line in old]
        if e.new and old:
            block.append(f"{ind}  else:\n")
            block += ["    " + line if line.strip() else line for line in old]
        lines[e.start:e.end] = block
    return "".join(lines)


# ---------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class RebaseResult:
    """What a rebase would do: the new YAML text, the change list, the conflicts.

    ``plan_rebase`` adds what the result does on the target tree: the one-release overrides and deltas
    carried to it (each kept or left out, one line) and the differences ``invoke diff`` would still find.
    """

    text: str
    changes: tuple[str, ...]
    conflicts: tuple[Conflict, ...]
    carried: tuple[Carried, ...] = ()
    remaining: tuple[str, ...] = ()      # unexplained differences against the target's upstream after the rebase

    @property
    def status(self) -> str:
        """``conflicts``, ``clean`` (it merges: ``changes``), or ``nothing`` (upstream changed nothing to merge)."""
        return "conflicts" if self.conflicts else "clean" if self.changes else "nothing"


class _Relocate:
    """Locations in the probe file (the rebased text, written to a temporary file) shown at the platform
    file's own lines: a line the rebase did not touch at its old number, one inside an edit at the edit's start."""

    def __init__(self, path: Path, old: str, new: str, probe: Path) -> None:
        self.shown, self.probe = display_path(path), display_path(probe)
        self.new_to_old: dict[int, int] = {}
        matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
        for blk in matcher.get_matching_blocks():
            for n in range(blk.size):
                self.new_to_old[blk.b + n + 1] = blk.a + n + 1

    def __call__(self, loc: Location | None) -> Location:
        if loc is None:
            return Location(self.shown)
        if loc.path != self.probe:
            return loc
        before = [n for n in self.new_to_old if n <= loc.line]
        line = self.new_to_old[max(before)] if before else 1
        return Location(self.shown, line, loc.col if max(before, default=0) == loc.line else 0)


def plan_rebase(path: Path, base_tree: Edk2Tree, target_tree: Edk2Tree, layout: Layout | None = None) -> RebaseResult:
    """``rebase``, then what its result does on both trees, writing nothing to the platform.

    The rebased platform (the platform as it is, when there are conflicts) is resolved for both trees, so
    its overrides apply once more: an override that no longer applies to the target is a conflict, a
    one-release override or delta carried to it says whether it still applies or is still observed. Without
    conflicts the result must validate against both trees, and ``remaining`` lists what ``invoke diff``
    would still find against the target's upstream.
    """
    result = rebase(path, base_tree, target_tree)
    old = path.read_text(encoding="utf-8")
    lay = layout or Layout(platforms_dir=path.parent)
    conflicts = list(result.conflicts)
    carried: tuple[Carried, ...] = ()
    remaining: tuple[str, ...] = ()
    with tempfile.TemporaryDirectory(prefix="ovmfgen-rebase-") as tmp:
        probe = Path(tmp) / path.name
        probe.write_text(result.text, encoding="utf-8")
        relocate = _Relocate(path, old, result.text, probe)
        for tree in (base_tree, target_tree):
            try:
                r = resolved(load_platform(probe, platforms_dir=path.parent, edk2=tree.tag), tree, lay, quiet=True)
            except OvmfgenError as exc:
                conflicts.append(Conflict(relocate(exc.location), exc.message))
                continue
            try:
                if not result.conflicts:
                    validate(r, use_cache=False)
                if tree is target_tree:
                    drift = compare_platform(r, *upstream_files(r))
                    carried = tuple(replace(c, loc=relocate(c.loc) if c.loc else None) for c in drift.carried)
                    remaining = tuple(drift.unexplained_lines()) if not result.conflicts else ()
            except OvmfgenError as exc:
                conflicts.append(Conflict(relocate(exc.location),
                                          f"the rebased platform does not validate against {tree.tag}: {exc.message}"))
    if conflicts:
        return RebaseResult(old, (), tuple(conflicts), carried)
    return RebaseResult(result.text, result.changes, (), carried, remaining)


def written_for(text: str) -> str:
    """The release a platform is written for: the newest tag its edk2 conditions name, else the default."""
    named = [t for cond in _CONDITION.findall(text) for t in _TAG_IN_TEXT.findall(cond)]
    tags = sorted(set(named), key=lambda t: tag_number(t) or 0)
    return tags[-1] if tags else DEFAULT_TAG


def _upstream(tree: Edk2Tree, rel: str, parse: object) -> tuple[Section, ...]:
    path = tree.root / rel
    if not path.is_file():
        raise OvmfgenError(f"upstream file {rel} is not in the edk2 tree {tree.tag}")
    return parse(path.read_text(encoding="utf-8", errors="replace"), rel)  # type: ignore[operator]


def release_conditions(base: str, target: str, shown: str = "the platform") -> tuple[str, str]:
    """The ``edk2:`` conditions a rebase from the release ``base`` to the tree ``target`` writes: of upstream's
    new data, and of the data it replaces.

    To a release: ``>= TARGET`` / ``< TARGET``. To a checkout past ``base`` (``git describe``
    ``BASE-N-gHASH``), which no condition may name: ``> BASE`` / ``<= BASE``, i.e. every tree after the
    release (the checkout, later ones, the next release). A checkout past a later release than ``base``
    mixes that release's change with what came after it: rebase to that release first.
    """
    b, t = position(base), position(target)
    if b is None or not b.is_release:
        raise OvmfgenError(f"{base} is not an edk2 release (edk2-stableYYYYMM): a rebase starts from the release "
                           f"{shown} is written for")
    if t is None:
        raise OvmfgenError(f"cannot tell where {target} stands among edk2 releases (neither a release tag nor "
                           "git describe past one, edk2-stableYYYYMM-N-gHASH): fetch the release tags into it")
    if t <= b:
        raise OvmfgenError(f"--to {target} is not newer than {base}, the release {shown} is written for")
    if t.is_release:
        return f">= {target}", f"< {target}"
    if t.release_tag != base:
        raise OvmfgenError(f"{target} is a checkout past {t.release_tag}, but {shown} is written for {base}: "
                           f"rebase to {t.release_tag} first, then to the checkout")
    return f"> {base}", f"<= {base}"


def rebase(path: Path, base_tree: Edk2Tree, target_tree: Edk2Tree) -> RebaseResult:
    """Upstream's change between the two trees, merged into the platform file at ``path`` (pure: writes nothing)."""
    text = path.read_text(encoding="utf-8")
    conditions = release_conditions(base_tree.tag, target_tree.tag, display_path(path))
    platform = load_platform(path, platforms_dir=path.parent, edk2=base_tree.tag)
    if platform.upstream is None:
        raise OvmfgenError("the platform names no upstream (upstream: dsc, fdf) to rebase on", platform.loc)
    merge = _Merge(platform, _Index(text), target_tree.tag)
    up = platform.upstream
    merge.sections(_upstream(base_tree, up.dsc, parse_dsc), _upstream(target_tree, up.dsc, parse_dsc), platform.dsc)
    merge.sections(_upstream(base_tree, up.fdf, parse_fdf), _upstream(target_tree, up.fdf, parse_fdf), platform.fdf)
    if merge.conflicts:
        return RebaseResult(text, (), tuple(merge.conflicts))
    changes = tuple(w for e in sorted(merge.edits, key=lambda e: e.start) for w in e.what)
    return RebaseResult(apply_edits(text, merge.edits, conditions), changes, ())


def platform_file(platform_name: str, layout: Layout | None = None) -> Path:
    """The YAML file a rebase edits: ``platforms/NAME.yaml``, or the path given (one line when it is missing)."""
    path = (Path(platform_name) if platform_name.endswith(".yaml")
            else (layout or Layout()).platforms_dir / f"{platform_name}.yaml")
    if not path.is_file():
        raise OvmfgenError(f"unknown platform '{platform_name}' (no {display_path(path)})")
    return path


def rebase_command(platform_name: str, to: str, from_tag: str | None = None, dry_run: bool = False) -> None:
    """``invoke rebase``: write upstream's change from the platform's release to ``to`` into its YAML.

    ``to`` is a release tag, or a checkout (its path, or its name when ``$OVMFGEN_EDK2`` is that checkout)
    past the release the platform is written for. Nothing is written on a conflict (one located line
    each, exit 1) or when the result does not validate against both trees; ``dry_run`` prints the YAML
    diff instead of writing it. Each one-release override or delta carried to the target is one line.
    """
    if not to:
        raise OvmfgenError("rebase needs --to TAG (an edk2 release) or --to PATH (a checkout) to carry the "
                           "platform to")
    path = platform_file(platform_name)
    text = path.read_text(encoding="utf-8")
    base_tree, target_tree = locate(from_tag or written_for(text)), locate(to)
    result = plan_rebase(path, base_tree, target_tree)
    for c in result.carried:
        say(c.line(), prefix=False)
    if result.conflicts:
        for c in result.conflicts:
            print(c.line(), file=sys.stderr, flush=True)
        raise OvmfgenError(f"{len(result.conflicts)} conflict(s): nothing written")
    for line in result.remaining:
        say(f"{display_path(path)}: note: after the rebase, invoke diff against {target_tree.tag} still finds "
            f"{line}", prefix=False)
    if not result.changes:
        say(f"{display_path(path)}: upstream did not change from {base_tree.tag} to {target_tree.tag}; "
            "nothing to do")
        return
    for change in result.changes:
        say(f"{target_tree.tag}: {change}")
    if dry_run:
        shown = display_path(path)
        print("".join(difflib.unified_diff(text.splitlines(keepends=True), result.text.splitlines(keepends=True),
                                           f"a/{shown}", f"b/{shown}")), end="", flush=True)
        return
    write_if_changed(path, result.text.encode("utf-8"))
    say(f"{display_path(path)} rebased from {base_tree.tag} to {target_tree.tag} ({len(result.changes)} changes)")
