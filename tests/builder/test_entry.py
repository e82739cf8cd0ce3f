"""ovmfgen.builder.entry: invoke build's fast path, answered from the stamp."""

from __future__ import annotations

import json

import pytest

from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import manifest as build_manifest
from ovmfgen.builder import publish as build_publish
from ovmfgen.builder.plan import plan
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.paths import Layout


def test_the_stamped_noop_answers_without_resolving(layout: Layout, fake_env: dict,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`invoke build`'s entry: once the full path found the build up to date, the same call is answered from
    the stamp (nothing loaded); a damaged artifact or an edited platform goes back to the full path."""
    from ovmfgen.builder import entry as build_entry
    from ovmfgen.platform import resolve as platform_resolve

    p = plan(resolve(make_request("xen-pvh"), layout))
    files = {"OVMF.fd": b"fd", "ovmf.elf": b"elf", "build.log": b"log"}
    manifest = build_manifest.make_manifest(p, files, {}, None, 1.0)
    build_publish.publish({**files, "manifest.json": json.dumps(manifest).encode()}, p.dist)
    assert build_entry.build_command(layout, platform="xen-pvh") == p.dist   # full path: up to date, stamped
    resolved_calls = []
    real_resolve = platform_resolve.resolve
    monkeypatch.setattr(platform_resolve, "resolve", lambda *a, **k: resolved_calls.append(a) or real_resolve(*a, **k))
    assert build_entry.build_command(layout, platform="xen-pvh") == p.dist
    assert resolved_calls == []                                             # answered by the stamp
    (p.dist / "ovmf.elf").write_bytes(b"ELF")
    with pytest.raises(AssertionError, match="must not build"):
        monkeypatch.setattr(build_cmd, "run_stuart", lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not build")))
        monkeypatch.setattr(build_cmd, "validate", lambda *a, **k: None)
        build_entry.build_command(layout, platform="xen-pvh")
    assert len(resolved_calls) == 1                                         # the damaged artifact: full path
