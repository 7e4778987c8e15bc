import importlib.util
import json
import subprocess
import sys
import types
from importlib import metadata

import pytest

from oa_core import environment, hookimpl
from oa_core.environment import environment_info, gpu_info
from oa_core.plugins import PluginManager


def test_reports_oa_packages_plugins_and_libraries(monkeypatch):
    monkeypatch.setattr(environment, "LIBRARIES", ("pydantic", "no-such-distribution-xyz"))
    info = environment_info(PluginManager(), gpu=False)
    assert json.loads(json.dumps(info)) == info  # plain, JSON-ready
    assert info["packages"]["oa-core"] == metadata.version("oa-core")
    assert info["packages"]["oa-command"] == metadata.version("oa-command")
    plugins = {p["name"]: p for p in info["plugins"]}
    assert plugins["core"]["distribution"] == "oa-core"
    assert plugins["example"] == {"name": "example", "distribution": "oa-plugin-example",
                                  "version": metadata.version("oa-plugin-example")}
    assert info["libraries"] == {"pydantic": metadata.version("pydantic"), "no-such-distribution-xyz": None}
    assert info["python"]["executable"] == sys.executable
    assert info["gpu"] is None and info["broken"] == []


def test_broken_plugins_and_disabled_ones_are_listed(monkeypatch):
    monkeypatch.setenv("OA_DISABLE_PLUGINS", "example")
    pm = PluginManager()
    pm.register(types.SimpleNamespace(register_reward_function=hookimpl(lambda register: None)), "typo")
    info = environment_info(pm, gpu=False)
    assert info["disabled"] == ["example"] and "example" not in {p["name"] for p in info["plugins"]}
    (broken,) = info["broken"]
    assert broken.startswith("plugin 'typo' (typo) failed in register_reward_function:")
    assert "did you mean 'register_reward_functions'?" in broken


def test_gpu_as_torch_sees_it():
    torch = pytest.importorskip("torch")
    gpu = gpu_info()
    assert gpu["cuda_build"] == torch.version.cuda and gpu["available"] == torch.cuda.is_available()
    assert gpu["count"] == len(gpu["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for i, device in enumerate(gpu["devices"]):
        assert device["name"] == torch.cuda.get_device_name(i)
    assert "error" not in gpu
    assert environment_info()["libraries"]["torch"] == metadata.version("torch")


def test_no_torch_no_gpu_section(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    assert gpu_info() is None


def test_versions_without_importing_heavy_libraries():
    code = ("import sys; from oa_core.environment import environment_info; info = environment_info(gpu=False); "
            "print([m for m in ('torch', 'transformers', 'datasets', 'triton', 'deepspeed') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
