"""Scores are read at the last token of every sequence: right- and left-padded batches and packed rows give the
scores of each sequence run alone, also when pad and eos share an id (where Hugging Face's own pooling reads
an earlier token)."""

from __future__ import annotations

import pytest
import torch

from oa_core.errors import OAError
from oa_infer.sequence_scores import batch_sequences, last_token_index, sequence_scores

EOS = 2
SEQUENCES = [[1, 5, 9, 2], [1, 7], [1, 3, 4, 8, 6, 11, 2], [1, 2, 12]]  # the first and third end with eos


@pytest.fixture(scope="module")
def classifier(tiny_llama_config):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    config = tiny_llama_config(num_labels=3, pad_token_id=EOS, vocab_size=64)
    config._attn_implementation = "sdpa"
    return LlamaForSequenceClassification(config).double().eval()


def alone(model, ids: list[int]) -> torch.Tensor:
    """The score head at the last position of one unpadded sequence (no pooling rule involved)."""
    hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
    return model.score(hidden)[0, -1]


def test_last_token_index_of_padded_and_packed_batches():
    padded = {"attention_mask": torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]])}
    assert last_token_index(padded).tolist() == [2, 7, 8]
    packed = {"position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])}
    assert last_token_index(packed).tolist() == [2, 4, 8]
    assert last_token_index({"position_ids": torch.tensor([[0, 1, 0]])}).tolist() == [1, 2]
    with pytest.raises(OAError, match="no tokens"):
        last_token_index({"attention_mask": torch.tensor([[1, 1], [0, 0]])})


@pytest.mark.parametrize("layout", ["right", "left", "packed"])
def test_each_sequence_scores_as_it_does_alone(classifier, layout):
    expected = torch.stack([alone(classifier, s) for s in SEQUENCES])
    batch = batch_sequences(SEQUENCES, pad_id=EOS, packed=layout == "packed",
                            padding_side="left" if layout == "left" else "right")
    with torch.no_grad():
        scores = sequence_scores(classifier, batch)
    assert scores.shape == (len(SEQUENCES), 3)
    torch.testing.assert_close(scores, expected.detach(), rtol=0, atol=1e-10)


def test_hugging_face_pooling_reads_a_pad_position_when_pad_is_eos(classifier):
    """The bug class the last-token rule avoids: HF takes the last token that is not ``pad_token_id``."""
    expected = torch.stack([alone(classifier, s) for s in SEQUENCES])
    batch = batch_sequences(SEQUENCES, pad_id=EOS)
    with torch.no_grad():
        pooled = classifier(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ends_with_eos = [s[-1] == EOS for s in SEQUENCES]
    for i, wrong in enumerate(ends_with_eos):
        assert torch.allclose(pooled[i], expected[i]) != wrong


def test_scores_keep_gradients_and_empty_sequences_are_refused(classifier):
    batch = batch_sequences(SEQUENCES[:2], pad_id=0, packed=True)
    scores = sequence_scores(classifier, batch)
    scores.sum().backward()
    assert classifier.score.weight.grad is not None
    classifier.zero_grad(set_to_none=True)
    with pytest.raises(OAError, match="empty sequence"):
        batch_sequences([[1, 2], []], pad_id=0)
