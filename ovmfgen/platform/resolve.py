"""Resolve once: "this platform, on this edk2 tree, with these options, in this layout" as one frozen object.

``resolve(request, layout)`` locates the tree, loads the platform for it (features and release
conditions decided), checks the request's features and defines against what the platform reads,
renders the DSC/FDF, applies the override entries once (each file with the entry it came from) and
names the output paths. validate, plan, diff, rebase, patch, boot, the Xen harness and the nightly
take the ``Resolved`` it returns; none of them re-loads, re-renders, applies an override or computes a
dist or workspace path itself.

Where things go (the variant rule)
----------------------------------
* Workspace (EDK2's WORKSPACE): ``build/[<tree>/]<platform>[.<variant>]/``: the rendered
  ``<package>/<name>.dsc``/``.fdf``, the files the overrides make (they shadow the tree's, which is on
  PACKAGES_PATH and never written to), ``Conf/`` and ``Build/``. One workspace per variant keeps EDK2's
  incremental build correct and cheap when switching between variants.
* Artifacts: ``dist/<platform>/[<tree>/]<target>[-<variant>]/``: ``OVMF.fd``, ``ovmf.elf``,
  ``build.log``, ``manifest.json`` (and what the boots write beside them).
* ``<tree>`` is the tree's tag, left out for the default tree (its paths are as they were before there
  were several trees).
* The variant suffix is empty for the platform's default FD size and features; otherwise it joins with
  ``-``: the FD size when it is not the default (``4M``); each feature set to a value other than the
  platform's default, by feature name, as its tag (``hvcon``, ``debugcon``, ``acpitimer``,
  ``lapictimer``, ``nonet``/``net``, ``noshell``/``shell``, ``tpm2``/``notpm``; any other as ``<name>-<value>``,
  non-alphanumerics dropped); ``D`` and the first 8 hex digits of the sha256 of the sorted extra
  ``-D NAME=VALUE`` pairs. So ``--fd-size 4M --feature debug_output=hypervisor-console`` publishes to
  ``dist/xen-pvh/DEBUG-4M-hvcon/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ovmfgen.edk2.conventions import FD_SIZE_DEFINE, fd_size_define, fd_size_label
from ovmfgen.edk2.modules import module_companions
from ovmfgen.edk2.releases import path_part
from ovmfgen.edk2.tree import Edk2Tree
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import ELF_NAME, Layout
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.located import load_for_tree
from ovmfgen.platform.model import FEATURES, Platform
from ovmfgen.platform.overrides import Carried, OverrideStep, check_overrides, override_files, override_steps
from ovmfgen.platform.reads import check_defines, check_features, names_read, refuse_feature_defines
from ovmfgen.platform.render import Rendered, render
from ovmfgen.request import Request

FEATURE_TAGS = {
    ("debug_output", "hypervisor-console"): "hvcon",
    ("debug_output", "debugcon"): "debugcon",
    ("timer", "acpi"): "acpitimer",
    ("timer", "lapic"): "lapictimer",
    ("network", "false"): "nonet",
    ("network", "true"): "net",
    ("shell", "false"): "noshell",
    ("shell", "true"): "shell",
    ("tpm", "tpm2"): "tpm2",
    ("tpm", "off"): "notpm",
}


def _feature_tag(name: str, value: str) -> str:
    tag = FEATURE_TAGS.get((name, value))
    if tag:
        return tag
    return re.sub(r"[^A-Za-z0-9]", "", name) + "-" + re.sub(r"[^A-Za-z0-9]", "", value)


def variant_suffix(default_features: Mapping[str, str], fd_size: int, features: Mapping[str, str],
                   defines: Mapping[str, str]) -> str:
    """The variant part of the dist/workspace names ("" for the default build; see the module doc)."""
    parts: list[str] = []
    if fd_size != int(default_features.get("fd_size", FEATURES["fd_size"][0])):
        parts.append(fd_size_label(fd_size))
    for name, value in sorted(features.items()):
        if name == "fd_size" or default_features.get(name) == value:
            continue
        parts.append(_feature_tag(name, value))
    extra = sorted((k, v) for k, v in defines.items() if not FD_SIZE_DEFINE.match(k))
    if extra:
        text = " ".join(f"{k}={v}" for k, v in extra)
        parts.append("D" + hashlib.sha256(text.encode()).hexdigest()[:8])
    return "-".join(parts)


@dataclass(frozen=True)
class Resolved:
    """One platform on one tree with one request's options, in one layout: everything a stage needs."""

    request: Request
    tree: Edk2Tree
    platform: Platform                       # loaded for ``tree`` with the request's features
    layout: Layout
    rendered: Rendered                       # the one render: validated, hashed, written, diffed
    steps: tuple[OverrideStep, ...]          # the override entries, applied once, in order
    override_files: dict[str, bytes]         # edk2 path -> the bytes the overrides make of it
    suffix: str                              # the variant ("" for the default build)
    workspace: Path
    dist: Path
    # The one-release override entries carried to this later tree: still applied, or left out and why.
    carried: tuple[Carried, ...] = ()

    @cached_property
    def companions(self) -> dict[str, bytes]:
        """The tree's files an overridden source needs beside it in a build workspace (edk2/modules.py);
        read on first use (a build needs them, a render or a boot does not)."""
        return module_companions(self.override_files, self.tree.root)

    @property
    def fd_size(self) -> int:
        """The FD size in MiB."""
        return int(self.platform.feature("fd_size"))

    @property
    def features(self) -> dict[str, str]:
        """The features in effect."""
        return dict(self.platform.features)

    @property
    def defines(self) -> dict[str, str]:
        """Every ``-D`` the build passes: the FD size's and the request's."""
        return {fd_size_define(self.fd_size): "TRUE", **dict(self.request.defines)}

    @property
    def overrides_root(self) -> Path:
        """``overrides/<platform>/`` in the layout."""
        return self.layout.overrides_for(self.platform.name)

    @property
    def rendered_files(self) -> dict[str, bytes]:
        """Workspace path -> bytes of the rendered DSC/FDF (``OvmfPkg/XenOvmf.dsc``...)."""
        return {f"{self.platform.package_dir}/{name}": data for name, data in self.rendered.files().items()}

    @property
    def overrides(self) -> dict[str, bytes]:
        """Every file the workspace gets besides the rendered ones: the overrides' and their companions."""
        return {**self.override_files, **self.companions}

    @property
    def label(self) -> str:
        """``xen-pvh DEBUG (4M-hvcon) [edk2-stable202605]``: how progress lines name this build."""
        tree = path_part(self.tree.tag)
        return (f"{self.platform.name} {self.request.target}" + (f" ({self.suffix})" if self.suffix else "")
                + (f" [{tree}]" if tree else ""))

    def published(self, name: str = ELF_NAME) -> Path:
        """The artifact ``name`` this build published (one clear line naming the build to run if it did not)."""
        path = self.dist / name
        if not path.is_file():
            raise OvmfgenError(f"no published firmware at {display_path(path)}: "
                               f"run `invoke build {' '.join(self.request.options())}` first")
        return path

    def source_map(self) -> dict[str, Path]:
        """Workspace-relative path -> the file under overrides/ a compile error there belongs to (whole-file
        overrides only: a patched file's lines are not the diff's, so its errors stay at the workspace copy)."""
        out: dict[str, Path] = {}
        for step in self.steps:
            source = self.overrides_root / step.source
            if not step.override.patch:
                out[step.override.path] = source
                continue
            for rel, _ in step.files:
                out.pop(rel, None)
        return out


