"""stuart settings module for every ovmfgen platform: ``stuart_build -c ovmfgen/stuart_platform.py ...``.

One generic module, not one per platform: everything platform-specific arrives on the command line
that ``ovmfgen.build`` prints (and that a person can rerun by hand, unchanged)::

    stuart_build -c ovmfgen/stuart_platform.py \\
        --workspace build/xen-pvh --edk2 <edk2 tree> --edk-tools-path <BaseTools> \\
        --dsc OvmfPkg/XenOvmf.dsc --arch X64 --name XenOvmf \\
        --pcd gEfiMdeModulePkgTokenSpaceGuid.PcdFirmwareVersionString=L"..." \\
        [--ccache-dir DIR] \\
        TARGET=DEBUG TOOL_CHAIN_TAG=GCC5 MAX_CONCURRENT_THREAD_NUMBER=2 BLD_*_FD_SIZE_2MB=TRUE

Why it is written this way:

* The workspace (the rendered DSC/FDF, overrides, ``Conf/`` and ``Build/``) lives outside the edk2
  tree, which is only on PACKAGES_PATH and never written to.
* It works offline: no ``stuart_setup``/``stuart_update`` (NuGet needs mono and the network), no
  ext_deps: the workspace holds no ``*_ext_dep.yaml``/``*_plug_in.yaml``, so stuart's
  self-describing environment finds nothing to fetch and nasm/iasl come from the system.
* BaseTools are built out of tree, so this module sets EDK_TOOLS_PATH, CONF_PATH and PATH itself
  (upstream gets them from BaseTools' ``*_path_env.yaml`` files, which point into the edk2 tree).
* ``--pcd`` is not something ``UefiBuilder.Build`` can pass, so ``Build`` composes the same ``build``
  parameters upstream does and adds the PCDs (version stamping, as distributions do).

This is the one ovmfgen file that uses EDK2's CamelCase: stuart calls these methods by name.
It deliberately imports nothing from ovmfgen, so it runs in any Python that has edk2-pytool-extensions.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from edk2toolext.environment import shell_environment
from edk2toolext.environment.uefi_build import UefiBuilder
from edk2toolext.invocables.edk2_platform_build import BuildSettingsManager

DEFAULT_TOOL_CHAIN = "GCC5"
REPORT_TYPES = "FLASH"          # FD/FV layout and usage: what ovmfgen's manifest records
CCACHE_MASQUERADE = "/usr/lib/ccache"  # Debian's ccache: gcc & co. as symlinks to ccache


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
        # As edksetup.sh does: BaseTools derives each module's stack cookie values from Python's
        # string hashing, so a random hash seed rewrites every AutoGen.h and an incremental build
        # recompiles everything.
        shell.set_shell_var("PYTHONHASHSEED", "1")
        shell.insert_path(os.path.join(tools, "BinWrappers", "PosixLike"))
        if self.CcacheDir:
            if not os.path.isdir(CCACHE_MASQUERADE):
                logging.critical("ccache requested but %s is missing (apt-get install ccache)", CCACHE_MASQUERADE)
                return 1
            os.makedirs(self.CcacheDir, exist_ok=True)
            shell.set_shell_var("CCACHE_DIR", self.CcacheDir)
            # Hits across workspaces: paths under the workspace are hashed relative to it.
            shell.set_shell_var("CCACHE_BASEDIR", self.Workspace)
            shell.insert_path(CCACHE_MASQUERADE)
        self.env.SetValue("ACTIVE_PLATFORM", self.Dsc, "ovmfgen: --dsc")
        self.env.SetValue("TARGET_ARCH", self.Arch, "ovmfgen: --arch")
        if self.env.GetValue("TOOL_CHAIN_TAG") is None:
            self.env.SetValue("TOOL_CHAIN_TAG", DEFAULT_TOOL_CHAIN, "ovmfgen: default tool chain")
        self.env.SetValue("BUILDREPORTING", "TRUE", "ovmfgen: the manifest records FV usage")
        self.env.SetValue("BUILDREPORT_TYPES", REPORT_TYPES, "ovmfgen: FD/FV report")
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
