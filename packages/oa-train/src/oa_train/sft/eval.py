"""Evaluation on the held-out split: loss and token accuracy (all ranks, summed), and BLEU/ROUGE of
greedy generations for the first ``num_samples`` examples."""

from __future__ import annotations

import torch

from oa_infer.metrics import text_metrics
from oa_train.training.batching import IGNORE, collate, micro_batches, num_targets
from oa_train.training.logprobs import LabelLogProbs


@torch.no_grad()
def evaluate(accelerator, model, examples, *, batch_size: int, pad_id: int) -> dict[str, float]:
    """``eval_loss`` (per supervised token), ``eval_accuracy`` (next-token argmax) and ``eval_tokens``, from the
    logits (the plain route: the argmax needs them)."""
    model.eval()
    plain = LabelLogProbs()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    slots = micro_batches(
        len(examples), batch_size=batch_size, num_processes=accelerator.num_processes,
        rank=accelerator.process_index, shuffle=False,
    )  # every rank runs the same number of forwards (FSDP/ZeRO-3 need that); fillers count nothing
    for mb in slots:
        rows = [examples[s.index] if s.counted else _unsupervised(examples[s.index]) for s in mb]
        batch = {k: v.to(accelerator.device) for k, v in collate(rows, pad_id).items()}
        loss, correct = plain.nll_sum(model, batch)
        totals += torch.tensor([loss.item(), correct.item(), num_targets(batch)], dtype=torch.float64, device=totals.device)
    loss_sum, correct, count = accelerator.reduce(totals, reduction="sum").tolist()
    model.train()
    count = max(count, 1)
    return {"eval_loss": loss_sum / count, "eval_accuracy": correct / count, "eval_tokens": int(count)}


def _unsupervised(ex: dict) -> dict:
    return {**ex, "labels": [IGNORE] * len(ex["labels"])}


def prompt_and_answer(ex: dict) -> tuple[list[int], list[int]]:
    """The tokens before the first supervised span, and that span (the first sample of a packed row)."""
    ids, labels = list(ex["input_ids"]), list(ex["labels"])
    pos = ex.get("position_ids")
    if pos is not None:  # keep the first packed sample only
        end = next((j for j in range(1, len(pos)) if pos[j] == 0), len(pos))
        ids, labels = ids[:end], labels[:end]
    start = next((j for j, t in enumerate(labels) if t != IGNORE and j > 0), None)
    if start is None:
        return ids, []
    stop = next((j for j in range(start, len(labels)) if labels[j] == IGNORE), len(labels))
    return ids[:start], labels[start:stop]


@torch.no_grad()
def generation_metrics(accelerator, model, tokenizer, examples, *, num_samples: int,
                       max_new_tokens: int) -> tuple[dict[str, float], list[dict[str, str]]]:
    """Greedy answers for the first ``num_samples`` eval examples vs their references (every rank runs
    the same generations, so sharded models take part in the collectives): the metrics, and the samples
    (``prompt``, ``prediction``, ``reference``)."""
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    preds, refs, prompts, raw = [], [], [], []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(min(num_samples, len(examples))):
        prompt, answer = prompt_and_answer(examples[i])
        if not answer:
            continue
        ids = torch.tensor([prompt], device=accelerator.device)
        out = net.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad_id,
        )
        prompts.append(tokenizer.decode(prompt, skip_special_tokens=True).strip())
        raw.append(tokenizer.decode(out[0, len(prompt):]))  # special tokens kept: an early end of turn shows
        preds.append(tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip())
        refs.append(tokenizer.decode(answer, skip_special_tokens=True).strip())
    net.train(was_training)
    samples = [{"prompt": p, "prediction": x, "reference": r} for p, x, r in zip(prompts, raw, refs, strict=True)]
    return {f"eval_{k}": v for k, v in text_metrics(preds, refs).items()}, samples
