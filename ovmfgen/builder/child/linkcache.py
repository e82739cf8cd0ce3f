"""ovmfgen's link cache, the other half of ``--ccache``.

``python3 linkcache.py --dir DIR --tools DIGEST REAL_GCC ARGS...`` runs one link of a module's
``.dll`` through a cache, or runs ``REAL_GCC ARGS...`` unchanged when it cannot.

Why it exists: edk2's GCC5 DEBUG and RELEASE builds use LTO. A compile only writes GIMPLE; the
optimisation and the code generation happen when each module's ``.dll`` is linked. ccache caches
compiles and never links, so with a warm ccache a clean rebuild still spends most of its time
generating code. This caches that step.

The key is a SHA-256 over: the tool chain (``--tools``: gcc, ld, lto1, lto-wrapper and the LTO
plugin, as the caller identified them), gcc's search-path environment, the working directory, the
whole command line, and the bytes of every input file the command names (objects and archives, the
archives listed in ``-Wl,@file`` response files, the linker script). The outputs (the ``-o`` file
and the ``-Wl,-Map`` file) and the link's stdout/stderr are stored under the key and restored on a hit.

It caches only what it understands, a ``-nostdlib`` link with explicit inputs as edk2 writes them;
anything else (``-l``/``-L`` searches, spec files, a missing input, ...) goes to the real compiler
uncached. A problem with the cache itself never fails a link: it falls back to linking.

Standard library only, no ovmfgen imports: the shell wrapper stuart's builds call runs it as a script.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

FORMAT = "ovmfgen-linkcache 1"          # bump when the key or the entry layout changes
DEFAULT_MAX_BYTES = 2 << 30             # trim() keeps the cache under this (2 GiB)
# gcc options whose value is the next argument.
_WITH_VALUE = frozenset({"-o", "-u", "-z", "-e", "-include", "-imacros", "-D", "-U", "-I", "-isystem", "-x",
                         "-MF", "-MT", "-MQ", "-T"})
_FILE_VALUE = frozenset({"-include", "-imacros", "-T"})      # ... and is a file the link may read
# Options that make the link read files the command line does not name: not cached.
_UNSUPPORTED_PREFIXES = ("-l", "-L", "-B", "-specs", "--specs", "--sysroot", "-Xlinker", "-Wl,-l", "-Wl,-L",
                         "-print-", "-dump", "-fplugin")
# Environment that changes what gcc/ld find on their own.
_ENV_KEYS = ("GCC_EXEC_PREFIX", "COMPILER_PATH", "LIBRARY_PATH", "LD_RUN_PATH", "LD_LIBRARY_PATH")


class Uncacheable(Exception):
    """This command is not one the cache understands: run it as it is."""


@dataclass(frozen=True)
class LinkCommand:
    """A parsed link: its inputs (in command-line order) and outputs."""

    output: str
    map_file: str | None
    inputs: tuple[str, ...]


def _linker_tokens(arg: str) -> list[str]:
    """``-Wl,a,b,c`` -> ``[a, b, c]``."""
    return arg[len("-Wl,"):].split(",")


def _response_file_paths(path: str) -> list[str]:
    """The file names a linker response file lists (one per line, as edk2 writes them)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        names = [line.strip().strip('"') for line in f]
    return [n for n in names if n]


