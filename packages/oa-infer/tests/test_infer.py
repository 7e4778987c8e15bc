"""`oa infer` end to end: flags and configs, several generation settings, scoring, resuming, one-line errors."""

from __future__ import annotations

import itertools
import json

import pytest

from oa_cli.main import main
from oa_core.errors import ConfigError, OAError
from oa_core.generation import Completion, GenerationParams
from oa_infer.config import load_infer_config
from oa_infer.infer import run_infer


def read(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def error_line(err: str) -> str:
    """The one error line of a command's stderr (progress bars of the data loading aside)."""
    (line,) = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("error:")]
    return line


def test_flags_end_to_end_on_alpaca_seed_tasks(model_dir, alpaca_seed, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    args = ["infer", "--model", model_dir, "--input", str(alpaca_seed), "--limit", "6", "--output", str(out),
            "--max-new-tokens", "4", "--batch-size", "4", "--logprobs"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"{out}: 6 records, 6 new, 24 tokens generated in ")
    rows = read(out)
    seed = [json.loads(line) for line in open(alpaca_seed, encoding="utf-8")][:6]
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["source"] for r in rows] == [f"{alpaca_seed}:{i + 1}" for i in range(6)]
    assert rows[0]["prompt"] == [{"role": "user", "content": seed[0]["instruction"].strip()}]
    assert rows[0]["reference"] == seed[0]["output"]
    assert rows[0]["settings"] == {"task": "generate", "model": model_dir, "adapter": None, "generator": "hf",
                                   **GenerationParams(max_new_tokens=4, logprobs=True).model_dump(), "name": None}
    from oa_infer.engines.hf import load_hf

    engine = load_hf(model=model_dir, device="cpu")
    want = engine.generate([r["prompt"] for r in rows], GenerationParams(max_new_tokens=4, logprobs=True))
    for row, (c,) in zip(rows, want, strict=True):
        (got,) = row["completions"]
        assert got["text"] == c.text and got["finish_reason"] == "length" and got["num_tokens"] == 4
        assert got["logprobs"] == pytest.approx(c.logprobs, abs=1e-4)
    assert main(args) == 0  # finished: nothing is redone
    assert capsys.readouterr().out.startswith(f"{out}: 6 records (6 from an earlier run), 0 new")
    assert read(out) == rows


def gsm8k_config(tmp_path, repo_root, model_dir, **extra) -> str:
    data = {"engine": {"model": model_dir, "batch_size": 4, "device": "cpu"},
            "input": {"path": str(repo_root / "examples/data/gsm8k/train_500.jsonl"), "format": "prompt_reference",
                      "field_map": {"prompt": "question", "reference": "answer"},
                      "options": {"reference_after": "####"}, "limit": 5},
            "output": str(tmp_path / "gsm8k.jsonl"), "chunk_size": 2, **extra}
    path = tmp_path / "infer.yaml"
    path.write_text(json.dumps(data))
    return str(path)


