"""`oa train` with `method: classification`: the loss equals the model's own (transformers) loss, a tiny
classifier learns held-out texts with accuracy, macro-F1 and a per-class table, multi-label trains, labels that
do not fit are counted by record, and config mistakes are reported before loading."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch
import yaml

from oa_cli.main import main
from oa_core.config import load_config
from oa_core.errors import ConfigError

WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "paper"]
MARKERS = ["red", "blue", "gold"]


def texts(n: int, multi: bool, seed: int) -> list[dict]:
    """Random words and colour markers; the label is the marker (single) or the markers present (multi)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(WORDS, 4)
        found = sorted(rng.sample(range(3), rng.randrange(0, 3))) if multi else [rng.randrange(3)]
        for k in found:
            words.insert(rng.randrange(len(words) + 1), MARKERS[k])
        out.append({"text": " ".join(words), "label": [MARKERS[k] for k in found] if multi else MARKERS[found[0]]})
    return out


def write_config(tmp_path, model_dir, multi: bool = False, **train) -> str:
    files = {}
    for split, n, seed in (("train", 240, 0), ("eval", 60, 1)):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in texts(n, multi, seed)))
    spec = {"format": "classification", "options": {"label_names": MARKERS}}
    doc = {"method": "classification", "seed": 0, "output_dir": str(tmp_path / "run"),
           "model": {"path": model_dir, "type": "seq_cls", "dtype": "float32"},
           "datasets": [{"path": str(files["train"]), **spec}], "eval_datasets": [{"path": str(files["eval"]), **spec}],
           "data": {"chat_template": "chatml", "max_length": 64, "cache_dir": str(tmp_path / "cache")},
           "train": {"num_labels": 3, "problem_type": "multi_label" if multi else "single_label",
                     "per_device_batch_size": 16, "learning_rate": 3e-3, "lr_scheduler": "cosine", "warmup_steps": 5,
                     "logging_steps": 10, "save_steps": None, **train}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    return str(tmp_path / "run.yaml")


@pytest.mark.parametrize("multi", [False, True])
def test_the_loss_is_the_models_own_loss(classifier, multi):
    """transformers' LlamaForSequenceClassification loss (cross-entropy / BCE, mean) on a right-padded batch with a
    pad distinct from every last token, ours on a packed row."""
    from oa_core.plugins import get_registry
    from oa_infer.sequence_scores import batch_sequences
    from oa_train.classify.config import ClassificationConfig
    from oa_train.classify.objective import ClassificationObjective

    model = classifier(num_labels=3)
    model.config.problem_type = "multi_label_classification" if multi else "single_label_classification"
    tc = ClassificationConfig(num_labels=3, problem_type="multi_label" if multi else "single_label")
    objective = ClassificationObjective()
    objective.run = SimpleNamespace(train=tc, pad_id=0)
    objective.loss_fn, objective.multi_label = get_registry().get("loss", tc.loss).fn, multi
    rows = [{"input_ids": [1, 5, 9, 2], "label": [0, 2] if multi else 2},
            {"input_ids": [1, 7], "label": [] if multi else 0},
            {"input_ids": [1, 3, 4, 8, 6, 11, 2], "label": [1] if multi else 1}]
    batch = objective.collate(rows)
    ours = objective.loss(model, batch).loss / objective.num_units(batch)
    padded = batch_sequences([r["input_ids"] for r in rows], pad_id=0)
    theirs = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                   labels=batch["class_labels"].double() if multi else batch["class_labels"]).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_a_tiny_classifier_learns_held_out_texts(tmp_path, tiny_model_dir, capsys):
    assert main(["train", write_config(tmp_path, tiny_model_dir, max_steps=30, eval_steps=30)]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]
    assert final["eval_accuracy"] >= 0.9 and final["eval_macro_f1"] >= 0.9  # chance: 1/3
    assert {"eval_f1_red", "eval_f1_blue", "eval_f1_gold"} <= set(final) and final["examples"] == 16
    out = capsys.readouterr().out
    assert "class            precision    recall        f1   support" in out and "\nred " in out


def test_multi_label_trains(tmp_path, tiny_model_dir):
    assert main(["train", write_config(tmp_path, tiny_model_dir, multi=True, max_steps=10, eval_steps=10)]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["labels"] == 16 * 3 and records[-1]["eval_loss"] < 0.69  # BCE per label; chance ln 2
    assert "eval_macro_f1" in records[-1]


def test_labels_that_do_not_fit_are_counted_by_record(tmp_path, llama_tok):
    import copy

    from oa_data.classification import prepare_classification
    from oa_data.tokenizer import prepare_run_tokenizer

    rows = [{"text": "fine", "label": 1}, {"text": "too far", "label": 3}, {"text": "named", "label": "pos"},
            {"text": "several", "label": [0, 1]}, {"text": "   ", "label": 0}, {"text": "no label"},
            {"messages": [{"role": "user", "content": "a chat"}], "label": 2}, {"text": "long " * 40, "label": 0}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"method": "classification", "model": {"path": "unused", "type": "seq_cls"},
           "datasets": [{"path": str(tmp_path / "d.jsonl"), "format": "classification"}],
           "data": {"chat_template": "chatml", "max_length": 16, "max_drop_fraction": 1.0}, "train": {"num_labels": 3}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "run.yaml").config
    split = prepare_classification(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(llama_tok)), num_labels=3)
    (report,) = split.reports.values()
    assert report.problems.counts == {"with a label that does not fit": 3, "empty": 1, "unreadable": 1}
    assert (report.kept, report.truncated) == (3, 1)
    assert sorted(r["label"] for r in split.rows) == [0, 1, 2] and max(len(r["input_ids"]) for r in split.rows) == 16
    lines = "\n".join(report.problems.lines)
    assert "d.jsonl:2: label 3 is outside 0..2 (train.num_labels 3)" in lines
    assert "d.jsonl:3: label 'pos' is a name (give the format's options.label_names)" in lines
    assert "d.jsonl:4: a list of labels (set train.problem_type: multi_label)" in lines


@pytest.mark.parametrize(("train", "options", "problem"), [
    ({"num_labels": 1}, {}, "train.num_labels: single_label classification needs at least 2 classes"),
    ({"num_labels": 3, "class_weights": [1, 2]}, {}, "train.class_weights: 2 weights for 3 classes"),
    ({"num_labels": 3}, {"label_names": ["a", "b"]}, "datasets.0.options.label_names: 2 names for 3 classes"),
    ({"loss": "sigmoid_bce"}, {}, "train.loss: 'sigmoid_bce' is a multi_label loss, train.problem_type is single_label"),
    ({"loss": "kwise"}, {}, "train.loss: 'kwise' is a 'reward' loss; method 'classification' takes a 'classification'"),
])
def test_config_mistakes_are_reported_before_loading(tmp_path, tiny_model_dir, train, options, problem):
    (tmp_path / "d.jsonl").write_text("")
    doc = {"method": "classification", "model": {"path": tiny_model_dir, "type": "seq_cls"},
           "datasets": [{"path": str(tmp_path / "d.jsonl"), "format": "classification", "options": options}],
           "train": train}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert any(problem in p for p in err.value.problems), err.value.problems