def parse(args: list[str]) -> LinkCommand:
    """Find the inputs and outputs of a gcc link command, or raise ``Uncacheable``."""
    if "-nostdlib" not in args:
        raise Uncacheable("not a -nostdlib link")  # crt files and libc would be inputs we do not see
    output = None
    map_file = None
    inputs: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(_UNSUPPORTED_PREFIXES) or arg.startswith("@") or arg in ("-c", "-E", "-S", "-"):
            raise Uncacheable(f"unsupported argument {arg}")
        if arg in _WITH_VALUE:
            if i + 1 == len(args):
                raise Uncacheable(f"{arg} without a value")
            value = args[i + 1]
            if arg == "-o":
                if output is not None:
                    raise Uncacheable("two -o")
                output = value
            elif arg in _FILE_VALUE and os.path.isfile(value):
                inputs.append(value)
            i += 2
            continue
        if arg.startswith("-Wl,"):
            tokens = _linker_tokens(arg)
            j = 0
            while j < len(tokens):
                tok = tokens[j]
                if tok in ("-Map", "-T", "--script") and j + 1 < len(tokens):
                    if tok == "-Map":
                        map_file = tokens[j + 1]
                    else:
                        inputs.append(tokens[j + 1])
                    j += 2
                    continue
                if tok.startswith("-Map="):
                    map_file = tok[len("-Map="):]
                elif tok.startswith("--script="):
                    inputs.append(tok[len("--script="):])
                elif tok.startswith("@"):
                    inputs.append(tok[1:])
                    inputs.extend(_response_file_paths(tok[1:]))
                elif tok in ("-l", "-L", "-rpath", "-rpath-link") or tok.startswith(("-l", "-L")):
                    raise Uncacheable(f"unsupported linker option {tok}")
                j += 1
        elif not arg.startswith("-"):
            inputs.append(arg)
        i += 1
    if output is None:
        raise Uncacheable("no -o")
    for path in inputs:
        if not os.path.isfile(path):
            raise Uncacheable(f"input {path} is not a file")
    return LinkCommand(output, map_file, tuple(inputs))


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(tools: str, real_gcc: str, args: list[str], cmd: LinkCommand, cwd: str,
              env: dict[str, str]) -> str:
    """The entry's key: everything the link's outputs depend on."""
    h = hashlib.sha256()

    def put(label: str, value: str) -> None:
        data = value.encode("utf-8", errors="surrogateescape")
        h.update(f"{label} {len(data)}\n".encode())
        h.update(data)

    put("format", FORMAT)
    put("tools", tools)
    put("gcc", real_gcc)
    put("cwd", cwd)
    for key in _ENV_KEYS:
        put(f"env {key}", env.get(key, "\0unset"))
    for arg in args:
        put("arg", arg)
    for path in cmd.inputs:
        put("input", path)
        put("sha256", _file_digest(path))
    return h.hexdigest()


def _replace_from(src: str, dest: str) -> None:
    """Copy ``src`` over ``dest`` atomically; a fresh mtime, so make sees the output as new."""
    tmp = f"{dest}.linkcache-{os.getpid()}"
    shutil.copyfile(src, tmp)
    shutil.copymode(src, tmp)
    os.replace(tmp, dest)


def _entry_files(cmd: LinkCommand) -> dict[str, str | None]:
    return {"out": cmd.output, "map": cmd.map_file}


def restore(entry: str, cmd: LinkCommand) -> bool:
    """Copy a stored entry's outputs into place and replay its output; False if the entry is unusable."""
    files = _entry_files(cmd)
    for name, dest in files.items():
        if dest is not None and not os.path.isfile(os.path.join(entry, name)):
            return False
    for name, dest in files.items():
        if dest is not None:
            _replace_from(os.path.join(entry, name), dest)
    for name, stream in (("stdout", sys.stdout.buffer), ("stderr", sys.stderr.buffer)):
        try:
            with open(os.path.join(entry, name), "rb") as f:
                stream.write(f.read())
        except OSError:
            pass
        stream.flush()
    os.utime(entry)  # recently used: trim() removes the oldest entries first
    return True


def store(cache_dir: str, key: str, cmd: LinkCommand, stdout: bytes, stderr: bytes) -> None:
    """Store a successful link's outputs under ``key`` (staged, then renamed into place)."""
    entry = os.path.join(cache_dir, key[:2], key)
    if os.path.isdir(entry):
        return
    tmp_root = os.path.join(cache_dir, "tmp")
    os.makedirs(tmp_root, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=key[:12] + ".", dir=tmp_root)
    try:
        for name, src in _entry_files(cmd).items():
            if src is not None:
                shutil.copyfile(src, os.path.join(stage, name))
                shutil.copymode(src, os.path.join(stage, name))
        for name, data in (("stdout", stdout), ("stderr", stderr)):
            with open(os.path.join(stage, name), "wb") as f:
                f.write(data)
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        try:
            os.rename(stage, entry)
        except OSError:
            if not os.path.isdir(entry):  # else: a parallel link stored the same entry first
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _note(message: str) -> None:
    sys.stderr.write(f"ovmfgen link cache: {message}\n")
    sys.stderr.flush()


