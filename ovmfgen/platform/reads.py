"""Which ``-D`` names and features a platform reads, so a switch nothing reads is an error rather than ignored.

edk2's ``build -D NAME=VALUE`` accepts any name: one that no DSC, FDF or ``!include`` of the
platform reads changes nothing and the build still succeeds (packagers pass TPM switches to OvmfXen,
which has no TPM support, and ship something else than they asked for). A name is read where a file
expands it (``$(NAME)``) or tests it (``!ifdef NAME``, ``!ifndef NAME``). The files are the rendered
DSC/FDF and every file they ``!include``, transitively, taken from the platform's overrides first and
then from the edk2 tree.

A feature (``--feature NAME=VALUE``) is read where the platform YAML decides a ``when: {NAME: ...}``
block or fills a ``${var}`` that comes from it, in the load for the requested features and tree
(``Platform.features_read``): a feature only a skipped block would consult changes nothing either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from ovmfgen.errors import Location, OvmfgenError

_MACRO = re.compile(r"\$\((\w+)\)")
_IFDEF = re.compile(r"^\s*!ifn?def\s+(?:\$\()?(\w+)\)?", re.MULTILINE | re.IGNORECASE)
_INCLUDE = re.compile(r"^\s*!include\s+(\S+)", re.MULTILINE | re.IGNORECASE)
_COMMENT = re.compile(r"#.*$", re.MULTILINE)


def names_read(files: Mapping[str, bytes], read_file: Callable[[str], bytes | None]) -> frozenset[str]:
    """Every macro name ``files`` (workspace path -> bytes) and the files they ``!include`` read.

    ``read_file`` returns an included file's bytes by its workspace-relative path (None when no such
    file exists; the build reports that one itself).
    """
    names: set[str] = set()
    seen = set(files)
    queue = sorted(files.items())
    while queue:
        _rel, data = queue.pop()
        text = _COMMENT.sub("", data.decode("utf-8", errors="replace"))
        names.update(_MACRO.findall(text))
        names.update(_IFDEF.findall(text))
        for inc in _INCLUDE.findall(text):
            # Included paths are workspace-relative; $(WORKSPACE)/ says so explicitly.
            rel = inc.replace("\\", "/").removeprefix("$(WORKSPACE)/")
            if rel in seen or "$(" in rel:
                continue
            seen.add(rel)
            included = read_file(rel)
            if included is not None:
                queue.append((rel, included))
    return frozenset(names)


class BadFeatureValue(OvmfgenError):
    """A ``--feature`` value the platform does not take (a Secure Boot key set it does not define, a value
    another switch contradicts); ``name`` lets a caller that knows where the switch was written
    (nightly.yaml) restate the message there."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class UnreadSwitch(OvmfgenError):
    """A ``--define``/``--feature`` nothing reads; ``kind``, ``name`` and ``detail`` (the message after the
    switch) let a caller that knows where the switch was written (nightly.yaml) restate it there."""

    def __init__(self, flag: str, kind: str, name: str, value: str, detail: str, location: Location | None) -> None:
        super().__init__(f"{flag} {name}={value}: {detail}", location)
        self.kind, self.name, self.value, self.detail = kind, name, value, detail


#: ``-D`` switches other builds of OvmfXen take (Fedora's, Alpine's) for what ovmfgen builds as a feature:
#: refused with the feature to write instead (SECURE_BOOT_ENABLE is read, by ShellDxe.fdf.inc, but alone it
#: only drops the Shell: the image would have no keys; TPM2_ENABLE is read by no file of OvmfXen).
FEATURE_DEFINES = {"SECURE_BOOT_ENABLE": "secure_boot", "TPM2_ENABLE": "tpm"}


def refuse_feature_defines(defines: Mapping[str, str], values: Mapping[str, str], flag: str = "--define",
                           where: Mapping[str, Location] | None = None) -> None:
    """Raise for a define that stands for a feature; ``values`` says, per feature, what it takes."""
    for name in sorted(defines):
        feature = FEATURE_DEFINES.get(name)
        if feature is not None:
            raise UnreadSwitch(flag, "define", name, defines[name], f"ovmfgen builds this as a feature: write "
                               f"--feature {feature}=VALUE instead ({values.get(feature, 'not available here')})",
                               (where or {}).get(name))


def check_defines(platform: str, defines: Mapping[str, str], read: frozenset[str], flag: str = "--define",
                  where: Mapping[str, Location] | None = None) -> None:
    """Raise for the first define (in name order) that no file of ``platform`` reads.

    ``where`` locates a define in the file it came from (nightly.yaml), when it came from one.
    """
    for name in sorted(defines):
        if name not in read:
            raise UnreadSwitch(flag, "define", name, defines[name], f"no file of platform {platform} reads {name} "
                               f"(it reads: {', '.join(sorted(read))})", (where or {}).get(name))


def check_features(platform: str, features: Mapping[str, str], read: Iterable[str], flag: str = "--feature",
                   where: Mapping[str, Location] | None = None) -> None:
    """Raise for the first feature (in name order) that no ``when:`` block or ``${var}`` of ``platform`` reads."""
    known = sorted(set(read))
    for name in sorted(features):
        if name not in known:
            raise UnreadSwitch(flag, "feature", name, features[name], f"nothing in platform {platform} reads feature "
                               f"{name} (it reads: {', '.join(known) or 'none'})", (where or {}).get(name))
