"""The nightly's JSON records, as types: a cell's ``result.json``, the reproducibility record, ``summary.json``.

They are written by the cell process and read back from disk (a night's summary, a CI job's
artifacts), so readers still check what they get (``.get`` with a default): the types say what a
well-formed record holds; ``total=False`` marks what a failed or crashed cell may lack.
"""

from __future__ import annotations

from typing import Any, TypedDict


class StepRecord(TypedDict, total=False):
    """One step of a cell (build, check-elf, boot-pvh, boot-reset, boot-shell, boot-xen)."""

    name: str
    status: str                     # passed | failed
    seconds: float
    detail: str
    noop: bool                      # build: the inputs were already published
    build_seconds: float | None     # build: how long the edk2 build that made the firmware took
    rules: int                      # check-elf: loader rules checked
    failed_rules: list[str]         # check-elf
    verdict: str                    # boots


class XenGuestRecord(TypedDict, total=False):
    """One guest of a cell's nested Xen boot (its entry in the run's xen-boot.json)."""

    name: str                       # ovmfgen-<mode>-<payload>[-<variant>]
    mode: str                       # pvh | hvm
    payload: str                    # shell | ud2 | ...
    variant: str                    # e.g. "4M": the guest boots that FD size's build
    verdict: str
    expected: str
    ok: bool                        # the verdict is the expected one
    detail: str
    seconds_to_shell: float | None  # dom0's clock, from xl create
    wall_seconds: float | None      # the host's clock, the guest's whole turn
    attempts: int
    log: str                        # its part of Xen's serial log, relative to the night
    secure_boot: str                # what the logs say about Secure Boot ("Secure Boot on (...)"), when they say it
    why_not: str                    # why a guest is not ok although its verdict is the expected one (xen-boot.json's)


class BootRecord(TypedDict, total=False):
    """One boot of a cell's firmware (by kind: pvh, reset, shell, xen)."""

    verdict: str
    ok: bool
    seconds: float | None
    log: str | None                 # relative to the night (xen: the run's xen-boot.json)
    debug_log: str                  # shell: the firmware's debug console
    detail: str
    xen: str | None                 # xen: the hypervisor's package version
    runs: list[dict[str, Any]]      # xen: the QEMU runs (a retry is a second run)
    guests: list[XenGuestRecord]    # xen: every guest's verdict


class FvUsage(TypedDict, total=False):
    """How full one firmware volume is (from the build's manifest)."""

    size: int
    used: int | None
    free: int | None
    percent_full: float


class CellRecord(TypedDict, total=False):
    """A cell's ``result.json`` and its entry in ``summary.json``; paths are relative to the night."""

    name: str
    cell: dict[str, Any]            # the Cell as JSON (Cell.to_json)
    platform: str
    target: str
    edk2: str | None
    fd_size: str | None
    features: list[str]
    description: str
    artifacts: dict[str, str]       # file name -> path
    boot: dict[str, BootRecord]
    steps: list[StepRecord]
    dist: str
    manifest: dict[str, Any]        # the build manifest's inputs and identity (build/manifest.py)
    sizes: dict[str, int | None]
    fv_usage: dict[str, FvUsage]
    status: str                     # passed | failed
    failed_steps: list[str]
    error: str | None
    seconds: float
    log: str


class ModuleDifference(TypedDict):
    """An EFI module that differs between the two reproducibility builds, and why."""

    module: str
    path: str
    cause: str                      # pe-conversion | compiled | missing | unknown
    embeds: list[str]               # which build's paths the image holds: "workspace", "cache" (repro.embedded_paths)


class Comparison(TypedDict):
    """Two builds of one variant compared (repro.compare_build_outputs)."""

    identical: bool
    outputs: dict[str, bool]        # published file -> same bytes?
    fvs: list[str]
    modules: list[ModuleDifference]
    modules_total: int
    modules_differing: int
    ffs_differing: int
    files: list[str]


class ReproRecord(TypedDict, total=False):
    """The reproducibility check of one cell (``repro/result.json``; ``repro`` in summary.json)."""

    cell: str | None
    status: str                     # identical | differs | error | failed
    builds: list[dict[str, Any]]    # workspace, seconds
    detail: str
    error: str
    seconds: float
    log: str
    identical: bool
    outputs: dict[str, bool]
    fvs: list[str]
    modules: list[ModuleDifference]
    modules_total: int
    modules_differing: int
    ffs_differing: int
    files: list[str]


class Totals(TypedDict):
    """A night's cells counted by status."""

    cells: int
    passed: int
    failed: int


class Summary(TypedDict, total=False):
    """``<night>/summary.json`` (history.make_summary; ``merged_from`` when --merge made it)."""

    schema: int
    date: str
    matrix: str
    jobs: int
    cpus: int | None
    seconds: float
    edk2: dict[str, Any] | None     # the tree's identity (from the first cell's manifest)
    cells: list[CellRecord]
    repro: ReproRecord | None
    repro_required: bool
    totals: Totals
    merged_from: int
