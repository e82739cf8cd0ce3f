"""ovmfgen.builder.child.linkcache with real LTO links by the system gcc, shaped as edk2's GCC5 DLINK writes them.

The "compiler" the cache is given is a counting wrapper around gcc, so each test sees whether a link
really ran or was restored from the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen.builder.child import linkcache

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("gcc-ar") is None,
                                reason="needs gcc and gcc-ar")

HELPER_C = "int helper(int x) { return x * 3; }\n"
ENTRY_C = "int helper(int);\nint _ModuleEntryPoint(void) { return helper(7); }\n"
TOOLS = "0" * 64


class Module:
    """A module's build directory: two LTO objects in two archives, the response file, a link script."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.calls = root / "calls.txt"
        self.gcc = root / "counting-gcc"
        self.gcc.write_text(f'#!/bin/sh\necho x >> "{self.calls}"\nexec gcc "$@"\n')
        self.gcc.chmod(0o755)
        self.sources = {"helper": HELPER_C, "entry": ENTRY_C}
        self.libs = root / "static_library_files.lst"
        self.output = root / "Module.dll"
        self.map = root / "Module.map"
        self.compile()

    def compile(self) -> None:
        """(Re)build the archives from ``self.sources`` and write the response file listing them.

        GCC names an LTO object's sections with a random suffix; in a real ``--ccache`` rebuild ccache
        hands back the very object it stored, and here ``-frandom-seed`` gives the same bytes.
        """
        for name, text in self.sources.items():
            (self.root / f"{name}.c").write_text(text)
            subprocess.run(["gcc", "-flto", "-Os", f"-frandom-seed={name}", "-c", "-o", str(self.root / f"{name}.o"),
                            str(self.root / f"{name}.c")], check=True)
            archive = self.root / f"{name}.lib"
            archive.unlink(missing_ok=True)
            subprocess.run(["gcc-ar", "cr", str(archive), str(self.root / f"{name}.o")], check=True)
        self.libs.write_text("".join(f"{self.root / name}.lib\n" for name in self.sources))

    def argv(self, *extra: str) -> list[str]:
        """The link as edk2's GCC5 X64 DLINK rule writes it (DLINK_FLAGS, the group, CC_FLAGS, DLINK2)."""
        return ["-o", str(self.output), "-nostdlib", "-Wl,-q,--gc-sections", "-z", "common-page-size=0x40",
                "-Wl,--entry,_ModuleEntryPoint", "-u", "_ModuleEntryPoint",
                f"-Wl,-Map,{self.map},--whole-archive", f"-Wl,--start-group,@{self.libs},--end-group",
                "-flto", "-Os", "-DSTRING=1", "-I", str(self.root), *extra]

    @property
    def gcc_runs(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0


def _link(cache: Path, mod: Module, argv: list[str], capfd: pytest.CaptureFixture[str] | None = None) -> int:
    old = os.getcwd()
    os.chdir(mod.root)
    try:
        return linkcache.link(str(cache), TOOLS, str(mod.gcc), argv)
    finally:
        os.chdir(old)


def _entries(cache: Path) -> list[Path]:
    return sorted(p for shard in cache.glob("??") for p in shard.iterdir())


def test_parse_an_edk2_link(tmp_path: Path) -> None:
    mod = Module(tmp_path / "m")
    script = tmp_path / "GccBase.lds"
    script.write_text("SECTIONS { }\n")
    cmd = linkcache.parse([*mod.argv(), f"-Wl,--script={script}", "-Wl,--defsym=PECOFF_HEADER_SIZE=0x228"])
    assert cmd.output == str(mod.output) and cmd.map_file == str(mod.map)
    # The response file and every archive it lists are inputs; so is the linker script.
    assert cmd.inputs == (str(mod.libs), f"{mod.root / 'helper'}.lib", f"{mod.root / 'entry'}.lib", str(script))


@pytest.mark.parametrize("extra", [["-lm"], ["-L/usr/lib"], ["-Wl,-lc"], ["-specs=x.specs"], ["@args.rsp"],
                                   ["-c"], [str(Path("missing.o"))]])
def test_parse_refuses_what_it_does_not_understand(tmp_path: Path, extra: list[str]) -> None:
    mod = Module(tmp_path / "m")
    with pytest.raises(linkcache.Uncacheable):
        linkcache.parse([*mod.argv(), *extra])
    with pytest.raises(linkcache.Uncacheable, match="-nostdlib"):
        linkcache.parse([a for a in mod.argv() if a != "-nostdlib"])
    with pytest.raises(linkcache.Uncacheable, match="no -o"):
        linkcache.parse(mod.argv()[2:])


def test_a_repeated_link_is_restored_not_run(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    mod = Module(tmp_path / "m")
    cache = tmp_path / "cache"
    argv = mod.argv("-Wl,--trace")  # the linker prints to stdout: a hit must replay it
    assert _link(cache, mod, argv) == 0
    first_out = capfdbinary.readouterr().out
    assert mod.gcc_runs == 1 and b"helper.lib" in first_out
    dll, link_map = mod.output.read_bytes(), mod.map.read_bytes()
    assert dll[:4] == b"\x7fELF" and b"_ModuleEntryPoint" in link_map
    assert len(_entries(cache)) == 1

    # A clean rebuild: the outputs are gone, the inputs rebuilt to the same bytes.
    mod.output.unlink()
    mod.map.unlink()
    mod.compile()
    assert _link(cache, mod, argv) == 0
    assert mod.gcc_runs == 1, "the link ran again instead of being restored"
    assert capfdbinary.readouterr().out == first_out
    assert mod.output.read_bytes() == dll and mod.map.read_bytes() == link_map
    assert os.access(mod.output, os.X_OK)
    assert len(_entries(cache)) == 1


def test_a_changed_input_or_command_links_again(tmp_path: Path) -> None:
    mod = Module(tmp_path / "m")
    cache = tmp_path / "cache"
    assert _link(cache, mod, mod.argv()) == 0
    dll = mod.output.read_bytes()

    mod.sources["helper"] = "int helper(int x) { return x * 5; }\n"
    mod.compile()
    assert _link(cache, mod, mod.argv()) == 0
    assert mod.gcc_runs == 2 and mod.output.read_bytes() != dll

    assert _link(cache, mod, mod.argv("-DOTHER")) == 0  # any change to the command line is a new key
    assert mod.gcc_runs == 3
    mod.libs.write_text(f"{mod.root / 'entry'}.lib\n{mod.root / 'helper'}.lib\n")  # same archives, other order
    assert _link(cache, mod, mod.argv()) == 0
    assert mod.gcc_runs == 4
    assert len(_entries(cache)) == 4


def test_uncacheable_and_failed_links_run_every_time_and_store_nothing(tmp_path: Path) -> None:
    mod = Module(tmp_path / "m")
    cache = tmp_path / "cache"
    for _ in range(2):
        assert _link(cache, mod, mod.argv("-L", str(mod.root))) == 0  # a library search: not cached
    assert mod.gcc_runs == 2 and _entries(cache) == []

    mod.sources["entry"] = "int missing(int);\nint _ModuleEntryPoint(void) { return missing(7); }\n"
    mod.compile()
    for _ in range(2):
        assert _link(cache, mod, mod.argv()) != 0
    assert mod.gcc_runs == 4 and _entries(cache) == []


def test_an_unusable_entry_falls_back_to_linking(tmp_path: Path) -> None:
    mod = Module(tmp_path / "m")
    cache = tmp_path / "cache"
    assert _link(cache, mod, mod.argv()) == 0
    (entry,) = _entries(cache)
    (entry / "out").unlink()
    mod.output.unlink()
    assert _link(cache, mod, mod.argv()) == 0
    assert mod.gcc_runs == 2 and mod.output.read_bytes()[:4] == b"\x7fELF"


def test_key_covers_tools_environment_and_directory(tmp_path: Path) -> None:
    mod = Module(tmp_path / "m")
    cmd = linkcache.parse(mod.argv())
    base = dict(TOOLS=TOOLS, real_gcc="/usr/bin/gcc", args=mod.argv(), cmd=cmd, cwd="/a", env={})

    def key(**change: object) -> str:
        kw = {**base, **change}
        return linkcache.cache_key(kw["TOOLS"], kw["real_gcc"], kw["args"], kw["cmd"], kw["cwd"], kw["env"])

    assert key() == key()
    others = [key(TOOLS="1" * 64), key(real_gcc="/opt/gcc"), key(cwd="/b"), key(env={"LIBRARY_PATH": "/x"}),
              key(env={"GCC_EXEC_PREFIX": ""})]
    assert len({key(), *others}) == 1 + len(others)
    assert key(env={"HOME": "/elsewhere"}) == key()  # what gcc does not read does not matter


def test_trim_removes_the_least_recently_used(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for i, name in enumerate(("aa" * 32, "bb" * 32, "cc" * 32)):
        entry = cache / name[:2] / name
        entry.mkdir(parents=True)
        (entry / "out").write_bytes(b"x" * 1000)
        os.utime(entry, ns=(i * 10**9, i * 10**9))
    (cache / "tmp").mkdir()  # staging area: never counted or removed
    assert linkcache.trim(str(cache), max_bytes=2500) == 1
    assert [p.name[:2] for p in _entries(cache)] == ["bb", "cc"]
    assert linkcache.trim(str(cache), max_bytes=2500) == 0
    assert linkcache.trim(str(tmp_path / "absent")) == 0


def test_wrapper_sends_dll_links_to_the_cache_and_the_rest_to_ccache(tmp_path: Path) -> None:
    record = tmp_path / "argv.txt"
    fake = tmp_path / "o'dd dir"
    fake.mkdir()
    for name in ("python", "ccache"):
        (fake / name).write_text(f'#!/bin/sh\nprintf "%s|" {name} "$@" >> "{record}"\necho >> "{record}"\n')
        (fake / name).chmod(0o755)
    text = linkcache.wrapper_script(str(fake / "python"), "/x/linkcache.py", str(tmp_path / "c ache"), TOOLS,
                                    "/usr/bin/gcc", str(fake / "ccache"))
    wrapper = tmp_path / "gcc"
    wrapper.write_text(text)
    wrapper.chmod(0o755)
    subprocess.run([str(wrapper), "-c", "-o", "a b.obj", "a.c"], check=True)
    subprocess.run([str(wrapper), "-o", "Mod.dll", "-nostdlib", "x.lib"], check=True)
    subprocess.run([str(wrapper), "-o", "Mod.dll.o", "-r"], check=True)  # only a .dll output is a module link
    lines = record.read_text().splitlines()
    assert lines[0] == "ccache|/usr/bin/gcc|-c|-o|a b.obj|a.c|"
    assert lines[1] == (f"python|/x/linkcache.py|--dir|{tmp_path / 'c ache'}|--tools|{TOOLS}|/usr/bin/gcc|"
                        "-o|Mod.dll|-nostdlib|x.lib|")
    assert lines[2] == "ccache|/usr/bin/gcc|-o|Mod.dll.o|-r|"


def test_main_runs_as_a_script(tmp_path: Path) -> None:
    """The wrapper runs linkcache.py by path with the build's Python: it must work standalone."""
    mod = Module(tmp_path / "m")
    cache = tmp_path / "cache"
    script = Path(linkcache.__file__)
    cmd = [sys.executable, str(script), "--dir", str(cache), "--tools", TOOLS, str(mod.gcc), *mod.argv()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for _ in range(2):
        subprocess.run(cmd, cwd=mod.root, env=env, check=True)
    assert mod.gcc_runs == 1 and len(_entries(cache)) == 1
    bad = subprocess.run([sys.executable, str(script), "--dir"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: linkcache.py")
