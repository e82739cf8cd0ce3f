"""Read EDK2 DSC/FDF text into the model's sections, keeping its shape.

edk2toollib's DscParser/FdfParser resolve conditionals and includes (they answer "what does this
build contain"), which is what ``semantic`` uses. Import needs the opposite: the file as written,
``!if`` blocks, ``!include`` lines and component override blocks intact, so it can be rendered back
into an equivalent file. This module is that structural reader; it does not evaluate anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ovmfgen.errors import Location, OvmfgenError
from ovmfgen.platform.model import (
    Block, BuildOption, Comment, Component, Conditional, Define, ErrorDirective, Field, Inf, Include,
    LibraryMapping, Pcd, Raw, Region, RegionContent, RegionPcds, Section, SetPcd, Statement, SubSection,
    Branch,
)

_SECTION_RE = re.compile(r"^\[([^\]]+)\]\s*$")
_REGION_RE = re.compile(r"^(0x[0-9A-Fa-f]+|\d+|\$\(\w+\))\s*\|\s*(0x[0-9A-Fa-f]+|\d+|\$\(\w+\))$")
_PCD_PAIR_RE = re.compile(r"^(\w+\.\w+)\s*\|\s*(\w+\.\w+)$")
_SUBSECTION_RE = re.compile(r"^<(\w+)(?:\.[\w.]+)?>$")
_REGION_CONTENT_KEYS = ("FV", "DATA", "FILE", "CAPSULE", "INF")


def split_pcd_value(text: str) -> list[str]:
    """Split ``value|type|size`` on ``|`` outside quotes and braces."""
    parts: list[str] = []
    depth = 0
    quote = ""
    cur = []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` that is not inside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip()
    return line.rstrip()


def _brace_delta(text: str) -> int:
    code = strip_comment(text)
    return code.count("{") - code.count("}")


@dataclass
class _Frame:
    """An open container while parsing: a section, a conditional branch or a component block."""

    kind: str                       # "section" | "branch" | "else" | "component" | "sub"
    body: list[Statement] = field(default_factory=list)
    # for conditionals: the finished branches so far and the directive/expr of the open one
    cond_branches: list[Branch] = field(default_factory=list)
    directive: str = ""
    expr: str = ""
    loc: Location | None = None
    # for components
    inf: str = ""
    subsections: list[SubSection] = field(default_factory=list)
    sub_kind: str = ""


class _Parser:
    """One pass over a DSC or FDF (``flavour``), line by line, into located ``Section``s.

    How it reads:

    * ``[Header]`` lines close the open section (an unterminated ``!if`` or component block in it is an
      error at its opening line) and open the next; statements outside any section are errors.
    * ``self.stack`` holds the open containers, innermost last (``_Frame``): the section, then any
      ``!if`` branch (``!elseif``/``!else`` replace the top frame, ``!endif`` folds the branches into one
      ``Conditional``), a component (``INF {`` ... ``}``) and its ``<LibraryClasses>``-style sub-sections.
      ``emit`` appends a statement to the innermost one.
    * The statement grammar is the innermost sub-section's kind if any, else the section's
      (``current_kind``): ``dsc_statement`` and ``fdf_statement`` parse one line each; FDF brace blocks
      (FILE, APRIORI, rule bodies) are gathered first and kept as one raw ``fdf_block``.
    * Comment lines are kept as ``Comment`` statements before the statement that follows them (so the
      rendered file keeps them where they were), except those right before a section header.
    """

    def __init__(self, text: str, path: str, flavour: str) -> None:
        self.lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.path = path
        self.flavour = flavour           # "dsc" | "fdf"
        self.sections: list[Section] = []
        self.stack: list[_Frame] = []
        self.header = ""
        self.header_loc: Location | None = None
        self.pending_comments: list[Comment] = []

    # -- helpers -----------------------------------------------------------------------------
    def loc(self, lineno: int, col: int = 1) -> Location:
        return Location(self.path, lineno, col)

    def err(self, lineno: int, message: str) -> OvmfgenError:
        return OvmfgenError(message, self.loc(lineno))

    def section_kind(self) -> str:
        return self.header.split(",")[0].strip().split(".")[0]

    def current_kind(self) -> str:
        """The statement grammar in force: a component sub-section's kind, else the section's."""
        for frame in reversed(self.stack):
            if frame.kind == "sub":
                return frame.sub_kind
        return self.section_kind()

    def emit(self, stmt: Statement) -> None:
        if self.pending_comments:
            self.stack[-1].body.extend(self.pending_comments)
            self.pending_comments = []
        self.stack[-1].body.append(stmt)

    def close_section(self, lineno: int) -> None:
        if not self.stack:
            return
        if len(self.stack) > 1:
            top = self.stack[-1]
            what = "component block" if top.kind in ("component", "sub") else "!if block"
            raise self.err(top.loc.line if top.loc else lineno, f"unterminated {what} in [{self.header}]")
        # Comments right before the next section header describe that header, not this body.
        self.pending_comments = []
        self.sections.append(Section(self.header, tuple(self.stack[0].body), loc=self.header_loc))
        self.stack = []

    # -- main loop ---------------------------------------------------------------------------
    def parse(self) -> tuple[Section, ...]:
        i = 0
        n = len(self.lines)
        while i < n:
            lineno = i + 1
            raw = self.lines[i].rstrip()
            stripped = raw.strip()
            i += 1
            if not stripped:
                continue
            if stripped.startswith("#"):
                text = stripped.lstrip("#").strip()
                if self.stack and text and set(stripped) != {"#"}:
                    self.pending_comments.append(Comment(text, loc=self.loc(lineno)))
                continue
            code = strip_comment(stripped)
            if not code:
                continue
            m = _SECTION_RE.match(code)
            if m and not self._in_component():
                self.close_section(lineno)
                self.header = " ".join(m.group(1).split())
                self.header = ", ".join(h.strip() for h in self.header.split(","))
                self.header_loc = self.loc(lineno)
                self.stack = [_Frame("section", loc=self.header_loc)]
                continue
            if not self.stack:
                raise self.err(lineno, f"statement outside any section: {code}")
            if code.startswith("!"):
                end = self._section_spanning_end(i - 1)
                if end is not None:
                    # An !if around section headers has no place in the section model: kept as written.
                    self.emit(Block(_verbatim(self.lines[i - 1:end + 1]), loc=self.loc(lineno)))
                    i = end + 1
                    continue
                self.directive(code, lineno)
                continue
            # Multi-line brace constructs (FDF FILE/APRIORI/DATA blocks, rule bodies).
            if self.flavour == "fdf" and _brace_delta(code) > 0:
                start = i - 1
                depth = _brace_delta(raw)
                block_lines = [raw]
                while depth > 0 and i < n:
                    block_lines.append(self.lines[i].rstrip())
                    depth += _brace_delta(self.lines[i])
                    i += 1
                if depth > 0:
                    raise self.err(start + 1, "unbalanced '{' (missing '}')")
                self.fdf_block(block_lines, start + 1)
                continue
            if self.flavour == "dsc":
                self.dsc_statement(code, lineno)
            else:
                self.fdf_statement(code, lineno)
        self.close_section(n)
        return tuple(self.sections)

    def _section_spanning_end(self, start: int) -> int | None:
        """The index of the ``!endif`` closing the ``!if`` at line index ``start`` when a section header
        lies between them (else None: an ordinary conditional, or one that never closes)."""
        if _directive_word(strip_comment(self.lines[start].strip())) not in ("if", "ifdef", "ifndef"):
            return None
        depth = 0
        spans = False
        for j in range(start, len(self.lines)):
            code = strip_comment(self.lines[j].strip())
            word = _directive_word(code)
            if word in ("if", "ifdef", "ifndef"):
                depth += 1
            elif word == "endif":
                depth -= 1
                if depth == 0:
                    return j if spans else None
            elif _SECTION_RE.match(code):
                spans = True
        return None

    def _in_component(self) -> bool:
        return any(f.kind in ("component", "sub") for f in self.stack)

    # -- directives --------------------------------------------------------------------------
    def directive(self, code: str, lineno: int) -> None:
        word, _, rest = code[1:].partition(" ")
        word = word.lower()
        rest = rest.strip()
        if word == "include":
            self.emit(Include(rest, loc=self.loc(lineno)))
        elif word == "error":
            self.emit(ErrorDirective(rest, loc=self.loc(lineno)))
        elif word in ("if", "ifdef", "ifndef"):
            if self.pending_comments:
                self.stack[-1].body.extend(self.pending_comments)
                self.pending_comments = []
            self.stack.append(_Frame("branch", directive=word, expr=rest, loc=self.loc(lineno)))
        elif word in ("elseif", "else", "endif"):
            frame = self.stack[-1]
            if frame.kind == "sub":
                self._close_sub()
                frame = self.stack[-1]
            if frame.kind not in ("branch", "else"):
                raise self.err(lineno, f"!{word} without matching !if")
            if self.pending_comments:
                frame.body.extend(self.pending_comments)
                self.pending_comments = []
            self.stack.pop()
            if frame.kind == "branch":
                branches = [*frame.cond_branches, Branch(frame.directive, frame.expr, tuple(frame.body), loc=frame.loc)]
            else:
                branches = frame.cond_branches
            first_loc = branches[0].loc if branches else frame.loc
            if word == "elseif":
                self.stack.append(_Frame("branch", directive="elseif", expr=rest, loc=self.loc(lineno),
                                         cond_branches=branches))
            elif word == "else":
                if frame.kind == "else":
                    raise self.err(lineno, "second !else in one !if block")
                self.stack.append(_Frame("else", cond_branches=branches, loc=first_loc))
            else:
                orelse = tuple(frame.body) if frame.kind == "else" else None
                self.stack[-1].body.append(Conditional(tuple(branches), orelse, loc=first_loc))
        else:
            raise self.err(lineno, f"unknown directive !{word}")

    # -- DSC ---------------------------------------------------------------------------------
    def _close_sub(self) -> None:
        sub = self.stack.pop()
        comp = self.stack[-1]
        comp.subsections.append(SubSection(sub.sub_kind, tuple(sub.body), loc=sub.loc))

    def dsc_statement(self, code: str, lineno: int) -> None:
        loc = self.loc(lineno)
        kind = self.current_kind()
        # Component override block: "<LibraryClasses>" ... "}".
        if self._in_component():
            if code == "}":
                if self.stack[-1].kind == "sub":
                    self._close_sub()
                comp = self.stack.pop()
                if comp.kind != "component":
                    raise self.err(lineno, "'}' closes a component block across an !if")
                self.emit(Component(comp.inf, tuple(comp.subsections), loc=comp.loc))
                return
            m = _SUBSECTION_RE.match(code)
            if m:
                if self.stack[-1].kind == "sub":
                    self._close_sub()
                self.stack.append(_Frame("sub", sub_kind=m.group(1), loc=loc))
                return
        if code.upper().startswith("DEFINE "):
            name, _, value = code[7:].partition("=")
            self.emit(Define(name.strip(), value.strip(), loc=loc))
            return
        if kind == "Components":
            inf = code
            opens = inf.endswith("{")
            if opens:
                inf = inf[:-1].strip()
            elif self._next_code_line_is_brace(lineno):
                opens = True
            if opens:
                self.stack.append(_Frame("component", inf=inf, loc=loc))
            else:
                self.emit(Component(inf, loc=loc))
            return
        if code == "{" and self.stack[-1].kind == "component":
            return
        if kind == "Defines":
            name, sep, value = code.partition("=")
            if not sep:
                raise self.err(lineno, f"expected NAME = VALUE in [{self.header}]: {code}")
            self.emit(Field(name.strip(), value.strip(), loc=loc))
        elif kind == "LibraryClasses":
            lib, sep, inf = code.partition("|")
            if not sep:
                raise self.err(lineno, f"expected LibraryClass|Path.inf: {code}")
            self.emit(LibraryMapping(lib.strip(), inf.strip(), loc=loc))
        elif kind.startswith("Pcds"):
            name, sep, rest = code.partition("|")
            if not sep:
                raise self.err(lineno, f"expected TokenSpace.PcdName|Value: {code}")
            parts = split_pcd_value(rest)
            self.emit(Pcd(name.strip(), parts[0], tuple(parts[1:]), loc=loc))
        elif kind == "BuildOptions":
            if "==" in code:
                key, _, value = code.partition("==")
                self.emit(BuildOption(key.strip(), value.strip(), replace=True, loc=loc))
            else:
                key, sep, value = code.partition("=")
                if not sep:
                    raise self.err(lineno, f"expected KEY = VALUE in [{self.header}]: {code}")
                self.emit(BuildOption(key.strip(), value.strip(), loc=loc))
        else:
            self.emit(Raw(code, loc=loc))

    def _next_code_line_is_brace(self, lineno: int) -> bool:
        for line in self.lines[lineno:]:
            code = strip_comment(line.strip())
            if code:
                return code == "{"
        return False

    # -- FDF ---------------------------------------------------------------------------------
    def fdf_block(self, lines: list[str], lineno: int) -> None:
        loc = self.loc(lineno)
        first = strip_comment(lines[0].strip())
        key, sep, _ = first.partition("=")
        if sep and key.strip().upper() == "DATA" and self.section_kind() == "FD":
            self.emit(RegionContent("DATA", _dedent_block(lines, value_only=True), loc=loc))
            return
        self.emit(Block(_dedent_block(lines), loc=loc))

    def fdf_statement(self, code: str, lineno: int) -> None:
        loc = self.loc(lineno)
        kind = self.section_kind()
        upper = code.upper()
        if upper.startswith("DEFINE "):
            name, _, value = code[7:].partition("=")
            self.emit(Define(name.strip(), value.strip(), loc=loc))
            return
        if upper.startswith("SET "):
            name, _, value = code[4:].partition("=")
            self.emit(SetPcd(name.strip(), value.strip(), loc=loc))
            return
        if kind == "FD":
            m = _REGION_RE.match(code)
            if m:
                self.emit(Region(m.group(1), m.group(2), loc=loc))
                return
            m = _PCD_PAIR_RE.match(code)
            if m:
                self.emit(RegionPcds(m.group(1), m.group(2), loc=loc))
                return
            key, sep, value = code.partition("=")
            if sep and key.strip().upper() in _REGION_CONTENT_KEYS:
                self.emit(RegionContent(key.strip().upper(), value.strip(), loc=loc))
                return
        if upper.startswith("INF "):
            words = code[4:].split()
            self.emit(Inf(words[-1], " ".join(words[:-1]), loc=loc))
            return
        key, sep, value = code.partition("=")
        if sep and kind in ("Defines", "FD", "FV", "Capsule", "OptionRom"):
            self.emit(Field(key.strip(), value.strip(), loc=loc))
            return
        self.emit(Raw(code, loc=loc))


def _directive_word(code: str) -> str:
    """``if`` for ``!if $(X)``; empty for a line that is no directive."""
    words = code[1:].split(None, 1) if code.startswith("!") else []
    return words[0].lower() if words else ""


def _verbatim(lines: list[str]) -> str:
    """Lines kept as written: trailing blanks and blank lines dropped, common indentation removed."""
    kept = [ln.rstrip().expandtabs(2) for ln in lines if ln.strip()]
    base = min(len(ln) - len(ln.lstrip()) for ln in kept)
    return "\n".join(ln[base:] for ln in kept)


def _dedent_block(lines: list[str], value_only: bool = False) -> str:
    """Normalise a verbatim block: common indentation removed; ``value_only`` drops ``DATA =``."""
    first = lines[0].strip()
    if value_only:
        first = first.partition("=")[2].strip()
    rest = [ln.rstrip() for ln in lines[1:]]
    # The closing brace's indentation marks the block's base indentation.
    closing = rest[-1] if rest else ""
    base = len(closing) - len(closing.lstrip()) if closing.strip().startswith("}") else min(
        (len(ln) - len(ln.lstrip()) for ln in rest if ln.strip()), default=0)
    body = []
    for ln in rest:
        if not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        body.append(ln[min(indent, base):])
    return "\n".join([first, *body])


def parse_dsc(text: str, path: str) -> tuple[Section, ...]:
    """Parse DSC text into sections (``path`` is only used in error locations)."""
    return _Parser(text, path, "dsc").parse()


def parse_fdf(text: str, path: str) -> tuple[Section, ...]:
    """Parse FDF text into sections (``path`` is only used in error locations)."""
    return _Parser(text, path, "fdf").parse()
