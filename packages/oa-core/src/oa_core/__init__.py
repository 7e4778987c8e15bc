"""oa core: record schema, run config, plugin manager and hook specifications."""

from oa_core.errors import ConfigError, OAError, PluginError, RecordError
from oa_core.plugins import hookimpl

__version__ = "0.1.0"

__all__ = ["ConfigError", "OAError", "PluginError", "RecordError", "__version__", "hookimpl"]
