"""ovmfgen tasks. A thin shell: each task parses its options and calls the package.

`invoke --list` shows them; `python -m ovmfgen ...` offers the same without invoke.
"""

from invoke import task

from ovmfgen.cli import guard, required


@task(help={"edk2": "the edk2 tree to set up: a known tag (default edk2-stable202502, or edk2-stable202605), "
                   "or with OVMFGEN_EDK2 the tag that checkout is", "force": "refetch, re-unpack and rebuild"})
def setup(c, edk2=None, force=False):
    """Make this machine ready: apt packages, an edk2 tree, its BaseTools (idempotent, cached)."""
    from ovmfgen.host import setup as stage

    guard(stage.setup_all, force=force, edk2=edk2)


@task(help={"k": "only tests matching this pytest -k expression", "fast": "skip integration tests"})
def test(c, k=None, fast=False):
    """Run the test suite (unit + integration: real edk2 build and QEMU boot)."""
    from ovmfgen.host import testrun

    guard(testrun.run_tests, keyword=k, fast=fast)


# A task parameter without a default is positional in invoke, and a positional eats the next word,
# `--help` included: `platform` defaults to xen-pvh so that `invoke build --help` shows the help.
@task(help={"platform": "platform name (platforms/NAME.yaml)", "output": "output directory",
            "edk2": "edk2 tree: a checkout's path or a tag such as edk2-stable202605 (default: the default tree)"})
def render(c, platform="xen-pvh", output=None, edk2=None):
    """Render platforms/PLATFORM.yaml into XenOvmf.dsc/.fdf (atomic, write only if changed)."""
    from ovmfgen.platform import command as stage

    guard(stage.render_command, platform, output, edk2=edk2)


@task(name="import", help={"dsc": "upstream .dsc", "fdf": "upstream .fdf", "output": "YAML to write"})
def import_platform(c, dsc=None, fdf=None, output=None):
    """Turn an existing edk2 platform (.dsc + .fdf) into a platform YAML."""
    from ovmfgen.platform import importer

    guard(required, "import", dsc=dsc, fdf=fdf, output=output)
    guard(importer.import_command, dsc, fdf, output)


@task(help={"platform": "platform name", "against": "a DSC to compare with (default: the platform's upstream "
            "in the tree)", "fdf": "its FDF (default: beside the DSC)", "edk2": "edk2 tree: a checkout's path or a tag such as "
            "edk2-stable202605 (default: the default tree)"})
def diff(c, platform="xen-pvh", against=None, fdf=None, edk2=None):
    """Semantic diff of a platform against its upstream DSC/FDF; exit 1 on an unexplained delta."""
    from ovmfgen.platform import diff as stage

    guard(stage.diff_command, platform, against, fdf, edk2=edk2)


@task(name="rebase", help={
    "platform": "platform name (platforms/NAME.yaml) or a YAML path", "to": "the edk2 release to carry it to, or a checkout past its release (its path)",
    "from_": "the release it is written for (default: the newest its edk2 conditions name, else the default tree)",
    "dry_run": "print the YAML change instead of writing it",
})
def rebase_platform(c, platform="xen-pvh", to=None, from_=None, dry_run=False):
    """Carry a platform to a new edk2 release: upstream's change merged into the YAML as release conditions."""
    from ovmfgen.platform import rebase as stage

    guard(stage.rebase_command, platform, to, from_tag=from_, dry_run=dry_run)


@task(
    iterable=["define", "feature"],
    help={
        "platform": "platform name",
        "target": "DEBUG, RELEASE or NOOPT",
        "fd_size": "1M, 2M or 4M (default: the platform's fd_size feature)",
        "define": "NAME=VALUE passed to the build as -D (repeatable)",
        "feature": "NAME=VALUE feature override, e.g. debug_output=hypervisor-console (repeatable)",
        "jobs": "parallel build jobs",
        "force": "rebuild even when nothing changed",
        "clean": "remove the workspace first (a from-scratch build)",
        "ccache": "compile through ccache and cache LTO links (fast clean rebuilds)",
        "version_string": "PcdFirmwareVersionString override",
        "release_date": "PcdFirmwareReleaseDateString override",
        "edk2": "edk2 tree: a checkout's path or a tag such as edk2-stable202605 (default: the default tree)",
    },
)
def build(c, platform="xen-pvh", target="DEBUG", fd_size=None, define=None, feature=None, jobs=None, force=False,
          clean=False, ccache=False, version_string=None, release_date=None, edk2=None):
    """Render, build with stuart (offline), make the PVH ELF and publish to dist/PLATFORM/TARGET/."""
    from ovmfgen.builder import entry as stage

    guard(stage.build_command, platform=platform, target=target, fd_size=fd_size, defines=define or [],
          features=feature or [], jobs=jobs, force=force, ccache=ccache, version_string=version_string,
          release_date=release_date, clean=clean, edk2=edk2)


@task(help={"platform": "platform name", "target": "build target", "output": "results JSON (default bench/results.json)",
            "edk2": "edk2 tree: a checkout's path or a tag such as edk2-stable202605 (default: the default tree)",
            "xen": "instead: the real-Xen figure, ONE nested Xen boot of the guest set (warm cache; needs the "
                   "--feature debug_output=hypervisor-console build)",
            "mode": "with --xen: the guest set (core: PVH and HVM to the Shell and to Linux, the ud2 control; "
                    "or any --on xen mode; default core)",
            "noop": "only the no-op build and render against EDK2's own no-op (a few minutes)"})
