import sys
import types
from importlib import metadata

import pytest

from oa_core import hookimpl
from oa_core.errors import OAError, PluginError
from oa_core.extensions import DatasetFormat
from oa_core.plugins import PluginManager
from oa_core.schema import Text


def plugin(name, **hooks):
    mod = types.SimpleNamespace(name=name, **{k: hookimpl(v) for k, v in hooks.items()})
    return mod


def text_format(register):
    register("plain", DatasetFormat(Text, lambda row: {"text": row["text"]}))


def test_builtins_register_through_hooks(make_manager):
    reg = make_manager().registry()
    assert "oa.conversation" in reg.names("dataset_format")
    entry = reg.entry("dataset_format", "oa.text")
    assert entry.provider.distribution == "oa-core"
    assert entry.obj.record_type is Text


def test_plugin_registration_and_provider(make_manager):
    reg = make_manager(plugin("mine", register_dataset_formats=text_format)).registry()
    entry = reg.entry("dataset_format", "plain")
    assert entry.provider.plugin == "mine"
    assert entry.obj.parse({"text": "x"}) == {"text": "x"}


def test_duplicate_name_names_both_plugins(make_manager):
    reg = make_manager(
        plugin("first", register_dataset_formats=text_format),
        plugin("second", register_dataset_formats=text_format),
    ).registry()
    with pytest.raises(PluginError) as e:
        reg.get("dataset_format", "plain")
    assert "'first'" in str(e.value) and "'second'" in str(e.value)
    assert reg.names("dataset_format").count("plain") == 1


def test_broken_hook_is_recorded_and_others_still_register(make_manager):
    def broken(register):
        raise RuntimeError("boom")

    reg = make_manager(
        plugin("bad", register_reward_functions=broken),
        plugin("good", register_dataset_formats=text_format),
    ).registry()
    assert [f.plugin for f in reg.failures] == ["bad"]
    assert "boom" in str(reg.failures[0]) and "register_reward_functions" in str(reg.failures[0])
    assert "plain" in reg.names("dataset_format")


def test_unknown_name_suggests(make_manager):
    reg = make_manager().registry()
    with pytest.raises(OAError, match="did you mean 'oa.conversation'"):
        reg.get("dataset_format", "oa.conversatoin")


def test_entry_point_discovery_finds_example_plugin():
    reg = PluginManager().registry()
    entry = reg.entry("reward_function", "example.numeric_answer")
    assert entry.provider.distribution == "oa-plugin-example"
    assert entry.provider.version == metadata.version("oa-plugin-example")
    assert "example" in reg.names("config_section")


def test_broken_entry_point_is_reported_by_name(monkeypatch):
    good = metadata.EntryPoint("fine", "oa_plugin_example.plugin", "oa")
    bad = metadata.EntryPoint("broken", "no_such_module_xyz.plugin", "oa")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [good, bad])
    pm = PluginManager()
    assert [f.plugin for f in pm.load_failures] == ["broken"]
    assert "no_such_module_xyz" in pm.load_failures[0].error
    assert "example.gsm8k" in pm.registry().names("dataset_format")


def test_disable_env(monkeypatch):
    monkeypatch.setenv("OA_DISABLE_PLUGINS", "example")
    reg = PluginManager().registry()
    assert "example.gsm8k" not in reg.names("dataset_format")


def test_core_imports_nothing_heavy():
    import subprocess

    code = (
        "import sys, oa_core, oa_core.config, oa_core.schema, oa_core.plugins; "
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'numpy', 'triton') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_an_entry_of_the_wrong_type_is_left_out_and_named(make_manager):
    def careless(register):
        register("bare", lambda row: {"text": row["text"]})  # a function, not a DatasetFormat
        register("plain", DatasetFormat(Text, lambda row: {"text": row["text"]}))

    reg = make_manager(plugin("careless", register_dataset_formats=careless)).registry()
    assert "plain" in reg.names("dataset_format") and "bare" not in reg.names("dataset_format")
    (failure,) = reg.failures
    assert failure.plugin == "careless" and "dataset format 'bare' must be an oa_core.extensions.DatasetFormat" in str(failure)


def test_every_register_hook_has_a_kind_and_a_type():
    from oa_core import hookspecs
    from oa_core.extensions import TYPES

    hooks = {name for name in dir(hookspecs) if name.startswith("register_") and name != "register_commands"}
    assert set(hookspecs.KINDS) == hooks
    assert set(hookspecs.KINDS.values()) == {*TYPES, "config_section"}


def test_a_misspelt_hook_is_a_failure_naming_plugin_hook_and_the_closest_hook(make_manager):
    reg = make_manager(
        plugin("typo", register_reward_function=lambda register: None, register_dataset_formats=text_format),
        plugin("good", register_losses=lambda register: None),
    ).registry()
    (failure,) = reg.failures
    assert str(failure) == ("plugin 'typo' (typo) failed in register_reward_function: no hook has this name, so oa "
                            "never calls it (did you mean 'register_reward_functions'?)")
    assert "plain" in reg.names("dataset_format")  # its other hooks still register


def test_an_unknown_hook_far_from_every_name_points_to_the_hookspecs(make_manager):
    pm = make_manager(plugin("odd", frobnicate=lambda: None))
    (failure,) = pm.load_failures
    assert failure.where == "frobnicate" and "the hooks are listed in oa_core.hookspecs" in failure.error
    pm.unregister("odd")
    assert pm.load_failures == [] and pm.registry().failures == []


def test_an_optional_unknown_hook_is_not_a_failure(make_manager):
    from oa_core.hookspecs import hookimpl as impl

    extra = types.SimpleNamespace(name="extra", register_later=impl(optionalhook=True)(lambda register: None))
    assert make_manager(extra).registry().failures == []


def test_the_installed_plugins_implement_only_known_hooks():
    pm = PluginManager()
    pm.pm.check_pending()  # pluggy's own check: raises on a hook implementation that matches no spec
    assert pm.load_failures == []
