"""``python -m ovmfgen TASK ...``: the same tasks as tasks.py, without needing the invoke CLI."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run an invoke task from tasks.py through invoke's own program object."""
    from invoke import Collection, Program

    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    from ovmfgen.errors import OvmfgenError

    try:
        import tasks  # noqa: E402  (tasks.py lives at the repository root)
    except OvmfgenError as exc:  # a data file read at import (ovmfgen/edk2/releases.yaml): one line
        print(str(exc), file=sys.stderr)
        return 1

    program = Program(namespace=Collection.from_module(tasks), name="ovmfgen", binary="python -m ovmfgen")
    program.run(["ovmfgen", *(sys.argv[1:] if argv is None else argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