def bench(c, platform="xen-pvh", target="DEBUG", output=None, edk2=None, xen=False, mode="core", noop=False):
    """Time ovmfgen against raw EDK2 `build` (no-op, clean, ccache; ~15 min), or with --xen a real Xen boot."""
    if xen:
        from ovmfgen.boot.xen import bench as xen_stage

        guard(xen_stage.bench_xen_command, platform=platform, target=target, output=output, edk2=edk2, mode=mode)
        return
    from ovmfgen.builder import bench as stage

    guard(stage.bench_command, platform=platform, target=target, output=output, edk2=edk2, noop_only=noop)


@task(help={"fd": "input FD", "output": "ELF to write", "base": "load address (default 0x100000)"})
def elf(c, fd=None, output=None, base="0x100000"):
    """Turn a built FD into a PVH-bootable ELF (header computed from the image)."""
    from ovmfgen import elf as stage

    guard(required, "elf", fd=fd, output=output)
    guard(stage.elf_command, fd, output, base)


@task(name="check-elf", help={"elf": "ELF image to check"})
def check_elf(c, elf=None):
    """Predict whether Xen's libxc/libelf and QEMU's PVH loader accept an ELF (one line per rule)."""
    from ovmfgen import elf as stage

    guard(required, "check-elf", elf=elf)
    guard(stage.check_elf_command, elf)


@task(iterable=["define", "feature"], help={
    "platform": "platform name", "target": "build target", "entry": "pvh, reset or both",
    "on": "qemu (default) or xen", "image": "firmware file (default: the ELF the build with these options published)",
    "edk2": "edk2 tree whose build to boot: a tag such as edk2-stable202605 (default: the default tree)",
    "fd_size": "the build's --fd-size", "feature": "the build's --feature NAME=VALUE (repeatable)",
    "define": "the build's --define NAME=VALUE (repeatable)",
    "mode": "with --on xen: pvh (default), hvm, os (PVH and HVM boot Linux from the OS disk), persist (what "
            "survives a restart), all (those and the ud2 control), core (all but persist), smp (os, until Linux "
            "reports the CPUs it brought up: for --vcpus), or sb (a Secure "
            "Boot build: unsigned image refused, signed image, shim and GRUB chains to Linux, the signed image "
            "booted twice: nothing lasts) in one Xen boot",
    "xen": "with --on xen: the Xen version, 4.17 (default; bookworm) or 4.20 (trixie); both under the host's QEMU 7.2",
    "disk": "with --on xen: boot this disk image (GPT/MBR) as the guest's PV disk and report how far it got",
    "vcpus": "with --on xen: each guest's vCPUs (1-128); the firmware must report finding them (or its max_cpus), Linux all",
})
def boot(c, platform="xen-pvh", target="DEBUG", entry="both", on="qemu", image=None, edk2=None, fd_size=None,
         feature=None, define=None, mode=None, xen=None, disk=None, vcpus=None):
    """Boot the published firmware in QEMU (PVH and/or reset-vector entry) or under real Xen."""
    from ovmfgen.boot import command as stage

    guard(stage.boot_command, entry=entry, on=on, image=image, mode=mode, xen_version=xen, disk=disk, vcpus=vcpus,
          platform=platform, target=target, edk2=edk2, fd_size=fd_size, features=feature or [], defines=define or [])


@task(help={
    "platform": "platform name", "output": "output directory (default dist/patches/PLATFORM/[TAG/]: the tree's tag unless it is the default tree)",
    "signoff": "'Name <email>' for Signed-off-by (default: git config user.name/user.email)",
    "check_each": "git am onto a pristine edk2 tree and build after every commit",
    "edk2": "the edk2 tree the series is for: a tag or a checkout's path (default: the checkout "
            "OVMFGEN_EDK2 names, else the newest release, edk2-stable202605)",
})
def patch(c, platform="xen-pvh", output=None, signoff=None, check_each=False, edk2=None):
    """The platform as an upstream edk2 patch series (PatchCheck.py-clean, Cc: from GetMaintainer.py)."""
    from ovmfgen.patch import command as stage

    guard(stage.patch_command, platform, output=output, signoff=signoff, check_each_commit=check_each, edk2=edk2)


@task(
    iterable=["match", "exclude", "cell", "merge"],
    help={
        "matrix": "matrix file (default nightly.yaml)", "jobs": "cells at once (processes)",
        "out": "history directory (default nightly/)", "list": "list the cells and exit",
        "match": "only cells whose name contains this (repeatable)", "exclude": "skip cells containing this",
        "cell": "exactly this cell (repeatable)", "quiet": "one status line per cell (full output in its log)",
        "date": "the night's date, YYYY-MM-DD (default today)", "keep": "nights of history to keep",
        "repro": "reproducibility cell: auto (rotation), none, or a cell name", "repro_only": "only that check",
        "install_root": "lay out firmware + firmware.json under DIR", "emit": "write a CI workflow: github or gitlab",
        "merge": "merge these nights/cells into the report instead of building (repeatable)",
        "threads": "build threads per cell (default: CPUs / jobs)",
        "edk2": "run the selected cells against this edk2 tree (a tag; renamed CELL-TAG)",
    },
)
def nightly(c, matrix=None, jobs=None, out=None, list=False, match=None, exclude=None, cell=None, quiet=False,
            date=None, keep=14, repro="auto", repro_only=False, install_root=None, emit=None, merge=None,
            threads=None, edk2=None):
    """Build the nightly matrix, check and boot each cell, write nightly/<date>/ and nightly/index.html."""
    from ovmfgen.nightly import command as stage

    guard(stage.nightly_command, matrix=matrix, jobs=jobs, out=out, match=match or [], exclude=exclude or [],
          cell=cell or [], list_cells=list, quiet=quiet, date=date, keep=keep, repro=repro, repro_only=repro_only,
          install_root=install_root, emit_kind=emit, merge_dirs=merge or [], threads=threads, edk2=edk2)
