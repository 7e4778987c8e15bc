"""Bad preference data and configs: what is dropped or cut is counted and shown, what cannot train is one line
naming the file and key with a hint, before anything is loaded where the config alone tells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oa_core.errors import ConfigError, OAError
from oa_train.training.loop import train


def test_identical_pairs_are_dropped_long_prompts_cut_and_empty_replies_kept(run_config, write_jsonl, toy_pairs,
                                                                              capsys):
    rows = toy_pairs(24) + [
        {"prompt": "Same?", "chosen": "Same.", "rejected": "Same."},  # no preference: dropped
        {"prompt": "word " * 200 + "Do you like lamps?", "chosen": "Yes, very much.", "rejected": "No."},  # cut
        {"prompt": "Anything?", "chosen": "", "rejected": "Something harmful."},  # saying nothing is preferred
    ]
    data = [{"path": write_jsonl("bad.jsonl", rows), "format": "preference"}]
    loaded = run_config("bad", datasets=data, max_steps=1, overrides=["data.max_drop_fraction=0.1"])
    train(loaded)
    out = capsys.readouterr().out
    assert "27 groups, 26 kept (1 with the prompt cut, 0 with a reply cut" in out
    assert "1 dropped (1 with identical replies, 0 with an empty reply)" in out
    manifest = json.loads((Path(loaded.config.output_dir) / "run_manifest.json").read_text())
    report = manifest["data"]["datasets"]["train"][data[0]["path"]]
    assert (report["kept"], report["dropped_identical"], report["prompt_cut"]) == (26, 1, 1)
    assert manifest["data"]["train_pairs"] == 26

    with pytest.raises(OAError, match=r"datasets\.0: 1 of 27 groups of .*bad\.jsonl were dropped \(1 with identical "
                                      r"replies, 0 with an empty reply\), more than data\.max_drop_fraction 0\.01"):
        train(run_config("strict", datasets=data, max_steps=1, overrides=["data.max_drop_fraction=0.01"]))


def test_kto_needs_both_labels(run_config, write_jsonl, capsys):
    from oa_cli.main import main

    only_good = [{"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": True} for i in range(6)]
    path = write_jsonl("good.jsonl", only_good)
    loaded = run_config("kto", method="kto", datasets=[{"path": path, "format": "kto"}])
    assert main(["train", str(loaded.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: datasets: KTO needs desirable and undesirable completions; the training data ({path}) "
                   "has 6 desirable and 0 undesirable (hint: add undesirable (label false) completions (or preference "
                   "pairs, whose rejected replies count as undesirable))"]


@pytest.mark.parametrize(("method", "train", "extra", "problem"), [
    ("dpo", {"loss_type": ["sigmod"]}, {}, "train.loss_type.0: unknown loss 'sigmod' (did you mean 'sigmoid'?"),
    ("dpo", {"loss_type": ["sigmoid", "kto"]}, {},
     "train.loss_type.1: 'kto' is a unpaired loss; method 'dpo' takes preference losses"),
    ("kto", {"loss_type": "ipo"}, {}, "train.loss_type: 'ipo' is a preference loss; method 'kto' takes unpaired losses"),
    ("dpo", {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, {}, "loss_weights has 1 entries, loss_type 2"),
    ("dpo", {"loss_type": "exo_pair"}, {}, "train.label_smoothing: exo_pair needs label_smoothing > 0"),
    ("dpo", {"reference": {"source": "adapters_off"}}, {}, "train.reference.source: adapters_off needs a PEFT adapter"),
    ("dpo", {}, {"data": {"packing": True}}, "data.packing: method 'dpo' packs the sequences of a micro-batch itself"),
    ("orpo", {}, {"datasets": [{"path": "examples/data/oasst/en_100_tree.jsonl", "format": "oasst.ranked"}]},
     "datasets.0.format: 'oasst.ranked' gives RankedReplies records, which method 'orpo' does not train on (it "
     "takes PreferencePair)"),
    ("simpo", {"reference": {"precompute": True}}, {}, "train.reference: unknown key"),
])
def test_config_problems_are_named_before_anything_loads(method, train, extra, problem, tmp_path, tiny_model_dir,
                                                         repo_root, monkeypatch):
    import yaml

    from oa_core.config import load_config

    monkeypatch.chdir(repo_root)
    doc = {"method": method, "output_dir": str(tmp_path / "out"), "model": {"path": tiny_model_dir},
           "datasets": [{"path": "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz", "format": "hh_rlhf"}],
           "data": {"chat_template": "chatml", "max_length": 256}, "train": train}
    for key, value in extra.items():
        doc[key] = value if key == "datasets" else doc[key] | value
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "run.yaml")
    assert any(problem in p for p in e.value.problems), e.value.problems
