"""Fixtures the platform tests share (defined in tests/helpers.py)."""

from helpers import fake_env, layout  # noqa: F401 (fixtures)
