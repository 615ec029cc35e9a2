"""The profile and host-file fixtures of tests/core, for the tests of this layer."""

from core.conftest import host_file, write_profile  # noqa: F401 (pytest finds fixtures by name here)
