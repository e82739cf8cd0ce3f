"""ovmfgen: generate, build and ship OVMF firmware for Xen guests.

The pipeline, one package per stage; data flows one way (tests/test_imports.py checks that the
import graph among ovmfgen modules has no cycle)::

    platforms/*.yaml --platform/--> XenOvmf.dsc/.fdf --builder/--> dist/<platform>/<target>/ --boot/, patch/, nightly/

Code map::

    ovmfgen/
      __init__.py          this map
      __main__.py          ``python -m ovmfgen TASK``: the tasks without the invoke CLI
      apt.py               apt on this machine: its sources, installing packages (on the floor: edk2 and host both use it)
      cli.py               the command layer shared by tasks.py and __main__ (one-line errors, exit status)
      errors.py            OvmfgenError and Location: the one error type, shown as ``path:line:col: error: ...``
      paths.py             the checkout, the cache, and ``Layout`` (platforms/overrides/build/dist roots, the output paths)
      request.py           ``Request``: the options of one build (from tasks, boot and nightly cells), checked
      run.py               the one door to subprocesses (run, popen, stop, wait)
      stamp.py             stamps: a digest of every raw input, so that an unchanged build or render answers at once
      fsutil.py            atomic writes (temp file + rename), write-if-changed, sha256 of a file, the one lock (``exclusive``)
      cacheentry.py        a cache entry made whole or not at all: lock, temp dir beside it, stamp, rename, stale stages removed
      ui.py                ``ovmfgen: ...`` progress lines, logging set-up
      elf.py               FD -> PVH ELF, and the loader rules Xen's libelf and QEMU apply (pure bytes)
      fvfile.py            firmware volumes, FFS files and sections of a built image, LZMA opened (pure bytes): the Shell's PE32
      varstore.py          an edk2 authenticated variable store in an image, read and checked (pure bytes)
      edk2/
        releases.py        the edk2 releases ovmfgen knows (releases.yaml: tag, commit, date, tarball), and Position: any tree ordered among them
        tree.py            where a tree is, which edk2 it is (identity), its BaseTools
        fetch.py           the setup lock, checks and unpacking (staged through cacheentry) for trees in the cache
        debian.py          the default tree from Debian's source package
        basetools.py       BaseTools built out of the tree, in the cache
        install.py         a tree made ready: placed (or a checkout adopted), BaseTools, identity
        conventions.py     ARCH, TARGETS, the FD-size vocabulary, a tree's tool chain tag, the edksetup env
        toollib.py         edk2toollib adapters: DSC/FDF parsers with ovmfgen's fixes, the workspace paths resolve in, macros, ``!if``
        modules.py         what comes along into the workspace when an override replaces a module's source
      platform/
        nodes.py           YAML -> located node graph (never hangs, crashes or errs unlocated)
        load.py            nodes -> the model, checked for shape, features and ``when:`` decided
        release.py         ``when: {edk2: ...}`` release conditions
        model.py           the platform model: frozen dataclasses, no I/O
        syntax.py          DSC/FDF text -> the model's sections
        validate.py        the rendered files and overrides checked against the edk2 tree, for the build at hand
        reads.py           the -D names a platform's files and !includes read (no silently ignored --define)
        render.py          model -> XenOvmf.dsc/.fdf text (jinja2, CRLF), write-if-changed
        overrides.py       what the overrides make of the tree's files: whole-file copies and patches (git apply), in order
        located.py         a platform loaded for a tree (the file's own errors before "tree not set up")
        resolve.py         ``Resolved``: this platform on this tree with these options, rendered, overrides applied once, output paths
        command.py         ``invoke render``: load, render once, validate, write
        importer.py        ``invoke import``: an upstream .dsc/.fdf -> platform YAML
        diff.py            ``invoke diff``: what a DSC/FDF builds, and the semantic difference
        rebase.py          ``invoke rebase``: upstream's release change merged in as release conditions
      builder/
        plan.py            ``Plan``: inputs, their hash, the stuart command (the no-op check runs on it)
        workspace.py       the per-workspace lock; rendered files + overrides written into the workspace
        stuart.py          running the stuart child, progress
        diagnose.py        a failed build's first real error, located
        manifest.py        manifest.json: read, compare (no-op), make
        report.py          the build report's and log's firmware volumes: addresses, how full
        measure.py         a TPM build's predicted PCR 7 (Secure Boot: the enrolled keys), PCR 0 as built (checked against virt-fw-measure), pcrlock file
        publish.py         the atomic swap into dist/
        entry.py           ``invoke build``'s entry: the request, the stamped no-op, else the full build
        noop.py            the no-op: the published manifest checked, a build's stamp written and answered
        command.py         a resolved platform planned, locked, validated, built, turned into the ELF, published
        bench.py           ``invoke bench``: ovmfgen vs edk2's own build
        secureboot.py      Secure Boot's post-build step: virt-fw-vars enrolls the key set, the store read back and described
        child/             run as other processes, import nothing from ovmfgen
          stuart_platform.py   the stuart settings module
          linkcache.py         the LTO link cache behind ``--ccache``
          pathfree.py          gcc/GenFw wrappers and environment: no build path in the firmware
      boot/
        verdict.py         a DEBUG log -> Verdict (milestones, which entry SEC ran from)
        qemu.py            running QEMU (TCG) through the PVH entry or the reset vector
        shell.py           booting a full OVMF to the UEFI Shell (pflash + FAT disk)
        swtpm.py           a software TPM 2.0 (swtpm) for a QEMU boot, and its PCRs read back over its control socket
        command.py         ``invoke boot``: finds the build through the Layout, boots it
        xen/               real Xen 4.17 / 4.20 nested in QEMU: debian, cache, gpt, osdisk, persist, guests (dom0/test.sh: dom0's test), nested, verdicts, watch, bench, limits
      patch/
        intree.py          the platform as upstream keeps it (ELF header include, PlatformCI, Maintainers.txt)
        series.py          the series as data: signer, commits, subjects, bodies
        git.py             git plumbing: base snapshot repository, commits without a checkout
        checks.py          GetMaintainer.py and PatchCheck.py
        write.py           format-patch, cover letter; ``generate``
        verify.py          ``--check-each``: git am onto a pristine tree, build after every commit
        command.py         ``invoke patch``
      nightly/
        matrix.py          nightly.yaml: the cells
        cell.py            one cell in its own process: build, check-elf, boots
        upstream.py        a cell of an edk2 checkout: its setup, then invoke diff's drift and a rebase dry run before the build
        jobs.py            cells in parallel processes
        repro.py           one cell built twice from scratch, compared
        history.py         nights on disk, summary.json
        records.py         the TypedDicts of a cell's record and a night's summary
        report.py          nightly/index.html
        install.py         the packagers' layout with firmware descriptors
        emit.py            the matrix as a GitHub/GitLab workflow
        command.py         ``invoke nightly``
      host/
        setup.py           ``invoke setup``: apt packages, the edk2 trees, BaseTools
        testrun.py         ``invoke test``
"""

__version__ = "0.1.0"