def link(cache_dir: str, tools: str, real_gcc: str, args: list[str]) -> int:
    """Run one link through the cache; returns the exit status."""
    try:
        cmd = parse(args)
        key = cache_key(tools, real_gcc, args, cmd, os.getcwd(), dict(os.environ))
    except (Uncacheable, OSError):
        return subprocess.call([real_gcc, *args])
    entry = os.path.join(cache_dir, key[:2], key)
    if os.path.isdir(entry):
        try:
            if restore(entry, cmd):
                return 0
        except OSError as exc:
            _note(f"cannot restore {key[:12]} ({exc}); linking")
    proc = subprocess.run([real_gcc, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    sys.stdout.buffer.write(proc.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(proc.stderr)
    sys.stderr.buffer.flush()
    if proc.returncode == 0:
        try:
            store(cache_dir, key, cmd, proc.stdout, proc.stderr)
        except OSError as exc:
            _note(f"cannot store {key[:12]} ({exc})")
    return proc.returncode


def tools_identity(real_gcc: str) -> str:
    """A digest naming the tool chain a link uses: gcc's version and the files behind gcc, ld and LTO."""
    def ask(*flags: str) -> str:
        return subprocess.run([real_gcc, *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, check=False).stdout.strip()

    h = hashlib.sha256()
    h.update(ask("--version").encode())
    names = [real_gcc, ask("-print-prog-name=ld"), ask("-print-prog-name=lto1"),
             ask("-print-prog-name=lto-wrapper"), ask("-print-file-name=liblto_plugin.so")]
    for name in names:
        path = name if os.path.isabs(name) else (shutil.which(name) or name)
        try:
            st = os.stat(os.path.realpath(path))
            h.update(f"{os.path.realpath(path)} {st.st_size} {st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name} missing\n".encode())
    return h.hexdigest()


def trim(cache_dir: str, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Remove the least recently used entries until the cache holds at most ``max_bytes``; returns how many."""
    entries = []
    total = 0
    try:
        shards = sorted(os.listdir(cache_dir))
    except OSError:
        return 0
    for shard in shards:
        shard_dir = os.path.join(cache_dir, shard)
        if shard == "tmp" or not os.path.isdir(shard_dir):
            continue
        for name in sorted(os.listdir(shard_dir)):
            entry = os.path.join(shard_dir, name)
            try:
                size = sum(os.path.getsize(os.path.join(entry, f)) for f in os.listdir(entry))
                entries.append((os.stat(entry).st_mtime_ns, entry, size))
            except OSError:
                continue
            total += size
    removed = 0
    for _, entry, size in sorted(entries):
        if total <= max_bytes:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed += 1
    return removed


def wrapper_script(python: str, script: str, cache_dir: str, tools: str, real_gcc: str, ccache: str) -> str:
    """The ``gcc`` a --ccache build finds first on PATH: links of a .dll here, everything else to ccache."""
    def q(text: str) -> str:
        return "'" + text.replace("'", "'\"'\"'") + "'"

    return (
        "#!/bin/sh\n"
        "# Written by ovmfgen (stuart_platform.py) for --ccache builds: compiles go through ccache,\n"
        "# links of a module's .dll (where LTO generates the code) through ovmfgen's link cache.\n"
        "prev=\n"
        "for arg do\n"
        "  if [ \"$prev\" = -o ]; then\n"
        "    case $arg in\n"
        f"      *.dll) exec {q(python)} {q(script)} --dir {q(cache_dir)} --tools {tools} {q(real_gcc)} \"$@\" ;;\n"
        "    esac\n"
        "  fi\n"
        "  prev=$arg\n"
        "done\n"
        f"exec {q(ccache)} {q(real_gcc)} \"$@\"\n"
    )


def main(argv: list[str]) -> int:
    """``linkcache.py --dir DIR --tools DIGEST REAL_GCC ARGS...``"""
    if len(argv) < 5 or argv[0] != "--dir" or argv[2] != "--tools":
        sys.stderr.write("usage: linkcache.py --dir DIR --tools DIGEST REAL_GCC ARGS...\n")
        return 2
    return link(argv[1], argv[3], argv[4], argv[5:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
