"""ovmfgen: generate, build and ship OVMF firmware for Xen guests.

Pipeline, one module per stage: load -> model -> validate -> render -> build -> elf -> patch -> nightly.
"""

__version__ = "0.1.0"
