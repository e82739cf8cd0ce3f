"""Integration tests (real edk2 builds, QEMU boots): a package, so their module names (integration.test_build,
integration.test_nightly, ...) never clash with the unit tests of the same basename in tests/."""
