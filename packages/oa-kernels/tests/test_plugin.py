import json
import subprocess
import sys

import pytest

from oa_core.errors import OAError
from oa_core.plugins import PluginManager
from oa_kernels import architectures
from oa_kernels.settings import KernelsSettings, settings_from


def test_plugin_module_imports_no_torch():
    code = "import sys, oa_kernels.plugin; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'transformers'))))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_registers_patches_and_config_section():
    registry = PluginManager().registry()
    names = registry.names("model_patch")
    for name in ("kernels.gelu", "kernels.geglu", "kernels.rope", "kernels.fused_linear_ce", "kernels.all"):
        assert name in names
    assert registry.get("model_patch", "kernels.rope").supports("llama")
    assert not registry.get("model_patch", "kernels.geglu").supports("llama")
    assert registry.get("model_patch", "kernels.gelu").supports("anything")
    assert registry.get("config_section", "kernels") is KernelsSettings


def test_settings_are_strict():
    assert settings_from({"rope": False}).rope is False
    with pytest.raises(OAError, match="kernels.on_failure"):
        settings_from({"on_failure": "ignore"})


def test_architectures_name_modeling_modules_with_that_function():
    import importlib

    for arch in architectures.ROPE:
        name = {"gemma3_text": "gemma3"}.get(arch, arch)
        module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        assert hasattr(module, "apply_rotary_pos_emb"), arch
