import pytest

from oa_core.errors import OAError
from oa_train.model.freezing import apply_freeze, parameter_groups, trainable_report
from oa_train.model.settings import FreezeSettings

ATTN = [f"self_attn.{p}_proj.weight" for p in "qkvo"]
MLP = [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
NORMS = ["input_layernorm.weight", "post_attention_layernorm.weight"]


def block(i: int, parts=ATTN + MLP + NORMS) -> set[str]:
    return {f"model.layers.{i}.{p}" for p in parts}


EMB = {"model.embed_tokens.weight", "lm_head.weight"}
ALL = EMB | block(0) | block(1) | {"model.norm.weight"}


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_groups_of_a_llama_model(load):
    groups = parameter_groups(load("llama_untied"))
    assert set(groups) == ALL
    assert {n for n, g in groups.items() if g == "embeddings"} == EMB
    assert {n for n, g in groups.items() if g == "attention"} == block(0, ATTN) | block(1, ATTN)
    assert {n for n, g in groups.items() if g == "feed_forward"} == block(0, MLP) | block(1, MLP)
    assert {n for n, g in groups.items() if g == "layer_norms"} == block(0, NORMS) | block(1, NORMS) | {
        "model.norm.weight"
    }


@pytest.mark.parametrize(
    "settings,frozen",
    [
        ({}, set()),
        ({"embeddings": True}, EMB),
        ({"layer_norms": True}, block(0, NORMS) | block(1, NORMS) | {"model.norm.weight"}),
        ({"attention": True}, block(0, ATTN) | block(1, ATTN)),
        ({"feed_forward": True}, block(0, MLP) | block(1, MLP)),
        ({"first_n_layers": 1}, block(0)),
        ({"first_n_layers": 2, "layers_not_to_freeze": [0]}, block(1)),
        ({"attention": True, "feed_forward": True, "layers_not_to_freeze": [1]}, block(0, ATTN + MLP)),
    ],
)
def test_exact_trainable_set_per_option(load, settings, frozen):
    model = load("llama_untied")
    report = apply_freeze(model, FreezeSettings(**settings))
    assert trainable(model) == ALL - frozen
    params = dict(model.named_parameters())
    assert report.trainable == sum(params[n].numel() for n in ALL - frozen)
    assert report.total == sum(p.numel() for p in params.values())


def test_freezing_everything_is_an_error(load):
    settings = FreezeSettings(embeddings=True, layer_norms=True, attention=True, feed_forward=True)
    with pytest.raises(OAError, match=r"^freeze: these settings freeze every parameter"):
        apply_freeze(load("llama_untied"), settings)


def test_other_group_is_the_classifier_head(load):
    model = load("llama_untied", type="seq_cls")
    apply_freeze(model, FreezeSettings(embeddings=True, layer_norms=True, attention=True, feed_forward=True))
    assert trainable(model) == {"score.weight"}
    apply_freeze(model, FreezeSettings(other=True))
    assert "score.weight" not in trainable(model) and "model.embed_tokens.weight" in trainable(model)


def test_gpt2_names_are_grouped_too(load):
    model = load("gpt2")
    apply_freeze(model, FreezeSettings(attention=True, layer_norms=True, first_n_layers=1))
    expected = {"transformer.wte.weight", "transformer.wpe.weight"} | {
        f"transformer.h.1.mlp.{m}.{w}" for m in ("c_fc", "c_proj") for w in ("weight", "bias")
    }
    assert trainable(model) == expected


def test_report_table_and_data(load):
    model = load("llama_untied")
    report = apply_freeze(model, FreezeSettings(embeddings=True))
    data = report.to_dict()
    assert data["groups"]["embeddings"] == {"trainable": 0, "total": 2 * 32000 * 32}
    assert data["groups"]["attention"]["trainable"] == data["groups"]["attention"]["total"] > 0
    assert data == trainable_report(model).to_dict()
    lines = report.render().splitlines()
    assert lines[1].split()[:3] == ["embeddings", "0", "2,048,000"]
    assert lines[-1].split()[0] == "total"


@pytest.mark.parametrize(
    "settings,key",
    [
        ({"layers_not_to_freeze": [2]}, "freeze.layers_not_to_freeze"),
        ({"first_n_layers": 3}, "freeze.first_n_layers"),
    ],
)
def test_layer_index_out_of_range(load, settings, key):
    with pytest.raises(OAError, match=rf"^{key}: "):
        apply_freeze(load("llama_untied"), FreezeSettings(**settings))
