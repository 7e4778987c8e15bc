"""score(): reward-model and classifier scores read at each sequence's last non-pad token."""

from __future__ import annotations

import pytest
import torch

from oa_infer.scoring import score

TEXTS = ["Short", "A much longer text than the others, with many more tokens in it", "Mid length text",
         [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]


@pytest.fixture(scope="module")
def reward_model(tiny_llama_config):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(1)
    return LlamaForSequenceClassification(tiny_llama_config(num_labels=1)).eval()


def alone(model, ids: list[int]) -> float:
    """The model's own score of one unpadded sequence (its last token)."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, 0].item()


def test_scores_are_read_at_the_last_non_pad_token_with_left_or_right_padding(reward_model, chat_tok):
    from oa_infer.prompts import PromptEncoder

    encoder = PromptEncoder(chat_tok)
    want = [alone(reward_model, encoder.encode(x, add_generation_prompt=False)) for x in TEXTS]
    assert len({len(encoder.encode(x, add_generation_prompt=False)) for x in TEXTS}) == len(TEXTS)
    left = score(reward_model, chat_tok, TEXTS, batch_size=4)
    right = score(reward_model, chat_tok, TEXTS, batch_size=4, padding_side="right")
    assert [s.score for s in left] == pytest.approx(want, abs=1e-5)
    assert [s.score for s in right] == pytest.approx(want, abs=1e-5)
    assert [s.score for s in score(reward_model, chat_tok, TEXTS, batch_size=1)] == pytest.approx(want, abs=1e-5)
    assert encoder.text(TEXTS[3], add_generation_prompt=False) == "user: Hi\nassistant: Hello!\n"


def test_a_sequence_ending_in_the_pad_token_is_still_read_at_its_end(reward_model, chat_tok):
    """pad = eos and a sequence that ends with eos: the model's own pooling (by pad id) would read it too early."""
    import copy

    from oa_infer.prompts import PromptEncoder

    tok = copy.deepcopy(chat_tok)
    tok.pad_token = tok.eos_token
    texts = ["Ends with eos</s>", "A longer text that needs no padding at all here"]
    ids = [PromptEncoder(tok).encode(t, add_generation_prompt=False) for t in texts]
    assert ids[0][-1] == tok.pad_token_id
    got = score(reward_model, tok, texts, batch_size=2)
    assert got[0].score == pytest.approx(alone(reward_model, ids[0]), abs=1e-5)
    assert got[1].score == pytest.approx(alone(reward_model, ids[1]), abs=1e-5)
    reward_model.config.pad_token_id = tok.pad_token_id
    try:
        width = len(ids[1])
        padded = torch.tensor([ids[0] + [tok.pad_token_id] * (width - len(ids[0])), ids[1]])
        mask = torch.tensor([[1] * len(ids[0]) + [0] * (width - len(ids[0])), [1] * width])
        with torch.no_grad():
            naive = reward_model(padded, attention_mask=mask).logits[0, 0].item()
    finally:
        reward_model.config.pad_token_id = 0
    assert naive != pytest.approx(got[0].score, abs=1e-5)  # what reading by pad id gives


def test_classifiers_give_a_label_and_probabilities(tiny_llama_config, chat_tok):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(2)
    model = LlamaForSequenceClassification(tiny_llama_config(
        num_labels=3, id2label={0: "bad", 1: "ok", 2: "good"}, label2id={"bad": 0, "ok": 1, "good": 2})).eval()
    got = score(model, chat_tok, TEXTS[:2], batch_size=2)
    for x, s in zip(TEXTS[:2], got, strict=True):
        ids = [chat_tok.bos_token_id, *chat_tok(x, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            probs = model(torch.tensor([ids])).logits[0].softmax(-1)
        assert s.probs == pytest.approx(probs.tolist(), abs=1e-5)
        assert s.label == int(probs.argmax()) and s.label_name == ["bad", "ok", "good"][s.label] and s.score is None
        assert s.to_dict() == {"label": s.label, "label_name": s.label_name, "probs": s.probs}


def test_a_classification_adapter_on_a_causal_base(model_dir, tmp_path):
    import json

    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import LlamaForSequenceClassification

    from oa_core.errors import OAError
    from oa_core.generation import GeneratorSettings
    from oa_infer.loader import load_pretrained

    torch.manual_seed(0)
    in_memory = get_peft_model(LlamaForSequenceClassification.from_pretrained(model_dir, num_labels=1), LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    in_memory.save_pretrained(tmp_path / "rm")  # saves the score head too (modules_to_save)
    model, tok = load_pretrained(GeneratorSettings(model=model_dir, adapter=str(tmp_path / "rm")), seq_cls=True,
                                 device="cpu")
    texts = ["hello there", "a b c d e f"]
    got = [s.score for s in score(model, tok, texts, batch_size=2)]
    assert got == pytest.approx([s.score for s in score(in_memory, tok, texts, batch_size=1)], abs=1e-5)
    config = json.loads((tmp_path / "rm" / "adapter_config.json").read_text())
    (tmp_path / "rm" / "adapter_config.json").write_text(json.dumps(config | {"task_type": "CAUSAL_LM"}))
    with pytest.raises(OAError, match=r"^adapter: '.*' is a CAUSAL_LM adapter, not a sequence-classification one"):
        load_pretrained(GeneratorSettings(model=model_dir, adapter=str(tmp_path / "rm")), seq_cls=True)