def test_several_generation_settings_write_one_file_each(tmp_path, repo_root, model_dir, capsys):
    config = gsm8k_config(tmp_path, repo_root, model_dir, generation=[
        {"name": "greedy", "max_new_tokens": 3},
        {"name": "sampled", "max_new_tokens": 3, "temperature": 1.0, "n": 2, "seed": 4, "stop": ["\n"]}])
    assert main(["infer", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(tmp_path / "gsm8k.greedy.jsonl"),
                                                      str(tmp_path / "gsm8k.sampled.jsonl")]
    greedy, sampled = read(tmp_path / "gsm8k.greedy.jsonl"), read(tmp_path / "gsm8k.sampled.jsonl")
    assert [len(r["completions"]) for r in greedy] == [1] * 5 and [len(r["completions"]) for r in sampled] == [2] * 5
    assert greedy[0]["reference"] == "72" and greedy[0]["prompt"][0]["content"].startswith("Natalia sold clips")
    assert greedy[0]["settings"]["name"] == "greedy" and sampled[0]["settings"]["n"] == 2
    assert sampled[0]["settings"]["stop"] == ["\n"]


def test_config_problems_are_reported_together_naming_file_and_key(tmp_path, repo_root, model_dir):
    config = gsm8k_config(tmp_path, repo_root, model_dir, generation=[{"max_new_tokens": 0}, {"temprature": 1}])
    with pytest.raises(ConfigError) as e:
        load_infer_config(config)
    assert e.value.problems == [
        f"{config}: generation.0.max_new_tokens: Input should be greater than or equal to 1 (got 0)",
        f"{config}: generation.1.temprature: unknown key (did you mean 'temperature'?)"]
    with pytest.raises(ConfigError) as e:
        load_infer_config(config, ["generation=[{name: a}, {name: a}]", "engine.batch_size=0", "generator=hff"])
    assert e.value.problems == ["--set: generation: names must differ (got a, a)",
                                "--set: generator: unknown generator 'hff' (did you mean 'hf'?)"]
    with pytest.raises(ConfigError) as e:
        load_infer_config(config, ["generation={max_new_tokens: 2}", "engine.batch_sise=2", "engine.device=1"])
    assert sorted(e.value.problems) == ["--set: engine.batch_sise: unknown key (did you mean 'batch_size'?)",
                                        "--set: engine.device: Input should be a valid string (got 1)"]
    with pytest.raises(ConfigError) as e:
        load_infer_config(config, ["generation={max_new_tokens: 2}", "engine.compile=true",
                                   "engine.continuous_batching=true"])
    assert len(e.value.problems) == 1
    assert e.value.problems[0].startswith(f"{config}: engine: compile: true and continuous_batching: true exclude")
    assert main(["infer", config, "--set", "output=out.json"]) == 2


def test_flag_errors_name_the_flag(model_dir, alpaca_seed, tmp_path, capsys):
    base = ["infer", "--model", model_dir, "--input", str(alpaca_seed), "--output", str(tmp_path / "o.jsonl")]
    assert main([*base, "--temperature", "-1"]) == 2
    assert error_line(capsys.readouterr().err) == \
        "error: --temperature: Input should be greater than or equal to 0 (got -1.0)"
    assert main([*base, "--engine", "tensor_parallel_size=2"]) == 2
    assert error_line(capsys.readouterr().err) == "error: --engine tensor_parallel_size: unknown key"
    assert main([*base, "--engine", "compile=true", "--engine", "continuous_batching=true"]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        "error: --engine: compile: true and continuous_batching: true exclude each other")
    assert main(["infer", "--model", model_dir, "--output", "o.jsonl"]) == 2
    assert error_line(capsys.readouterr().err).startswith("error: --input: required without CONFIG")
    assert main([*base, "--generator", "vllm"]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("error: generator 'vllm': vLLM is not installed") and "oa-infer[vllm]" in err


def test_bad_records_are_one_line_errors_naming_file_line_and_field(model_dir, tmp_path, write_jsonl, capsys):
    def run(data, output="o.jsonl") -> str:
        assert main(["infer", "--model", model_dir, "--input", data, "--output", str(tmp_path / output)]) == 2
        return error_line(capsys.readouterr().err)

    data = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]},
                                                  {"messages": [{"role": "user"}]}])
    assert run(data).startswith(f"error: {data}:2: field 'messages.0.content': missing or null (hint: ")
    system = write_jsonl(tmp_path / "system.jsonl", [{"messages": [{"role": "system", "content": "Be brief."}]}])
    assert run(system).startswith(f"error: {system}:1: field 'messages': no user message to answer (hint: ")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "Hi"}])
    assert run(odd).startswith(f"error: {odd}: cannot tell the dataset format from its columns (question) "
                               "(hint: give --format")
    assert run(data, "o.json") == f"error: --output: '{tmp_path / 'o.json'}' must end in .jsonl"
    assert not (tmp_path / "o.jsonl").exists()


class Echo:
    """A fast, deterministic engine: the completion is the prompt's text reversed, cut to max_new_tokens chars."""

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += 1
        out = []
        for p in prompts:
            text = (p if isinstance(p, str) else p[-1]["content"])[::-1][: params.max_new_tokens]
            out.append([Completion(text, list(range(len(text))), "length") for _ in range(params.n)])
        return out


def echo_config(tmp_path, write_jsonl, n=23, **extra):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": f"record number {i} " + "x" * (i % 7)} for i in range(n)])
    path = tmp_path / "echo.yaml"
    path.write_text(json.dumps({"engine": {"model": "unused"}, "input": {"path": data, "format": "pretraining"},
                                "output": str(tmp_path / "out.jsonl"), "chunk_size": 3,
                                "generation": {"max_new_tokens": 12}, **extra}))
    return load_infer_config(path)