def resolve(request: Request, layout: Layout | None = None, tree: Edk2Tree | None = None,
            quiet: bool = False) -> Resolved:
    """Resolve ``request`` in ``layout`` (default: the checkout's, roots from the environment).

    ``tree``: the edk2 tree to resolve on instead of the one ``request.edk2`` locates (the nightly's
    check of a checkout cell, on the checkout as git names it before the cell sets it up); ``quiet`` as
    for ``resolved``.
    Errors are one located line: the platform file's own first (even when the tree is not set up),
    then the tree's, then an unread ``--feature``/``--define``.
    """
    lay = layout or Layout()
    overrides = dict(request.features)
    if request.fd_size is not None:
        overrides["fd_size"] = str(request.fd_size)
    if tree is None:
        tree, platform = load_for_tree(request.platform, lay.platforms_dir, request.edk2,
                                       feature_overrides=overrides)
    else:
        platform = load_platform(request.platform, lay.platforms_dir, feature_overrides=overrides, edk2=tree.tag)
    check_features(platform.name, dict(request.features), platform.features_read)
    return resolved(platform, tree, lay, request, quiet)


def resolved(platform: Platform, tree: Edk2Tree, layout: Layout | None = None,
             request: Request | None = None, quiet: bool = False) -> Resolved:
    """A platform already loaded for ``tree`` (a rebase probe, a test's platform), resolved in ``layout``.

    ``request`` gives the target and defines (default: a DEBUG build of the platform's own features);
    its defines are checked against what the rendered files and their ``!include``s read. ``quiet``: the
    carried overrides left out are in ``Resolved.carried`` only (a caller that shows them itself).
    """
    lay = layout or Layout()
    req = request or Request(platform=platform.name, edk2=tree.tag)
    rendered = render(platform)
    check_overrides(platform, lay.overrides_for(platform.name), tree.tag)
    carried: list[Carried] = []
    steps = override_steps(platform, lay.overrides_for(platform.name), tree.tag, tree.root, carried, quiet)
    files = override_files(steps)
    if req.defines:
        refuse_feature_defines(dict(req.defines), platform.feature_values())
        rendered_files = {f"{platform.package_dir}/{n}": d for n, d in rendered.files().items()}
        check_defines(platform.name, dict(req.defines), names_read(rendered_files, _included(files, tree.root)))
    fd_size = int(platform.feature("fd_size"))
    suffix = variant_suffix(dict(platform.default_features), fd_size, dict(platform.features), dict(req.defines))
    tree_part = path_part(tree.tag)
    return Resolved(
        request=req, tree=tree, platform=platform, layout=lay, rendered=rendered, steps=steps,
        override_files=files, suffix=suffix,
        workspace=lay.workspace_dir(platform.name, tree_part, suffix),
        dist=lay.dist_dir(platform.name, tree_part, req.target, suffix), carried=tuple(carried),
    )


def _included(overrides: Mapping[str, bytes], edk2_root: Path) -> Callable[[str], bytes | None]:
    """How the build finds an ``!include``d file: the platform's overrides first, then the edk2 tree."""
    def read(rel: str) -> bytes | None:
        if rel in overrides:
            return overrides[rel]
        try:
            return (edk2_root / rel).read_bytes()
        except OSError:
            return None
    return read

