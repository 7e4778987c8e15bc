"""`oa train` with `method: rm`: packed and padded batches give the same loss, a tiny reward model learns a toy
preference on held-out pairs, a LoRA reward model (score head in modules_to_save) reloads and scores the same,
bad records are counted by record, and config mistakes are reported before anything loads."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml

from oa_cli.main import main
from oa_core.config import load_config
from oa_core.errors import ConfigError, OAError
from oa_train.reward.batching import collate_groups


def toy_rows(tmp_path) -> tuple[str, str]:
    """'a+b=' with the right sum chosen over a wrong one; held out: other wrong answers."""
    rows = [{"prompt": f"{a}+{b}=", "chosen": f"{a + b}", "rejected": f"{w}"}
            for a in range(5) for b in range(5) for w in range(10) if w != a + b]
    random.Random(0).shuffle(rows)
    train, held_out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:-48]))
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows[-48:]))
    return str(train), str(held_out)


def write_config(tmp_path, model_dir, name="run", peft=None, **train) -> str:
    train_file, eval_file = toy_rows(tmp_path)
    doc = {"method": "rm", "seed": 0, "output_dir": str(tmp_path / name),
           "model": {"path": model_dir, "type": "seq_cls", "dtype": "float32"},
           "datasets": [{"path": train_file, "format": "preference"}],
           "eval_datasets": [{"path": eval_file, "format": "preference"}],
           "data": {"chat_template": "chatml", "max_length": 64, "cache_dir": str(tmp_path / "cache")},
           "train": {"loss": "pairwise", "per_device_batch_size": 16, "learning_rate": 3e-3, "lr_scheduler": "cosine",
                     "warmup_steps": 5, "logging_steps": 10, "save_steps": None, **train}}
    if peft:
        doc["peft"] = peft
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(rm_objective, classifier):
    rows = [{"prompt_input_ids": [1, 4, 5, 6], "candidate_input_ids": [[7, 8], [9, 10, 11, 2], [12], [13, 14, 15]],
             "ranks": [0, 1, 1, 2], "margin": None},
            {"prompt_input_ids": [1, 20], "candidate_input_ids": [[21, 22, 23, 24, 25], [26, 2]], "ranks": [0, 1],
             "margin": None}]
    model = classifier()
    results = []
    for loss in ("kwise", "pairwise_mean"):
        objective = rm_objective(loss=loss, beta=0.01)
        for packed in (True, False):
            batch = collate_groups(rows, 0, packed=packed)
            model.zero_grad()
            out = objective.loss(model, batch)
            (out.loss / objective.num_units(batch)).backward()
            results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
        assert objective.num_units(batch) == (2 if loss == "kwise" else 5 + 1)  # 6 pairs - 1 tie + 1
    for (loss_a, grads_a), (loss_b, grads_b) in (results[:2], results[2:]):
        torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=0)
        for a, b in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_a_tiny_reward_model_learns_a_toy_preference_on_held_out_pairs(tmp_path, tiny_model_dir):
    assert main(["train", write_config(tmp_path, tiny_model_dir, max_steps=80, eval_steps=40)]) == 0
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [40, 80]
    assert evals[-1]["eval_accuracy"] >= 0.85 and evals[-1]["eval_loss"] < 0.45  # chance: 0.5 and ln 2
    assert {"eval_pair_accuracy", "eval_margin", "eval_kendall_tau", "eval_spearman", "eval_reward_mean",
            "eval_reward_std"} <= set(evals[-1])
    assert all(r["pairs"] == 16 and "margin" in r and "accuracy" in r for r in records if "loss" in r)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["data"]["train_groups"] == 177 and manifest["data"]["eval_groups"] == 48
    assert (out / "loss_curve.png").stat().st_size > 0
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"] and len(saved["id2label"]) == 1


def test_a_lora_reward_model_saves_its_score_head_and_scores_the_same_reloaded(tmp_path, tiny_model_dir):
    from oa_core.config import ModelSettings
    from oa_infer.models import load_adapter, load_model, resize_embeddings
    from oa_infer.sequence_scores import batch_sequences, sequence_scores
    from oa_train.reward.objective import RMObjective
    from oa_train.training.loop import Loop

    path = write_config(tmp_path, tiny_model_dir, peft={"method": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                        max_steps=3)
    objective = RMObjective()
    Loop(load_config(path), objective).run()
    trained = objective.run.model.eval()
    saved = tmp_path / "run" / "model"
    assert json.loads((saved / "adapter_config.json").read_text())["modules_to_save"] == ["classifier", "score"]
    from safetensors.torch import load_file

    head = [k for k in load_file(saved / "adapter_model.safetensors") if "score" in k]
    assert head, "the score head is saved with the adapter"

    base = load_model(ModelSettings(path=tiny_model_dir, type="seq_cls", dtype="float32"), num_labels=1)
    resize_embeddings(base, len(objective.run.tokenizer.tokenizer))
    reloaded = load_adapter(base, str(saved), trainable=False).eval()
    batch = batch_sequences([[1, 300, 400, 2], [1, 500], [1, 32000, 32001, 600]], pad_id=0, packed=True)
    with torch.no_grad():
        torch.testing.assert_close(sequence_scores(reloaded, batch), sequence_scores(trained, batch))
        untrained = load_model(ModelSettings(path=tiny_model_dir, type="seq_cls", dtype="float32"), num_labels=1)
        resize_embeddings(untrained, len(objective.run.tokenizer.tokenizer))
        assert not torch.allclose(sequence_scores(untrained, batch), sequence_scores(trained, batch))


BAD = [
    {"prompt": "q1", "replies": ["only one"]},  # line 1: the format refuses it
    {"prompt": "q2", "replies": ["a", "b", "c"], "scores": [2, 1, 1]},  # a tie: kept, the tied pair untrained
    {"prompt": "q3", "replies": ["a", "b"], "scores": [1, 1]},  # all tied
    {"prompt": "q4", "replies": ["a", "b"]},  # no scores while the others have them
    {"prompt": "q5", "replies": ["a", "  "], "scores": [1, 0]},  # an empty reply
    {"prompt": "q6", "replies": ["same", "same"], "scores": [1, 0]},  # identical replies
    {"prompt": "q7", "replies": ["a", "b", "c", "d", "e", "f", "g"], "scores": [7, 6, 5, 4, 3, 2, 1]},
]


def test_bad_records_are_counted_and_named_never_a_crash(tmp_path, llama_tok):
    import copy

    from oa_data.ranking import prepare_ranking
    from oa_data.tokenizer import prepare_run_tokenizer

    (tmp_path / "ranked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BAD))
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "x", "rejected": "y"}) + "\n"
                                          + json.dumps({"prompt": "p", "chosen": "x", "rejected": "z", "margin": 1.5}) + "\n")
    doc = {"method": "rm", "model": {"path": "unused", "type": "seq_cls"},
           "datasets": [{"path": str(tmp_path / "ranked.jsonl"), "format": "ranked"},
                        {"path": str(tmp_path / "pairs.jsonl"), "format": "preference"}],
           "data": {"chat_template": "chatml", "max_length": 64, "max_drop_fraction": 1.0},
           "train": {"loss": "pairwise", "use_margin": True}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "run.yaml").config
    run_tokenizer = prepare_run_tokenizer(cfg, copy.deepcopy(llama_tok))
    split = prepare_ranking(cfg, run_tokenizer, max_replies=5, use_margin=True)
    ranked, pairs = split.reports.values()
    assert ranked.problems.counts == {"unreadable": 1, "with all replies tied": 1, "without scores": 1}
    assert (ranked.kept, ranked.dropped_identical, ranked.dropped_empty, ranked.tied, ranked.replies_cut) == (2, 1, 1, 1, 1)
    assert ranked.pairs == 2 + 10  # q2: (a, b), (a, c); q7: the best 5 of 7 replies
    lines = "\n".join(ranked.problems.lines)
    assert f"{tmp_path / 'ranked.jsonl'}:1: field 'replies'" in lines and "ranked.jsonl:3: all replies are tied" in lines
    assert pairs.problems.counts == {"without a margin": 1} and pairs.kept == 1
    assert "pairs.jsonl:1: no margin (train.use_margin is on)" in pairs.problems.lines[0]
    assert [r["ranks"] for r in split.rows if len(r["ranks"]) == 3] == [[0, 1, 1]]
    assert sorted(r["margin"] for r in split.rows if r["margin"] is not None) == [1.5]
    text = "\n".join(split.lines("train"))
    assert "2 kept with 12 pairs" in text and "1 over max_replies, 1 with ties" in text and "1 unreadable" in text
    assert "ranked.jsonl:5: a reply has no text" in text and "ranked.jsonl:6: identical replies" in text

    doc["data"]["max_drop_fraction"] = 0.5
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(OAError, match=r"datasets.0: 5 of 7 groups of .*ranked.jsonl were dropped, more than "
                                      r"data.max_drop_fraction 0.5"):
        prepare_ranking(load_config(tmp_path / "run.yaml").config, run_tokenizer, use_margin=True)


@pytest.mark.parametrize(("change", "problem"), [
    ({"model": {"type": "causal"}}, "model.type: method 'rm' trains a sequence classifier"),
    ({"datasets": [{"format": "alpaca"}]}, "datasets.0.format: 'alpaca' gives Conversation records, which method 'rm'"),
    ({"train": {"loss": "softmax_ce"}}, "train.loss: 'softmax_ce' is a 'classification' loss; method 'rm' takes a 'reward'"),
    ({"train": {"loss": "kwiss"}}, "train.loss: unknown loss 'kwiss' (did you mean 'kwise'?)"),
    ({"train": {"center_rewards_coefficient": 0.01}}, "train.center_rewards_coefficient: only the pairwise loss"),
    ({"train": {"use_margin": True}}, "train.use_margin: only the pairwise loss uses margins, not 'kwise'"),
    ({"train": {"min_prompt_length": 64}}, "train.min_prompt_length: 64 leaves no tokens for the replies within "
                                           "data.max_length 64"),
    ({"data": {"packing": True}}, "data.packing: method 'rm' packs each micro-batch itself"),
])
def test_config_mistakes_are_reported_before_loading(tmp_path, tiny_model_dir, change, problem):
    doc = {"method": "rm", "model": {"path": tiny_model_dir, "type": "seq_cls"},
           "datasets": [{"path": str(tmp_path / "d.jsonl"), "format": "ranked"}],
           "data": {"chat_template": "chatml", "max_length": 64}, "train": {}}
    (tmp_path / "d.jsonl").write_text("")
    for key, value in change.items():
        if isinstance(doc[key], list):
            doc[key] = [doc[key][0] | value[0]]
        else:
            doc[key] = doc[key] | value
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_the_tiny_example_config_trains(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    args = ["train", "examples/rm-tiny.yaml", "--set", f"output_dir={tmp_path / 'out'}", "--set", "train.max_steps=2",
            "--set", "train.eval_steps=2", "--set", "train.per_device_batch_size=2", "--set", "data.max_length=256",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "eval_datasets.0.num_samples=8"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["data"]["train_groups"] == 207
    assert manifest["final"]["eval_prompts"] == 8
