"""Packed rows (flattened, with position ids) give the same per-token losses as the samples alone."""

from __future__ import annotations

import pytest
import torch

from oa_train.training.batching import IGNORE, collate, micro_batches, num_targets


def _model(tiny_llama_config, attn):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(attn_implementation=attn)).eval()


def _packed(rows):
    return {
        "input_ids": [t for r in rows for t in r["input_ids"]],
        "labels": [t for r in rows for t in r["labels"]],
        "position_ids": [p for r in rows for p in range(len(r["input_ids"]))],
    }


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_matches_samples_run_separately(qa_data, tiny_llama_config, attn, target_losses):
    model = _model(tiny_llama_config, attn)
    rows = qa_data[0][:3]
    alone = [target_losses(model, collate([r])) for r in rows]
    batch = collate([_packed(rows[:2]), rows[2]])  # two packed rows + one plain row, flattened
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    packed = target_losses(model, batch)
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)
    assert num_targets(batch) == sum(len(x) for x in alone)

    # control: the same tokens without position ids attend across samples and give other losses
    naive = {k: v for k, v in batch.items() if k != "position_ids"}
    assert not torch.allclose(target_losses(model, naive), packed, atol=1e-3)


def test_padded_batch_matches_samples_run_separately(qa_data, tiny_llama_config, target_losses):
    model = _model(tiny_llama_config, "sdpa")
    rows = qa_data[0][:4]
    batch = collate(rows, pad_id=0)
    lengths = {len(r["input_ids"]) for r in rows}
    assert len(lengths) > 1 and batch["input_ids"].shape[1] == max(lengths)
    padded = target_losses(model, batch)
    alone = torch.cat([target_losses(model, collate([r])) for r in rows])
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_micro_batches_cover_each_example_once_per_epoch_across_ranks():
    ranks = [micro_batches(10, batch_size=2, num_processes=2, rank=r, epoch=3, seed=1) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    counted = sorted(s.index for mbs in ranks for mb in mbs for s in mb if s.counted)
    assert counted == list(range(10))
    fillers = [s for mbs in ranks for mb in mbs for s in mb if not s.counted]
    assert len(fillers) == 2
    assert ranks[0] == micro_batches(10, batch_size=2, num_processes=2, rank=0, epoch=3, seed=1)
    assert ranks[0] != micro_batches(10, batch_size=2, num_processes=2, rank=0, epoch=4, seed=1)


def test_first_token_of_each_packed_sample_is_no_target():
    row = {"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, 7, 8, 9], "position_ids": [0, 1, 2, 0, 1]}
    assert collate([row])["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_pose_rows_match_samples_run_alone(qa_data, tiny_llama_config, attn, target_losses):
    """PoSE positions jump inside a sample; transformers would take each jump as a new sample, so the
    collated row carries an explicit block-diagonal causal mask. Each sample alone (full causal attention,
    same positions) must give the same per-token losses."""
    import random

    from oa_data.pose import pose_position_ids

    model = _model(tiny_llama_config, attn)
    rng = random.Random(0)
    rows = [dict(r, position_ids=pose_position_ids(r["input_ids"], 200, num_chunks=3, rng=rng)) for r in qa_data[0][:3]]
    assert all(any(b - a > 1 for a, b in zip(r["position_ids"], r["position_ids"][1:], strict=False)) for r in rows)
    alone = []
    for r in rows:
        one = collate([r])
        plain = {"input_ids": one["input_ids"], "position_ids": one["position_ids"],
                 "attention_mask": torch.ones_like(one["input_ids"]), "labels": one["labels"]}
        alone.append(target_losses(model, plain))
    batch = collate(rows)
    assert batch["attention_mask"].shape == (1, 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    packed = target_losses(model, batch)
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)

    # control: without the mask transformers splits every sample at its position jumps
    split = {k: v for k, v in batch.items() if k != "attention_mask"}
    assert not torch.allclose(target_losses(model, split), packed, atol=1e-3)


def test_pose_rows_refuse_attention_that_reads_only_positions(qa_data, tiny_llama_config, target_losses):
    from oa_core.errors import OAError

    model = _model(tiny_llama_config, "sdpa")
    model.config._attn_implementation = "flash_attention_2"
    row = dict(qa_data[0][0], position_ids=[0, 1, 5, 6] + list(range(7, 3 + len(qa_data[0][0]["input_ids"]))))
    with pytest.raises(OAError, match="PoSE position ids need sdpa or eager"):
        target_losses(model, collate([row]))
