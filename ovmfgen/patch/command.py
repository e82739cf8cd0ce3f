"""``invoke patch``: the platform as an upstream edk2 patch series, checked the way edk2 checks patches.

Upstream edk2 takes a new platform as a reviewed patch series. For a Xen PVH platform (xen-pvh) this
module writes, against an edk2 tree (``--edk2 TAG`` or ``--edk2 PATH``; default: the checkout ``$OVMFGEN_EDK2``
names, else the newest release, ``releases.NEWEST_TAG``):

1. ``OvmfPkg: Add PVH ELF header for the XenOvmf flash image``: ``OvmfPkg/XenOvmfElfHeader.fdf.inc``,
   one ``DATA`` block per supported FD size (``!if $(FD_SIZE_IN_KB) == ...``) holding
   ``ovmfgen.elf.pvh_header`` for that size. Upstream's build has no post-processor, so in the tree
   the header must be inside the FD the build writes;
2. ``OvmfPkg: Add XenOvmf platform for Xen PVH guests``: ``XenOvmf.dsc``/``.fdf`` rendered from the
   platform, transformed for in-tree use (``in_tree_platform``: every reserved header region, which
   ovmfgen's own build leaves erased, ``!include``s the header file instead);
3. ``OvmfPkg: Add XenOvmf to PlatformCI and Maintainers.txt``: a stuart PlatformCI script
   derived from the tree's ``XenBuild.py``, a job in the tree's Ubuntu Platform CI pipeline and the
   ``F:`` lines in the Xen section of ``Maintainers.txt``.

Conventions (edk2's): CRLF files with SPDX license headers, subjects of at most 75 characters,
bodies that say why, ``Cc:`` lines from ``BaseTools/Scripts/GetMaintainer.py`` run on each commit,
``Signed-off-by:`` from ``--signoff`` or ``git config user.name/user.email``, a cover letter
naming the upstream tag and commit, and the diff options of edk2's ``SetupGit.py``. Every patch is
checked with the tree's ``BaseTools/Scripts/PatchCheck.py`` (as files, and as commits, which adds
edk2's one-package-per-commit rule) before anything is published.

Determinism: a release's tree has no ``.git``, so the base commit is a snapshot of the tree, built once
into a bare repository in the cache (``<cache>/patch/``, never inside the tree); a checkout's base is
its own commit (``git.checkout_commit``: refused with uncommitted changes), named by its ``git describe``.
The commits are made with plumbing (no checkout), with author/committer dates derived from the edk2
release date (a checkout's: its commit date) and the user's git configuration shut out;
``git format-patch --zero-commit --no-signature`` keeps commit hashes and the git version out of the files.
The same inputs give byte-identical patch files, so a re-roll shows only real changes.

``--check-each`` then does what a maintainer would: ``git am`` the published files onto a pristine
clone of the base and run plain upstream ``build`` after every commit (``check_each``: one
workspace, incremental builds, with edksetup.sh's PYTHONHASHSEED so they are incremental), checking
each built ``OVMF.fd`` with ``elf.check_elf``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ovmfgen.edk2.releases import NEWEST_TAG, path_part
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.patch.series import parse_signoff
from ovmfgen.patch.verify import verify_series
from ovmfgen.patch.write import Generated, generate
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.ui import say


def patch_command(platform: str, output: str | None = None, signoff: str | None = None,
                  check_each_commit: bool = False, target: str = "DEBUG", jobs: int | None = None,
                  edk2: str | None = None) -> Generated:
    """``invoke patch``: write the series to ``output`` (dist/patches/PLATFORM/[TAG/]), PatchCheck it, and with
    ``check_each_commit`` apply it to a pristine tree and build after every commit. ``edk2`` (a tag) is the
    tree the series is for: a tag or a checkout's path; by default the checkout ``$OVMFGEN_EDK2`` names, else
    the newest known release, since a series must apply to the current upstream tree."""
    signer = parse_signoff(signoff) if signoff is not None else None
    if not edk2 and not os.environ.get("OVMFGEN_EDK2"):
        edk2 = NEWEST_TAG
    r = resolve(make_request(platform, edk2=edk2 or None))
    gen = generate(r, Path(output) if output else None, signer)
    size = sum(p.stat().st_size for p in (gen.cover, *gen.patches))
    say(f"{display_path(gen.out_dir)}: cover letter + {len(gen.patches)} patches ({size} bytes), "
        f"based on {gen.series.tag} ({gen.series.upstream_commit[:12]})")
    for p in gen.patches:
        say(f"  {p.name}")
    files = [c for c in gen.checks if c.name.endswith(".patch")]
    say(f"PatchCheck.py: {sum(c.clean for c in files)}/{len(files)} patch files pass with no warning; "
        f"the commits pass too (one package per commit)")
    if check_each_commit:
        work = r.layout.build_root / "patch-check" / path_part(r.tree.tag) / gen.series.platform
        say(f"applying with git am to a pristine {gen.series.tag} in {display_path(work / 'edk2')} and building "
            "after each commit")
        ver = verify_series(gen.out_dir, work, r, each=True, target=target, jobs=jobs, progress=say)
        if not ver.ok:
            failed = [s for s in ver.steps if not s.ok]
            raise OvmfgenError(f"the tree does not build after commit {failed[0].index} of {len(ver.commits)} "
                               f"({failed[0].subject}): {failed[0].detail}")
    return gen
