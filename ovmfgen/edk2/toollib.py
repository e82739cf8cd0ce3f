"""Adapters to edk2toollib (edk2-pytool-library): its DSC/FDF parsers with ovmfgen's fixes, where paths
resolve (a workspace in front of the edk2 tree), macro expansion and ``!if`` evaluation.

edk2toollib is slow to import (~0.3 s): every import of it here is function-local, so that the
no-op build and the stamped render never pay for it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """Where paths resolve: the platform's overrides first, then the edk2 tree."""

    roots: tuple[Path, ...]

    def find(self, rel: str) -> Path | None:
        """The file ``rel`` (workspace-relative, as written in a DSC/FDF) or None."""
        if not rel or "$(" in rel:
            return None
        for root in self.roots:
            candidate = root / rel
            if candidate.is_file():
                return candidate
        return None


class _IfdefElseFix:
    """Mixin fixing edk2toollib 0.21's ``!ifdef``/``!ifndef`` ... ``!else``.

    Its ProcessConditional pushes an ifdef's result without marking the block as already taken,
    so the ``!else`` branch is active too and its DEFINEs win (``-D FD_SIZE_4MB`` still yields
    FD_SIZE_IN_KB = 2048 on OvmfXen.dsc). Decide ifdef/ifndef here and record "taken" properly.
    """

    def ProcessConditional(self, text: str) -> bool:  # noqa: N802 - edk2toollib's name
        tokens = text.split()
        if len(tokens) == 2 and tokens[0].lower() in ("!ifdef", "!ifndef"):
            defined = tokens[1] != self._MacroNotDefinedValue  # type: ignore[attr-defined]
            value = defined if tokens[0].lower() == "!ifdef" else not defined
            self.PushConditional(value, value)  # type: ignore[attr-defined]
            return True
        return super().ProcessConditional(text)  # type: ignore[misc]


class _InputVarsWin:
    """Mixin giving the build's macros (``-D``, TARGET, ARCH, TOOL_CHAIN_TAG) precedence over the DSC's.

    EDK2's build lets a command-line ``-D NAME=VALUE`` override the DSC's ``DEFINE NAME = ...`` (that is how
    ``-D SMM_REQUIRE=TRUE`` turns SMM on in OvmfPkgX64.dsc); edk2toollib 0.21 looks at its LocalVars first.
    """

    def _FindReplacementForToken(self, token: str, replace_if_not_found: bool = False) -> str | None:  # noqa: N802
        value = self.InputVars.get(token)  # type: ignore[attr-defined]
        if value is None:
            return super()._FindReplacementForToken(token, replace_if_not_found)  # type: ignore[misc]
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = str(value)
        return text.upper() if text.upper() in ("TRUE", "FALSE") else text


def dsc_parser(input_vars_win: bool = False) -> object:
    """An edk2toollib DscParser with ovmfgen's conditional fix; ``input_vars_win``: its input vars (the
    build's ``-D``) override the DSC's DEFINEs, as in EDK2's build."""
    # Function-local: edk2toollib is slow to import; `invoke build`'s no-op path never needs it.
    from edk2toollib.uefi.edk2.parsers.dsc_parser import DscParser

    class _Dsc(_IfdefElseFix, DscParser):
        pass

    class _DscBuild(_InputVarsWin, _IfdefElseFix, DscParser):
        pass

    return _DscBuild() if input_vars_win else _Dsc()


def fdf_parser() -> object:
    """An edk2toollib FdfParser with ovmfgen's conditional fix."""
    # Function-local: edk2toollib is slow to import; `invoke build`'s no-op path never needs it.
    from edk2toollib.uefi.edk2.parsers.fdf_parser import FdfParser

    class _Fdf(_IfdefElseFix, FdfParser):
        pass

    return _Fdf()


def edk2_path(workspace: Path, packages: list[Path]) -> object:
    """edk2toollib's Edk2Path over ``workspace`` and ``packages`` (it globs every package path for DEC files).

    A checkout may change under that walk (a ``git gc`` started by the user's last commit removes loose
    object directories): the walk is tried again once, then the tree is named in one line.
    """
    from edk2toollib.uefi.edk2.path_utilities import Edk2Path

    from ovmfgen.errors import OvmfgenError

    for attempt in (1, 2):
        try:
            return Edk2Path(str(workspace), [str(p) for p in packages])
        except OSError as exc:
            if attempt == 2:
                raise OvmfgenError(f"the edk2 tree changed while ovmfgen read it ({exc.strerror}: "
                                   f"{exc.filename}); run again when nothing else writes to it") from None
    raise AssertionError("unreachable")


def quiet_edk2toollib() -> None:
    """Silence edk2toollib's per-line warnings while ovmfgen parses."""
    # edk2toollib logs every unresolved macro at WARNING; our own messages say what matters.
    logging.getLogger("edk2toollib").setLevel(logging.CRITICAL)
    for name in ("DscParser", "FdfParser", "InfParser", "DecParser", "Edk2Path"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def expand_macros(text: str, macros: dict[str, str]) -> str:
    """``$(NAME)`` references in ``text`` replaced from ``macros`` (nested ones too; unknown ones kept)."""
    for _ in range(8):
        new = re.sub(r"\$\((\w+)\)", lambda m: macros.get(m.group(1), m.group(0)), text)
        if new == text:
            break
        text = new
    return text


def conditional_evaluator(macros: dict[str, str]) -> object:
    """A ``(directive, expr) -> bool`` function deciding ``!if``/``!ifdef``/``!ifndef`` with edk2toollib."""
    # Function-local: edk2toollib is slow to import; `invoke build`'s no-op path never needs it.
    from edk2toollib.uefi.edk2.parsers.base_parser import HashFileParser

    probe = HashFileParser("ovmfgen")
    probe.LocalVars = dict(macros)

    def evaluate(directive: str, expr: str) -> bool:
        if directive in ("ifdef", "ifndef"):
            name = expr.strip()
            name = name[2:-1] if name.startswith("$(") and name.endswith(")") else name
            defined = name in macros
            return defined if directive == "ifdef" else not defined
        try:
            return bool(probe.EvaluateConditional(f"!if {expr}"))
        except Exception:  # noqa: BLE001 - an expression edk2toollib cannot evaluate
            return False

    return evaluate
