"""Run configs: YAML/JSON files with ``include``, ``--set`` overrides, strict validation, provenance.

- :mod:`~oa_core.config.settings`: the method-independent sections and :class:`RunConfig`;
- :mod:`~oa_core.config.layers`: reading files, ``include`` and ``--set``, the origin of every value;
- :mod:`~oa_core.config.validate`: schema, plugin names and cross-section rules, all problems at once;
- :mod:`~oa_core.config.effective`: ``effective_config.yaml`` with secrets redacted.
"""

from oa_core.config.effective import redact, write_effective_config
from oa_core.config.layers import DEFAULT, OVERRIDE, apply_overrides, load_layers, read_config_file
from oa_core.config.settings import (
    TRUNCATION_RULES,
    DatasetSpec,
    InputSpec,
    JsonlPath,
    ModelSettings,
    RegistryRef,
    RunConfig,
    TokenizerSettings,
    TruncationRule,
)
from oa_core.config.validate import LoadedConfig, config_model, json_schema, load_config, validate_config

__all__ = [
    "DEFAULT",
    "OVERRIDE",
    "TRUNCATION_RULES",
    "DatasetSpec",
    "InputSpec",
    "JsonlPath",
    "LoadedConfig",
    "ModelSettings",
    "RegistryRef",
    "RunConfig",
    "TokenizerSettings",
    "TruncationRule",
    "apply_overrides",
    "config_model",
    "json_schema",
    "load_config",
    "load_layers",
    "read_config_file",
    "redact",
    "validate_config",
    "write_effective_config",
]
