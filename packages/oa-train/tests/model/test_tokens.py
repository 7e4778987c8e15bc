import pytest
import torch

from oa_core.errors import OAError
from oa_train.model.settings import NewToken, NewTokenSettings
from oa_train.model.tokens import add_new_tokens

SPECS = [
    NewToken(token="<|copy|>", init="copy", source="</s>"),
    NewToken(token="<|mean_of|>", init="mean_of", source="hello world"),
    NewToken(token="<|mean_all|>"),
]


def _weights(model):
    return (
        model.get_input_embeddings().weight.detach().clone(),
        model.get_output_embeddings().weight.detach().clone(),
    )


def _expected_rows(tokenizer, weight):
    words = tokenizer("hello world", add_special_tokens=False).input_ids
    assert len(words) >= 2
    return torch.stack([weight[tokenizer.eos_token_id], weight[words].mean(0), weight.mean(0)])


@pytest.mark.parametrize("name", ["llama_untied", "llama_tied"])
def test_new_rows_follow_each_init_strategy(load, tokenizer, name):
    model = load(name)
    old_in, old_out = _weights(model)
    report = add_new_tokens(model, tokenizer, NewTokenSettings(tokens=SPECS))
    ids = [t["id"] for t in report.values()]
    assert ids == [32000, 32001, 32002] and len(tokenizer) == 32003
    assert [t["init"] for t in report.values()] == ["copy", "mean_of", "mean_all"]
    new_in, new_out = _weights(model)
    assert new_in.shape == new_out.shape == (32003, 32)
    torch.testing.assert_close(new_in[ids], _expected_rows(tokenizer, old_in))
    torch.testing.assert_close(new_out[ids], _expected_rows(tokenizer, old_out))
    assert torch.equal(new_in[:32000], old_in) and torch.equal(new_out[:32000], old_out)
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tied == (name == "llama_tied")


def test_new_tokens_are_special_and_never_split(load, tokenizer):
    report = add_new_tokens(load("llama_untied"), tokenizer, NewTokenSettings(tokens=SPECS[:1]))
    encoded = tokenizer("hi<|copy|>there", add_special_tokens=False).input_ids
    assert report["<|copy|>"]["id"] in encoded
    assert "<|copy|>" not in tokenizer.decode(encoded, skip_special_tokens=True)


def test_existing_tokens_keep_their_rows_and_pad_to_multiple(load, tokenizer):
    model = load("llama_untied")
    old_in, _ = _weights(model)
    settings = NewTokenSettings(
        tokens=[NewToken(token="</s>"), NewToken(token="<|new|>")], pad_to_multiple_of=64
    )
    report = add_new_tokens(model, tokenizer, settings)
    assert report == {"</s>": {"id": tokenizer.eos_token_id, "init": "existing"}, "<|new|>": {"id": 32000, "init": "mean_all"}}
    new_in, _ = _weights(model)
    assert new_in.shape[0] == 32064
    assert torch.equal(new_in[:32000], old_in)
    torch.testing.assert_close(new_in[32000], old_in.mean(0))


def test_copy_source_must_be_one_token(load, tokenizer):
    settings = NewTokenSettings(tokens=[NewToken(token="<|x|>", init="copy", source="hello world")])
    with pytest.raises(OAError, match=r"^new_tokens\.tokens\.0\.source: 'hello world' is not a single token"):
        add_new_tokens(load("llama_untied"), tokenizer, settings)
    assert "<|x|>" not in tokenizer.get_vocab()


def test_tokens_the_tokenizer_step_added_get_the_listed_rule_or_the_default(load, tokenizer):
    """The chat template's tokens are added before the model is built; listing one in new_tokens (the
    turbo-alignment use: initialise <|im_start|> from <s>) still gives its row that rule, and the others get
    ``default_init``."""
    from oa_data.special_tokens import prepare_tokenizer
    from oa_data.templates import BUILTIN_TEMPLATES

    model = load("llama_untied")
    old_in, old_out = _weights(model)
    changes = prepare_tokenizer(tokenizer, (), BUILTIN_TEMPLATES["chatml"])  # the run's tokenizer step
    assert changes.added == ["<|im_start|>", "<|im_end|>"]
    settings = NewTokenSettings(tokens=[NewToken(token="<|im_start|>", init="copy", source="<s>")], default_init="mean_all")
    report = add_new_tokens(model, tokenizer, settings, changes.added)
    assert report == {"<|im_start|>": {"id": 32000, "init": "copy"}, "<|im_end|>": {"id": 32001, "init": "mean_all"}}
    new_in, new_out = _weights(model)
    for new, old in ((new_in, old_in), (new_out, old_out)):
        torch.testing.assert_close(new[32000], old[tokenizer.bos_token_id])
        torch.testing.assert_close(new[32001], old.mean(0))

    random = load("llama_untied")  # default_init: random leaves the model's own initialisation of new rows
    tok2 = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    changes = prepare_tokenizer(tok2, (), BUILTIN_TEMPLATES["chatml"])
    report = add_new_tokens(random, tok2, NewTokenSettings(), changes.added)
    assert {t["init"] for t in report.values()} == {"random"}


def test_a_source_that_is_itself_a_new_token_is_refused(load, tokenizer):
    from oa_data.special_tokens import prepare_tokenizer
    from oa_data.templates import BUILTIN_TEMPLATES

    changes = prepare_tokenizer(tokenizer, (), BUILTIN_TEMPLATES["chatml"])
    settings = NewTokenSettings(tokens=[NewToken(token="<|x|>", init="copy", source="<|im_start|>")])
    with pytest.raises(OAError, match=r"new_tokens.tokens.0.source: '<\|im_start\|>' holds a token this run adds"):
        add_new_tokens(load("llama_untied"), tokenizer, settings, changes.added)