def test_a_cut_off_output_resumes_to_every_record_exactly_once_at_any_byte(tmp_path, write_jsonl, monkeypatch):
    """A kill can stop a write at any byte: whatever prefix of the output survives, the next run completes it
    to exactly the output of an uninterrupted run."""
    from oa_core import journal
    from oa_infer.config import engine_settings
    from oa_infer.infer import generate_into, load_items, run_settings

    monkeypatch.setattr(journal.os, "fsync", lambda fd: None)  # durability is not what this test is about

    config = echo_config(tmp_path, write_jsonl)
    out = tmp_path / "out.jsonl"
    (summary,) = run_infer(config, engine=Echo())
    assert (summary.records, summary.new, summary.earlier) == (23, 23, 0)
    full = out.read_bytes()
    items = load_items(config.input)
    spec = config.generation[0]
    settings = run_settings(config, engine_settings(config), spec)
    params = GenerationParams(**spec.model_dump(exclude={"name"}))
    ends = list(itertools.accumulate(len(x) for x in full.splitlines(keepends=True)))
    every_byte = [*range(0, ends[0] + 2), *range(ends[9] - 2, ends[10] + 2), *range(ends[-2] - 2, len(full) + 1)]
    for cut in sorted({*every_byte, *(e + d for e in ends for d in (-1, 0, 1) if e + d <= len(full))}):
        out.write_bytes(full[:cut])
        engine = Echo()
        summary = generate_into(engine, items, params, out, settings, chunk_size=3)
        assert out.read_bytes() == full, cut
        whole = sum(1 for e in ends if e <= cut)
        assert (summary.earlier, summary.new) == (whole, 23 - whole), cut
        assert engine.calls == -(-(23 - whole) // 3)


def test_resuming_refuses_an_output_of_other_settings_or_inputs(tmp_path, write_jsonl):
    config = echo_config(tmp_path, write_jsonl, n=5)
    run_infer(config, engine=Echo())
    out = tmp_path / "out.jsonl"
    other = config.model_copy(update={"generation": [config.generation[0].model_copy(update={"max_new_tokens": 5})]})
    with pytest.raises(OAError, match=rf"^{out}:1: made with other settings \(max_new_tokens differ\)"):
        run_infer(other, engine=Echo())
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"changed {i}"} for i in range(5)])
    with pytest.raises(OAError, match=rf"^{out}:1: input 0 has changed since this output was written"):
        run_infer(config, engine=Echo())
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"record number {i} " + "x" * i} for i in range(3)])
    with pytest.raises(OAError, match=rf"^{out}:4: input 3 does not exist \(the input has 3 records\)"):
        run_infer(config, engine=Echo())
    out.write_text('{"index": 0}\nnot json\n')
    with pytest.raises(OAError, match=rf"^{out}:2: not a JSON record"):
        run_infer(config, engine=Echo())
    with pytest.raises(OAError, match="is the same file as the input input.path"):
        run_infer(config.model_copy(update={"output": str(tmp_path / "in.jsonl")}), engine=Echo())


def test_scoring_preference_pairs_end_to_end(reward_dir, repo_root, tmp_path, capsys):
    from oa_core.generation import GeneratorSettings
    from oa_infer.config import InputSpec
    from oa_infer.infer import load_items
    from oa_infer.loader import load_pretrained
    from oa_infer.scoring import score

    data = repo_root / "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz"
    out = tmp_path / "scores.jsonl"
    assert main(["infer", "--score", "--model", reward_dir, "--input", str(data), "--format", "hh_rlhf",
                 "--limit", "3", "--output", str(out), "--batch-size", "2"]) == 0
    rows = read(out)
    assert [sorted(r["scores"]) for r in rows] == [["chosen", "rejected"]] * 3
    items = load_items(InputSpec(path=str(data), format="hh_rlhf", limit=3), "score")
    model, tok = load_pretrained(GeneratorSettings(model=reward_dir), seq_cls=True, device="cpu")
    want = score(model, tok, [seq for it in items for _, seq in it.inputs], batch_size=6)
    got = [r["scores"][name]["score"] for r in rows for name in ("chosen", "rejected")]
    assert got == pytest.approx([s.score for s in want], abs=1e-5)
    assert rows[0]["inputs"]["chosen"][-1]["role"] == "assistant"


def test_scoring_refuses_a_model_without_a_classification_head(model_dir, repo_root, tmp_path, capsys):
    data = repo_root / "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz"
    assert main(["infer", "--score", "--model", model_dir, "--input", str(data), "--format", "hh_rlhf",
                 "--limit", "2", "--output", str(tmp_path / "x.jsonl")]) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"error: model: '{model_dir}' is not a sequence classifier or reward model (architectures: LlamaForCausalLM)")


def test_two_runs_cannot_write_one_output_at_once(tmp_path):
    from oa_core.journal import Journal

    with Journal(tmp_path / "out.jsonl") as first:
        first.append([{"index": 0}])
        with pytest.raises(OAError, match="another process is writing this output"):
            Journal(tmp_path / "out.jsonl").__enter__()
    with Journal(tmp_path / "out.jsonl") as again:  # free once the first is done
        assert list(again.done) == [0]
