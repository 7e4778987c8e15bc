import pytest
import torch
import yaml
from pydantic import BaseModel

from oa_core import hookimpl
from oa_core.config import load_config
from oa_core.errors import OAError
from oa_core.extensions import Method, ModelPatch
from oa_core.plugins import PluginManager, Provider
from oa_train.model import prepare_model, register_sections
from oa_train.model.peft_setup import save_adapter


class NoopTrain(BaseModel):
    pass


class TagSettings(BaseModel):
    label: str = "default"


def _tag(model, label="none"):
    model.config.oa_patched = label
    return f"tagged the config with {label}"


class Plugin:
    @hookimpl
    def register_config_sections(self, register):
        register_sections(register)
        register("tag", TagSettings)

    @hookimpl
    def register_methods(self, register):
        register("noop", Method(config=NoopTrain, objective=lambda: None))

    @hookimpl
    def register_model_patches(self, register):
        register("tag.config", ModelPatch(apply=_tag, architectures=("llama",)))


def _parts(prepared):
    return prepared.model, prepared.tokenizer.tokenizer, prepared.manifest


@pytest.fixture(scope="module")
def registry():
    pm = PluginManager(entry_points=False)
    pm.register(Plugin(), "prepare-test", Provider("prepare-test", "oa-test", "0.0.1"))
    return pm.registry()


@pytest.fixture
def config(tmp_path, registry, model_dirs, tokenizer_path):
    def _config(**sections):
        doc = {"method": "noop", "model": {"path": model_dirs["llama_tied"], "dtype": "float32"}}
        doc["tokenizer"] = {"path": tokenizer_path}
        for key, value in sections.items():
            doc[key] = doc.get(key, {}) | value if isinstance(value, dict) else value
        path = tmp_path / f"run{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_config(path, registry=registry).config

    return _config


def test_lora_run_with_new_tokens_and_patch(config, registry, capsys, tmp_path):
    cfg = config(
        model={"patches": ["tag.config"]},
        tag={"label": "from-section"},
        peft={"method": "lora", "target_modules": ["q_proj", "v_proj"]},
        new_tokens={"tokens": [{"token": "<|user|>", "init": "copy", "source": "</s>"}]},
    )
    model, tokenizer, manifest = _parts(prepare_model(cfg, registry=registry))
    assert len(tokenizer) == 32001 and model.get_input_embeddings().weight.shape[0] == 32001
    assert model.config.oa_patched == "from-section"
    assert manifest["patches"] == [
        {
            "name": "tag.config",
            "provider": "oa-test",
            "version": "0.0.1",
            "plugin": "prepare-test",
            "applied": True,
            "provides": [],
            "description": "tagged the config with from-section",
        }
    ]
    assert manifest["new_tokens"] == {"<|user|>": {"id": 32000, "init": "copy"}} and manifest["peft"] == "lora"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (
        manifest["trainable"]["trainable"]
        == trainable
        == manifest["trainable"]["groups"]["adapter"]["trainable"]
    )
    assert "adapter" in capsys.readouterr().out

    # continue the saved adapter: its tokenizer (with the new token) and rows come back
    torch.nn.init.normal_(model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight)
    x = torch.tensor([[1, 32000, 450, 2]])
    with torch.no_grad():
        expected = model.eval()(input_ids=x).logits
    save_adapter(model, tokenizer, tmp_path / "adapter")
    again, tok2, manifest2 = _parts(prepare_model(
        config(model={"adapter_path": str(tmp_path / "adapter")}, tokenizer={"path": None}),
        registry=registry,
        show_table=False,
    ))
    assert tok2.convert_tokens_to_ids("<|user|>") == 32000
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=x).logits, expected)
    assert manifest2["trainable"]["trainable"] == trainable


def test_full_fine_tuning_with_freezing(config, registry):
    model, _, manifest = _parts(prepare_model(
        config(freeze={"first_n_layers": 1, "embeddings": True}), registry=registry, show_table=False
    ))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in trainable)
    assert manifest["peft"] == "none" and manifest["trainable"]["groups"]["embeddings"]["trainable"] == 0


@pytest.mark.parametrize(
    "sections,message",
    [
        (
            {"peft": {"method": "lora"}, "freeze": {"embeddings": True}},
            r"^freeze: applies to full fine-tuning only",
        ),
        (
            {"model": {"adapter_path": "x"}, "peft": {"method": "lora"}},
            r"^model\.adapter_path: cannot be combined",
        ),
        (
            {"model": {"adapter_path": "/no/adapter"}},
            r"^model\.adapter_path: no adapter \(adapter_config\.json\) in '/no/adapter'",
        ),
        (
            {"model": {"path": "/no/such/model"}},
            r"^model\.path: local model folder '/no/such/model' not found",
        ),
    ],
)
def test_bad_combinations_are_one_line_errors(config, registry, sections, message):
    with pytest.raises(OAError, match=message):
        prepare_model(config(**sections), registry=registry, show_table=False)


def test_saved_adapter_cannot_get_new_tokens(config, registry, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    cfg = config(
        model={"adapter_path": str(tmp_path / "adapter")}, new_tokens={"tokens": [{"token": "<|x|>"}]}
    )
    with pytest.raises(
        OAError, match=r"^new_tokens: a saved adapter \(model\.adapter_path\) cannot get new tokens"
    ):
        prepare_model(cfg, registry=registry, show_table=False)


def test_template_tokens_exist_before_lora_and_train_with_the_adapter(tmp_path, model_dirs, tokenizer_path, alpaca_seed):
    """The chat template's special tokens are added before PEFT: their rows are adapter-trainable."""
    rows = alpaca_seed
    doc = {
        "method": "sft", "model": {"path": model_dirs["llama_tied"], "dtype": "float32"},
        "tokenizer": {"path": tokenizer_path}, "datasets": [{"path": str(rows), "format": "alpaca"}],
        "data": {"chat_template": "chatml"}, "peft": {"method": "lora", "r": 4, "target_modules": ["q_proj"]},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    model, tokenizer, _ = _parts(prepare_model(load_config(path).config, show_table=False))
    ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert min(ids) >= 32000 and model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("trainable_tokens" in n for n in trainable), trainable
    embed = model.get_input_embeddings()
    out = embed(torch.tensor([ids]))
    out.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "trainable_tokens" in n and p.grad is not None]
    assert grads and all(torch.count_nonzero(g) > 0 for g in grads)
