"""oa core: record schema, run config, plugin manager, hook specifications and the types plugins register."""

from oa_core.errors import ConfigError, OAError, PluginError, RecordError
from oa_core.extensions import (
    AugmentContext,
    Augmenter,
    ChatTemplate,
    DatasetFormat,
    Generator,
    Loss,
    Method,
    ModelPatch,
    PatchResult,
    RewardFunction,
)
from oa_core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "AugmentContext",
    "Augmenter",
    "ChatTemplate",
    "ConfigError",
    "DatasetFormat",
    "Generator",
    "Loss",
    "Method",
    "ModelPatch",
    "OAError",
    "PatchResult",
    "PluginError",
    "RecordError",
    "RewardFunction",
    "__version__",
    "hookimpl",
]
