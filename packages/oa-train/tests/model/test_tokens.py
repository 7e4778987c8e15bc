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
    ids = add_new_tokens(model, tokenizer, NewTokenSettings(tokens=SPECS))
    assert ids == [32000, 32001, 32002] and len(tokenizer) == 32003
    new_in, new_out = _weights(model)
    assert new_in.shape == new_out.shape == (32003, 32)
    torch.testing.assert_close(new_in[ids], _expected_rows(tokenizer, old_in))
    torch.testing.assert_close(new_out[ids], _expected_rows(tokenizer, old_out))
    assert torch.equal(new_in[:32000], old_in) and torch.equal(new_out[:32000], old_out)
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tied == (name == "llama_tied")


def test_new_tokens_are_special_and_never_split(load, tokenizer):
    ids = add_new_tokens(load("llama_untied"), tokenizer, NewTokenSettings(tokens=SPECS[:1]))
    encoded = tokenizer("hi<|copy|>there", add_special_tokens=False).input_ids
    assert ids[0] in encoded
    assert "<|copy|>" not in tokenizer.decode(encoded, skip_special_tokens=True)


def test_existing_tokens_keep_their_rows_and_pad_to_multiple(load, tokenizer):
    model = load("llama_untied")
    old_in, _ = _weights(model)
    settings = NewTokenSettings(
        tokens=[NewToken(token="</s>"), NewToken(token="<|new|>")], pad_to_multiple_of=64
    )
    ids = add_new_tokens(model, tokenizer, settings)
    assert ids == [tokenizer.eos_token_id, 32000]
    new_in, _ = _weights(model)
    assert new_in.shape[0] == 32064
    assert torch.equal(new_in[:32000], old_in)
    torch.testing.assert_close(new_in[32000], old_in.mean(0))


def test_copy_source_must_be_one_token(load, tokenizer):
    settings = NewTokenSettings(tokens=[NewToken(token="<|x|>", init="copy", source="hello world")])
    with pytest.raises(OAError, match=r"^new_tokens\.tokens\.0\.source: 'hello world' is not a single token"):
        add_new_tokens(load("llama_untied"), tokenizer, settings)
    assert "<|x|>" not in tokenizer.get_vocab()
