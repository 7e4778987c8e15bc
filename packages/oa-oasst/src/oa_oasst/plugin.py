"""Hook implementations of oa_oasst (registered through the `oa` entry point)."""

from oa_core import hookimpl  # noqa: F401
