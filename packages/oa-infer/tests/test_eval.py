"""`oa eval` end to end on tiny random models: every metric, several checkpoints, reports, the best checkpoint,
config problems reported together before any model is loaded."""

from __future__ import annotations

import json
import math

import pytest
import torch

from oa_cli.main import main
from oa_core.errors import ConfigError
from oa_infer.eval_config import load_eval_config

CHAT = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")


def error_line(err: str) -> str:
    (line,) = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("error:")]
    return line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama_config, chatml_tok):
    """A training run's output_dir as oa-train leaves it: checkpoints/checkpoint-{1,2} and model, three tiny
    random Llamas (different seeds) saved with the ChatML tokenizer as oa-train prepares it."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("run", numbered=False)
    for seed, sub in enumerate(("checkpoints/checkpoint-2", "checkpoints/checkpoint-1", "model")):
        torch.manual_seed(seed)
        LlamaForCausalLM(tiny_llama_config(vocab_size=len(chatml_tok))).save_pretrained(root / sub)
        chatml_tok.save_pretrained(root / sub)
    return root


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_llama_config, chatml_tok):
    from transformers import LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("rm")
    torch.manual_seed(7)
    LlamaForSequenceClassification(tiny_llama_config(num_labels=1, vocab_size=len(chatml_tok))).save_pretrained(path)
    chatml_tok.save_pretrained(path)
    return str(path)


def gsm8k(repo_root, **extra) -> dict:
    return {"path": str(repo_root / "examples/data/gsm8k/train_500.jsonl"), "format": "prompt_reference",
            "field_map": {"prompt": "question", "reference": "answer"}, "limit": 3, "name": "gsm8k", **extra}


def write_config(tmp_path, data) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text(json.dumps(data))
    return str(path)


def test_every_metric_on_a_run_reports_each_checkpoint_and_the_best(run_dir, rm_dir, repo_root, tmp_path, capsys,
                                                                    tiny_llama_config, chatml_tok):
    out = tmp_path / "eval"
    config = write_config(tmp_path, {
        "models": [str(run_dir)], "output_dir": str(out), "engine": {"device": "cpu", "batch_size": 2},
        "generation": {"max_new_tokens": 4},
        "datasets": [gsm8k(repo_root, metrics=["bleu", "rouge", "exact_match", "accuracy", "pass_at_k", "reward",
                                               "perplexity"], pass_at_k={"n": 3, "k": [1, 2]})],
        "reward": {"model": rm_dir}, "select": {"metric": "perplexity"}})
    assert main(["eval", config]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    names = ["run/checkpoint-1", "run/checkpoint-2", "run/model"]
    assert [r["checkpoint"] for r in report["checkpoints"]] == names  # by step, then the final model
    assert report["metrics"] == [f"gsm8k/{k}" for k in ("bleu", "rouge1", "rouge2", "rougeL", "exact_match",
                                                        "accuracy", "pass@1", "pass@2", "reward", "perplexity")]
    for row in report["checkpoints"]:
        assert set(row["metrics"]) == set(report["metrics"])
        assert all(isinstance(v, float) and math.isfinite(v) for v in row["metrics"].values())
    ppl = {r["checkpoint"]: r["metrics"]["gsm8k/perplexity"] for r in report["checkpoints"]}
    best = min(ppl, key=ppl.get)
    assert report["best"]["checkpoint"] == best and report["best"]["mode"] == "min"
    assert report["best"]["value"] == ppl[best] and report["best"]["metric"] == "gsm8k/perplexity"
    assert f"best checkpoint by gsm8k/perplexity (min): {report['best']['path']}" in printed
    assert all(name in printed for name in names) and f"{best} *" in printed
    assert all(f"│ {m} " in printed for m in report["metrics"])  # more metrics than checkpoints: a row each

    one = json.loads((out / "run/checkpoint-1/report.json").read_text())
    assert one["step"] == 1 and one["datasets"]["gsm8k"]["records"] == 3
    records = [json.loads(x) for x in (out / "run/checkpoint-1/gsm8k.records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and {"nll", "answer_tokens", "reward", "correct", "exact_match",
                                  "correct_samples"} <= set(records[0])
    samples = [json.loads(x) for x in (out / "run/checkpoint-1/gsm8k.samples.jsonl").read_text().splitlines()]
    assert [len(s["completions"]) for s in samples] == [3, 3, 3]

    # the perplexity is the model's loss on the answer tokens, as training computes it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oa_infer.eval_config import EvalDataset
    from oa_infer.evaluate import answer_examples, load_dataset

    items = load_dataset(EvalDataset(**gsm8k(repo_root, metrics=["perplexity"])))
    tok = AutoTokenizer.from_pretrained(run_dir / "checkpoints/checkpoint-1")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints/checkpoint-1").eval()
    total, tokens = 0.0, 0
    for ids, labels in answer_examples(items, tok):
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        n = sum(1 for x in labels[1:] if x != -100)
        total, tokens = total + loss.item() * n, tokens + n
    assert ppl["run/checkpoint-1"] == pytest.approx(math.exp(total / tokens), rel=1e-4)
    assert sum(r["answer_tokens"] for r in records) == tokens

    # evaluated before with the same settings: not again; other settings: again
    before = (out / "run/checkpoint-1/report.json").stat().st_mtime_ns
    assert main(["eval", config]) == 0
    assert "evaluated before with the same settings" in capsys.readouterr().err
    assert (out / "run/checkpoint-1/report.json").stat().st_mtime_ns == before
    assert json.loads((out / "report.json").read_text()) == report
    # a checkpoint saved again (other weights) is evaluated again, its answers made again; the others are not
    from transformers import LlamaForCausalLM

    torch.manual_seed(11)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(chatml_tok))).save_pretrained(run_dir / "checkpoints/checkpoint-1")
    assert main(["eval", config]) == 0
    err = capsys.readouterr().err
    assert "run/checkpoint-2: evaluated before" in err and "run/checkpoint-1: evaluated before" not in err
    again = json.loads((out / "report.json").read_text())
    assert again["checkpoints"][0]["metrics"] != report["checkpoints"][0]["metrics"]
    assert again["checkpoints"][1:] == report["checkpoints"][1:]
    # other generation settings: every checkpoint again, the earlier answers replaced (not an error)
    assert main(["eval", config, "--set", "generation.max_new_tokens=2"]) == 0
    assert "evaluated before" not in capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "run/model/gsm8k.generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["settings"]["max_new_tokens"] == 2 for r in rows)


def test_config_problems_are_reported_together_naming_file_and_key(run_dir, repo_root, tmp_path, capsys):
    config = write_config(tmp_path, {
        "models": [str(run_dir)], "output_dir": str(tmp_path / "eval"), "engine": {"batch_sise": 2, "model": "x"},
        "datasets": [gsm8k(repo_root, metrics=["bleu", "reward", "bleu"]),
                     gsm8k(repo_root, metrics=["acuracy"], pass_at_k={"n": 2, "k": [3]}),
                     gsm8k(repo_root, name="other", format="prompt_referense", metrics=["rouge"])],
        "select": {"metric": "gsm8k/rogueL"}})
    with pytest.raises(ConfigError) as e:
        load_eval_config(config)
    assert e.value.problems == [
        f"{config}: datasets.0.metrics: listed twice: bleu",
        f"{config}: datasets.1.metrics.0: Input should be 'bleu', 'rouge', 'exact_match', 'accuracy', 'pass_at_k', "
        "'reward' or 'perplexity' (got 'acuracy')",
        f"{config}: datasets.1.pass_at_k: k must be from 1 to n=2 (got 3)",
        f"{config}: datasets.2.format: unknown dataset format 'prompt_referense' (did you mean 'prompt_reference'?)",
        f"{config}: engine.model: set by `models` (one entry per model or adapter)",
        f"{config}: engine.batch_sise: unknown key (did you mean 'batch_size'?)",
    ]
    fixed = ["datasets.0.metrics=[bleu, reward]", "datasets.1.metrics=[accuracy]", "datasets.1.name=gsm8k-2",
             "datasets.1.pass_at_k={n: 2, k: [1]}", "datasets.2.format=prompt_reference", "engine={}"]
    with pytest.raises(ConfigError) as e:
        load_eval_config(config, fixed)
    assert e.value.problems == [
        "--set: datasets.0.metrics: reward needs a reward model: set `reward: {model: PATH}`",
        "--set: datasets.1.pass_at_k: set, but pass_at_k is not in this dataset's metrics",
        f"{config}: select.metric: 'gsm8k/rogueL' is not a metric of this evaluation (did you mean 'gsm8k/reward'?)"]
    # the command: every problem on its own line, exit 2, nothing loaded or written
    assert main(["eval", config]) == 2
    err = capsys.readouterr().err
    assert f"{config}: engine.batch_sise: unknown key" in err and not (tmp_path / "eval").exists()
    # checkpoints that are not there: every one named, before a model is loaded
    (tmp_path / "empty-run/checkpoints").mkdir(parents=True)
    missing = write_config(tmp_path, {"models": [str(tmp_path / "nowhere"), str(run_dir), str(tmp_path / "empty-run")],
                                      "output_dir": str(tmp_path / "eval"),
                                      "datasets": [gsm8k(repo_root, metrics=["bleu"])]})
    assert main(["eval", missing]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert err[0].startswith(f"error: {missing}: models.0: ") and "nowhere" in err[0]
    assert err[1] == (f"error: {missing}: models.2: the run '{tmp_path / 'empty-run'}' has no checkpoints and no model yet "
                      "(hint: evaluate it once it has saved a checkpoint)")
    assert not (tmp_path / "eval").exists()
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--input", gsm8k(repo_root)["path"], "--metrics",
                 "accuracy", "--output-dir", str(tmp_path / "eval")]) == 2
    assert error_line(capsys.readouterr().err).startswith(f"error: --model {tmp_path / 'nowhere'}: ")
    # a reward model that is a causal LM: named before a model is loaded
    not_rm = write_config(tmp_path, {"models": [str(run_dir / "model")], "output_dir": str(tmp_path / "eval"),
                                     "reward": {"model": str(run_dir / "model")},
                                     "datasets": [gsm8k(repo_root, metrics=["reward"])]})
    assert main(["eval", not_rm]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"error: {not_rm}: reward.model: '{run_dir / 'model'}' is not a sequence classifier or reward model")
    assert not (tmp_path / "eval").exists()


def test_flags_evaluate_an_adapter_and_name_the_flag_in_errors(run_dir, repo_root, tmp_path, capsys, chatml_tok,
                                                               train_adapter):
    adapter = tmp_path / "adapter"
    train_adapter(str(run_dir / "model"), adapter, chatml_tok, new_tokens=False)
    data = str(repo_root / "examples/data/gsm8k/train_500.jsonl")
    base = ["eval", "--model", str(adapter), "--model", str(run_dir / "model"), "--input", data, "--limit", "2",
            "--max-new-tokens", "3", "--device", "cpu", "--output-dir", str(tmp_path / "eval")]
    assert main([*base, "--metrics", "accuracy,perplexity", "--select", "accuracy"]) == 0
    report = json.loads((tmp_path / "eval/report.json").read_text())
    rows = {r["checkpoint"]: r for r in report["checkpoints"]}
    assert set(rows) == {"adapter", "model"}
    assert rows["adapter"]["adapter"] == str(adapter) and rows["adapter"]["model"] == str(run_dir / "model")
    assert rows["adapter"]["metrics"]["train_500/perplexity"] != rows["model"]["metrics"]["train_500/perplexity"]
    assert report["best"]["metric"] == "train_500/accuracy" and report["best"]["mode"] == "max"
    assert report["best"]["checkpoint"] == "adapter"  # all 0: the earliest wins ties
    capsys.readouterr()
    assert main([*base, "--metrics", "bleu", "--select", "rouge1"]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        "error: --select: 'rouge1' is not a metric of this evaluation")
    assert main([*base, "--metrics", "bleu,blue"]) == 2
    assert error_line(capsys.readouterr().err).startswith("error: --metrics 1: Input should be 'bleu'")
    assert main(["eval", "--model", str(adapter), "--input", data, "--metrics", "bleu"]) == 2
    assert error_line(capsys.readouterr().err).startswith("error: --output-dir: required without CONFIG")


def test_answer_scores_and_pass_at_k_scores():
    from oa_infer.metrics import answer_scores, pass_at_k, pass_at_k_scores, text_metrics

    preds = ["The answer is 18.", "  the cat sat on the mat ", "#### 7"]
    refs = ["so 9 * 2 = 18\n#### 18", "The cat sat on the mat.", "#### 8"]
    scores, per = answer_scores(preds, refs, ["bleu", "rouge", "exact_match", "accuracy"])
    assert {k: scores[k] for k in ("bleu", "rouge1", "rouge2", "rougeL")} == pytest.approx(
        text_metrics([p.strip() for p in preds], refs))
    assert scores["exact_match"] == pytest.approx(1 / 3) and scores["accuracy"] == pytest.approx(1 / 3)
    assert per == [{"exact_match": False, "correct": True}, {"exact_match": True, "correct": False},
                   {"exact_match": False, "correct": False}]
    assert answer_scores([], [], ["bleu"]) == ({}, [])
    with pytest.raises(ValueError, match="not an answer metric: reward"):
        answer_scores(preds, refs, ["reward"])
    samples = [["18", "17", "#### 18"], ["1", "2", "3"]]
    got, counts = pass_at_k_scores(samples, ["#### 18", "#### 4"], [1, 2, 3])
    assert counts == [2, 0]
    assert got == pytest.approx({f"pass@{k}": (pass_at_k(3, 2, k) + 0) / 2 for k in (1, 2, 3)})
    assert got["pass@1"] == pytest.approx(1 / 3) and got["pass@3"] == pytest.approx(0.5)
    got, counts = pass_at_k_scores([["The Cat", "dog"]], ["the cat."], [1], correct="exact_match")
    assert counts == [1] and got == {"pass@1": 0.5}


def test_reward_scores_are_the_scoring_path(rm_dir):
    from oa_infer.engines.hf import HFSettings
    from oa_infer.evaluate import reward_scores
    from oa_infer.loader import load_pretrained
    from oa_infer.scoring import score

    model, tok = load_pretrained(HFSettings(model=rm_dir, device="cpu"), seq_cls=True, device="cpu")
    prompts = [[{"role": "user", "content": "2+2?"}], "Once upon"]
    got = reward_scores(model, tok, prompts, ["4", " a time"], batch_size=1)
    want = score(model, tok, [[*prompts[0], {"role": "assistant", "content": "4"}], "Once upon a time"], 2)
    assert got == pytest.approx([s.score for s in want], abs=1e-5)


def test_sft_generation_metrics_are_oa_eval_metrics_on_hf_engine_answers(run_dir, chatml_tok):
    """oa-train's in-training generation metrics: HFEngine's greedy answers scored by answer_scores."""
    pytest.importorskip("oa_train")
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from oa_core.generation import GenerationParams
    from oa_infer.engines.hf import HFEngine
    from oa_infer.metrics import answer_scores
    from oa_train.sft.eval import generation_metrics, prompt_and_answer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    enc = [chatml_tok(f"<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
           ["input_ids"] for i in range(3)]
    answers = [chatml_tok(f"Answer {i} is {i}<|im_end|>", add_special_tokens=False)["input_ids"] for i in range(3)]
    examples = [{"input_ids": p + a, "labels": [-100] * len(p) + a} for p, a in zip(enc, answers, strict=True)]
    accelerator = SimpleNamespace(unwrap_model=lambda m: m, device=torch.device("cpu"))
    scores, samples = generation_metrics(accelerator, model, chatml_tok, examples, num_samples=3, max_new_tokens=5,
                                         metrics=["bleu", "rouge", "accuracy"], batch_size=2)
    got = HFEngine(model, chatml_tok, batch_size=3).generate_ids([prompt_and_answer(e)[0] for e in examples],
                                                                 GenerationParams(max_new_tokens=5))
    refs = [chatml_tok.decode(prompt_and_answer(e)[1], skip_special_tokens=True).strip() for e in examples]
    want, _ = answer_scores([c.text for (c,) in got], refs, ["bleu", "rouge", "accuracy"])
    assert scores == pytest.approx({f"eval_{k}": v for k, v in want.items()})
    assert [s["reference"] for s in samples] == refs


def test_perplexity_needs_answers_the_template_can_mark_checked_before_loading(tmp_path, repo_root, model_dir,
                                                                               capsys, monkeypatch):
    """A saved template without an end-of-turn token cannot mark where answers end: one line, no model loaded."""
    import oa_infer.loader

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(oa_infer.loader, "load_pretrained", no_models)
    config = write_config(tmp_path, {"models": [model_dir], "output_dir": str(tmp_path / "eval"),
                                     "datasets": [gsm8k(repo_root, metrics=["perplexity"])]})
    assert main(["eval", config]) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {repo_root / 'examples/data/gsm8k/train_500.jsonl'}:1: chat template")
    assert "(hint: " in line and not (tmp_path / "eval").exists()
