"""stuart settings module for every ovmfgen platform: ``stuart_build -c ovmfgen/builder/child/stuart_platform.py ...``.

One generic module, not one per platform: everything platform-specific arrives on the command line
that ``ovmfgen.builder.plan`` composes (and that a person can rerun by hand, unchanged)::

    stuart_build -c ovmfgen/builder/child/stuart_platform.py \\
        --workspace build/xen-pvh --edk2 <edk2 tree> --edk-tools-path <BaseTools> \\
        --dsc OvmfPkg/XenOvmf.dsc --arch X64 --name XenOvmf \\
        --pcd gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString=L"..." \\
        --stack-cookie-seed xen-pvh/DEBUG --source-date-epoch 1740096000 \\
        [--ccache-dir DIR --link-cache-dir DIR] \\
        TARGET=DEBUG TOOL_CHAIN_TAG=GCC MAX_CONCURRENT_THREAD_NUMBER=2 BLD_*_FD_SIZE_2MB=TRUE

Why it is written this way:

* The workspace (the rendered DSC/FDF, overrides, ``Conf/`` and ``Build/``) lives outside the edk2
  tree, which is only on PACKAGES_PATH and never written to.
* It works offline: no ``stuart_setup``/``stuart_update`` (NuGet needs mono and the network), no
  ext_deps: the workspace holds no ``*_ext_dep.yaml``/``*_plug_in.yaml``, so stuart's
  self-describing environment finds nothing to fetch and nasm/iasl come from the system.
* BaseTools are built out of tree, so this module sets EDK_TOOLS_PATH, CONF_PATH and PATH itself
  (upstream gets them from BaseTools' ``*_path_env.yaml`` files, which point into the edk2 tree).
* Stack cookies are derived from ``--stack-cookie-seed``: edk2's ``build`` draws a fresh random
  list for every clean build (``StackCookieValues{32,64}.json`` in the build directory), which
  changes every module's AutoGen.h, defeats compiler caches and makes two clean builds differ.
  The values are as public as the image they are compiled into, so determinism costs nothing.
* Path-free output (``pathfree.py``, beside this file): a ``gcc`` and a ``GenFw`` wrapper first on
  PATH keep the workspace and tree paths out of the firmware, so two builds from two places give the
  same bytes; ``--source-date-epoch`` (the edk2 release's date) is the build's SOURCE_DATE_EPOCH.
* ``--pcd`` is not something ``UefiBuilder.Build`` can pass, so ``Build`` composes the same ``build``
  parameters upstream does and adds the PCDs (version stamping, as distributions do).

This is the one ovmfgen file that uses EDK2's CamelCase: stuart calls these methods by name.
It deliberately imports nothing from ovmfgen, so it runs in any Python that has edk2-pytool-extensions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys

from edk2toolext.environment import shell_environment
from edk2toolext.environment.uefi_build import UefiBuilder
from edk2toolext.invocables.edk2_platform_build import BuildSettingsManager

REPORT_TYPES = "FLASH"          # FD/FV layout and usage: what ovmfgen's manifest records
CCACHE_MASQUERADE = "/usr/lib/ccache"  # Debian's ccache: gcc & co. as symlinks to ccache
STACK_COOKIE_COUNT = 100                # as BaseTools' GenerateStackCookieValues


def _early_option(name: str, default: str | None = None) -> str | None:
    """The value of ``--name`` in sys.argv, before stuart's own argument parsing has run.

    stuart asks for the workspace root (for its BuildConfig.conf default) before it hands the
    parsed arguments to the settings class.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(name, default=default)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return getattr(args, name.lstrip("-").replace("-", "_"))


