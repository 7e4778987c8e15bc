import pytest
import torch

from oa_core import hookimpl
from oa_core.errors import OAError, PluginError
from oa_core.extensions import ModelPatch, PatchResult
from oa_core.plugins import PluginManager, Provider
from oa_train.model.patcher import apply_patches


def _scale_mlp(model, factor=2.0):
    for layer in model.model.layers:
        forward = layer.mlp.forward
        layer.mlp.forward = lambda x, _f=forward: _f(x) * factor
    return f"scaled {len(model.model.layers)} MLP outputs by {factor}"


class PatchPlugin:
    @hookimpl
    def register_model_patches(self, register):
        register("scale_mlp", ModelPatch(apply=_scale_mlp, architectures=("llama", "mistral")))
        register("gpt2_only", ModelPatch(apply=lambda model: "never", architectures=("gpt2",)))
        register("broken", ModelPatch(apply=lambda model: 1 / 0))


@pytest.fixture(scope="module")
def registry():
    pm = PluginManager(entry_points=False)
    pm.register(PatchPlugin(), "patches-test", Provider("patches-test", "oa-test-patches", "1.2.3"))
    return pm.registry()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 9, 2]])).logits


def test_patch_applied_by_name_and_listed_for_the_manifest(load, registry):
    model = load("llama_untied")
    before = _logits(model)
    manifest, provides = apply_patches(model, ["scale_mlp"], registry, options={"scale_mlp": {"factor": 3.0}})
    assert manifest == [
        {
            "name": "scale_mlp",
            "provider": "oa-test-patches",
            "version": "1.2.3",
            "plugin": "patches-test",
            "applied": True,
            "provides": [],
            "description": "scaled 2 MLP outputs by 3.0",
        }
    ]
    assert provides == {} and not torch.allclose(before, _logits(model))


def test_a_patch_result_says_whether_it_applied_and_what_it_provides(load):
    def head_ce(hidden, weight, labels, reduction="sum"):
        return torch.nn.functional.cross_entropy(hidden @ weight.T, labels, reduction=reduction)

    class Plugin:
        @hookimpl
        def register_model_patches(self, register):
            register("skipped", ModelPatch(apply=lambda model: PatchResult("self-test failed", applied=False)))
            register("ce", ModelPatch(apply=lambda model: PatchResult("fused CE", provides={"linear_ce": head_ce})))

    pm = PluginManager(entry_points=False)
    pm.register(Plugin(), "results-test")
    manifest, provides = apply_patches(load("llama_untied"), ["skipped", "ce"], pm.registry())
    assert [(m["applied"], m["provides"], m["description"]) for m in manifest] == [
        (False, [], "self-test failed"), (True, ["linear_ce"], "fused CE")]
    assert provides == {"linear_ce": head_ce}


def test_unsupported_architecture_refused_before_anything_is_applied(load, registry):
    model = load("llama_untied")
    before = _logits(model)
    with pytest.raises(OAError) as err:
        apply_patches(model, ["scale_mlp", "gpt2_only"], registry)
    assert str(err.value).startswith(
        "model.patches.1: patch 'gpt2_only' does not support architecture 'llama'"
    )
    assert "\n" not in str(err.value) and err.value.hint
    assert torch.equal(before, _logits(model))


def test_unknown_patch_names_the_key_and_suggests(load, registry):
    with pytest.raises(
        OAError, match=r"^model\.patches\.0: unknown model patch 'scale_mpl' \(did you mean 'scale_mlp'\?\)"
    ):
        apply_patches(load("llama_untied"), ["scale_mpl"], registry)


def test_failing_patch_is_reported_by_name_and_provider(load, registry):
    with pytest.raises(
        PluginError, match=r"^model\.patches\.0: patch 'broken' \(oa-test-patches\) failed: ZeroDivisionError"
    ):
        apply_patches(load("llama_untied"), ["broken"], registry)