class PlatformBuilder(UefiBuilder, BuildSettingsManager):
    """Settings and builder for any ovmfgen workspace (stuart finds both roles in this one class)."""

    def __init__(self) -> None:
        UefiBuilder.__init__(self)
        workspace = _early_option("--workspace") or os.getcwd()
        self.Workspace = os.path.abspath(workspace)
        self.Edk2 = None
        self.EdkToolsPath = None
        self.Dsc = None
        self.Arch = "X64"
        self.PlatformName = None
        self.Pcds: list[str] = []
        self.CcacheDir = None
        self.StackCookieSeed = None
        self.LinkCacheDir = None
        self.SourceDateEpoch = None

    # -- BuildSettingsManager -------------------------------------------------------------------

    def AddCommandLineOptions(self, parserObj: argparse.ArgumentParser) -> None:
        """ovmfgen's options (the workspace, the edk2 tree, the DSC, PCDs, ccache)."""
        parserObj.add_argument("--workspace", required=True, help="the ovmfgen workspace (WORKSPACE)")
        parserObj.add_argument("--edk2", required=True, help="the edk2 tree (PACKAGES_PATH)")
        parserObj.add_argument("--edk-tools-path", dest="edk_tools_path", required=True,
                               help="BaseTools built out of tree (EDK_TOOLS_PATH)")
        parserObj.add_argument("--dsc", required=True, help="workspace-relative DSC, e.g. OvmfPkg/XenOvmf.dsc")
        parserObj.add_argument("--arch", default="X64", help="target architecture(s), comma separated")
        parserObj.add_argument("--name", default=None, help="name for stuart's log file (BUILDLOG_<name>.txt)")
        parserObj.add_argument("--pcd", action="append", default=[], help="TokenSpace.PcdName=VALUE for `build --pcd`")
        parserObj.add_argument("--ccache-dir", dest="ccache_dir", default=None,
                               help=f"compile through ccache ({CCACHE_MASQUERADE} first on PATH) with this CCACHE_DIR")
        parserObj.add_argument("--link-cache-dir", dest="link_cache_dir", default=None,
                               help="with --ccache-dir: also cache LTO links of .dll files here (ovmfgen/builder/child/linkcache.py)")
        parserObj.add_argument("--stack-cookie-seed", dest="stack_cookie_seed", default=None,
                               help="derive the stack cookie values from this text (default: edk2's random ones)")
        parserObj.add_argument("--source-date-epoch", dest="source_date_epoch", type=int, default=None,
                               help="SOURCE_DATE_EPOCH for the build (ovmfgen passes the edk2 release's date)")

    def RetrieveCommandLineOptions(self, args: argparse.Namespace) -> None:
        """Keep the parsed options."""
        self.Workspace = os.path.abspath(args.workspace)
        self.Edk2 = os.path.abspath(args.edk2)
        self.EdkToolsPath = os.path.abspath(args.edk_tools_path)
        self.Dsc = args.dsc
        self.Arch = " ".join(a.strip().upper() for a in args.arch.split(",") if a.strip())
        self.PlatformName = args.name
        self.Pcds = list(args.pcd)
        self.CcacheDir = os.path.abspath(args.ccache_dir) if args.ccache_dir else None
        self.StackCookieSeed = args.stack_cookie_seed
        self.LinkCacheDir = os.path.abspath(args.link_cache_dir) if args.link_cache_dir else None
        self.SourceDateEpoch = args.source_date_epoch

    def GetWorkspaceRoot(self) -> str:
        """The ovmfgen workspace (rendered files, overrides, Conf/, Build/)."""
        return self.Workspace

    def GetPackagesPath(self) -> list[str]:
        """The edk2 tree: files in the workspace shadow it."""
        return [self.Edk2] if self.Edk2 else []

    def GetActiveScopes(self) -> tuple[str, ...]:
        """No scopes of our own: nothing to download, no plugins from the tree."""
        return ()

    def GetSkippedDirectories(self) -> tuple[str, ...]:
        """Do not walk build output when stuart scans the workspace for descriptor files."""
        return ("Build", "Conf")

    def GetName(self) -> str:
        """Names stuart's own log file, Build/BUILDLOG_<name>.txt."""
        return self.PlatformName or "ovmfgen"

    def GetLoggingLevel(self, loggerType: str) -> int:
        """Console at INFO, so the edk2 build's output streams (ovmfgen reads it for progress)."""
        return logging.INFO if loggerType == "con" else logging.DEBUG

    # -- UefiBuilder ----------------------------------------------------------------------------

    def SetPlatformEnv(self) -> int:
        """BaseTools paths, CONF_PATH, the platform and (with --ccache-dir) ccache: before the DSC is parsed."""
        shell = shell_environment.GetEnvironment()
        tools = self.EdkToolsPath
        shell.set_shell_var("EDK_TOOLS_PATH", tools)
        self.env.SetValue("EDK_TOOLS_PATH", tools, "ovmfgen: BaseTools built out of tree")
        shell.set_shell_var("BASE_TOOLS_PATH", tools)
        shell.set_shell_var("CONF_PATH", os.path.join(self.Workspace, "Conf"))
        # As edksetup.sh does: BaseTools picks each module's stack cookie from its list by Python's
        # string hash of the module GUID, so a random hash seed rewrites every AutoGen.h and an
        # incremental build recompiles everything.
        shell.set_shell_var("PYTHONHASHSEED", "1")
        shell.insert_path(os.path.join(tools, "BinWrappers", "PosixLike"))
        if self.CcacheDir:
            if not os.path.isdir(CCACHE_MASQUERADE):
                logging.critical("ccache requested but %s is missing (apt-get install ccache)", CCACHE_MASQUERADE)
                return 1
            os.makedirs(self.CcacheDir, exist_ok=True)
            shell.set_shell_var("CCACHE_DIR", self.CcacheDir)
            # No CCACHE_BASEDIR: it would hand gcc relative names, so __FILE__ would differ from a build
            # without ccache; and the path-free -ffile-prefix-map flags carry the workspace path, so
            # hits across workspaces are gone anyway.
            # edk2 compiles with -MMD: ccache's depend mode hashes the sources and the headers gcc
            # lists instead of running the preprocessor on every lookup (a hit costs a few ms, not 40).
            shell.set_shell_var("CCACHE_DEPEND", "true")
            shell.insert_path(CCACHE_MASQUERADE)
            if self.LinkCacheDir:
                wrapper_dir = self._link_cache_wrapper()
                if wrapper_dir is None:
                    logging.critical("--link-cache-dir needs gcc and ccache on PATH")
                    return 1
                shell.insert_path(wrapper_dir)
        if not self._path_free(shell):
            return 1
        self.env.SetValue("ACTIVE_PLATFORM", self.Dsc, "ovmfgen: --dsc")
        self.env.SetValue("TARGET_ARCH", self.Arch, "ovmfgen: --arch")
        if self.env.GetValue("TOOL_CHAIN_TAG") is None:
            # No default: the tag depends on the edk2 tree (GCC where it defines it, else GCC5) and ovmfgen passes it.
            logging.critical("TOOL_CHAIN_TAG=<tag> is required on the command line (the tree's tool chain tag)")
            return 1
        self.env.SetValue("BUILDREPORTING", "TRUE", "ovmfgen: the manifest records FV usage")
        self.env.SetValue("BUILDREPORT_TYPES", REPORT_TYPES, "ovmfgen: FD/FV report")
        return 0

    def _path_free(self, shell) -> bool:
        """Put the path-free gcc and GenFw wrappers first on PATH and set the build's environment (pathfree.py)."""
        pathfree = _load_beside("pathfree")
        bin_dir = os.path.join(self.Workspace, pathfree.WRAPPER_DIR)
        search = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                 if d and os.path.realpath(d) != os.path.realpath(bin_dir))
        next_gcc = shutil.which("gcc", path=search)   # ccache's or the link cache's when --ccache-dir put them first
        real_genfw = os.path.join(self.EdkToolsPath, "BinWrappers", "PosixLike", "GenFw")
        if not next_gcc or not os.path.isfile(real_genfw):
            logging.critical("path-free build: no gcc on PATH or no %s", real_genfw)
            return False
        pathfree.install_wrappers(self.Workspace, self.GetPackagesPath(), next_gcc, real_genfw)
        shell.insert_path(bin_dir)
        setting, dropped = pathfree.build_environment(os.environ, self.SourceDateEpoch)
        for name, value in setting.items():
            shell.set_shell_var(name, value)
        for name in dropped:  # from stuart's copy too: a checkpoint restore would export it again
            shell.active_environ.pop(name, None)
            os.environ.pop(name, None)
        return True

    def _link_cache_wrapper(self) -> str | None:
        """Write ``<workspace>/.ovmfgen/bin/gcc`` (links through the link cache, the rest through ccache)."""
        linkcache = _load_beside("linkcache")
        bin_dir = os.path.join(self.Workspace, ".ovmfgen", "bin")
        skip = {os.path.realpath(bin_dir), os.path.realpath(CCACHE_MASQUERADE)}
        search = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                 if d and os.path.realpath(d) not in skip)
        real_gcc = shutil.which("gcc", path=search)
        ccache = shutil.which("ccache", path=search)
        if not real_gcc or not ccache:
            return None
        os.makedirs(self.LinkCacheDir, exist_ok=True)
        text = linkcache.wrapper_script(sys.executable, os.path.abspath(linkcache.__file__), self.LinkCacheDir,
                                        linkcache.tools_identity(real_gcc), real_gcc, ccache)
        os.makedirs(bin_dir, exist_ok=True)
        path = os.path.join(bin_dir, "gcc")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
        return bin_dir

    def PlatformPreBuild(self) -> int:
        """Seed the stack cookie lists (with --stack-cookie-seed) before edk2's ``build`` draws random ones."""
        if self.StackCookieSeed is not None:
            write_stack_cookies(self.env.GetValue("BUILD_OUTPUT_BASE"), self.StackCookieSeed)
        return 0

    def BuildParameters(self) -> list[str]:
        """The arguments for edk2's ``build``: what ``UefiBuilder.Build`` passes, plus ``--pcd``."""
        target = self.env.GetValue("TARGET")
        params = ["-p", self.env.GetValue("ACTIVE_PLATFORM"), "-b", target,
                  "-t", self.env.GetValue("TOOL_CHAIN_TAG")]
        threads = self.env.GetValue("MAX_CONCURRENT_THREAD_NUMBER")
        if threads is not None:
            params += ["-n", threads]
        for arch in self.env.GetValue("TARGET_ARCH").split():
            params += ["-a", arch]
        if self.env.GetValue("BUILDREPORTING") == "TRUE":
            params += ["-y", self.env.GetValue("BUILDREPORT_FILE")]
            for kind in self.env.GetValue("BUILDREPORT_TYPES").split():
                params += ["-Y", kind]
        for key, value in sorted(self.env.GetAllBuildKeyValues(target).items()):
            params += ["-D", f"{key}={value}"]
        for pcd in self.Pcds:
            params += ["--pcd", pcd]
        return params

    def Build(self) -> int:
        """Run edk2's ``build`` through upstream's ``UefiBuilder.Build`` with our parameter list.

        ``RunCmd`` hands the parameters to a shell, so each one is quoted (PCD strings hold quotes).
        """
        self.env.SetValue("EDK_BUILD_PARAMS", shlex.join(self.BuildParameters()), "ovmfgen: build parameters")
        return UefiBuilder.Build(self)


def _load_beside(name: str):
    """Import ``<name>.py`` from this file's directory (stuart loads this module by path, not as ovmfgen's)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_ovmfgen_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def stack_cookie_values(seed: str, bits: int) -> list[int]:
    """``STACK_COOKIE_COUNT`` values below ``2**bits - 1`` (BaseTools' range), derived from ``seed``."""
    limit = (1 << bits) - 1
    return [int.from_bytes(hashlib.sha256(f"{seed}/{bits}/{i}".encode()).digest()[:bits // 8], "big") % limit
            for i in range(STACK_COOKIE_COUNT)]


def write_stack_cookies(build_dir: str, seed: str) -> None:
    """Write ``StackCookieValues{32,64}.json`` into ``build_dir`` where they differ (BaseTools keeps existing ones)."""
    os.makedirs(build_dir, exist_ok=True)
    for bits in (32, 64):
        path = os.path.join(build_dir, f"StackCookieValues{bits}.json")
        text = json.dumps(stack_cookie_values(seed, bits))
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
