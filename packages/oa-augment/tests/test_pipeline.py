"""``oa augment`` end to end against a fake OpenAI-compatible endpoint: records with provenance, determinism,
resume, failures reported, filters and dedup counted, the output trainable as a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oa_augment.config import validate
from oa_augment.pipeline import preview, run_augment
from oa_core.errors import ConfigError, OAError


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def run(data, **kw):
    return run_augment(validate(data, {}, "run.yaml"), progress=False, **kw)


def test_answers_every_input_with_provenance(config_data, server, tmp_path):
    data = config_data()
    summary = run(data)
    rows = read_jsonl(data["output"])
    assert summary.inputs == 12 and summary.done == 12 and summary.complete and len(rows) == 12
    first = rows[0]
    assert first["kind"] == "conversation" and first["messages"][-1]["role"] == "assistant"
    assert first["messages"][-1]["content"].startswith("Answer ")
    prov = first["metadata"]["augment"]
    assert prov["augmenter"] == "answer" and prov["generator"] == "openai" and prov["model"] == "fake"
    assert prov["source"]["index"] == 0 and prov["params"]["max_new_tokens"] == 64 and isinstance(prov["seed"], int)
    assert summary.format == "oa.conversation" and "train on it" in "\n".join(summary.lines())
    assert json.loads((tmp_path / "out.augment" / "summary.json").read_text())["done"] == 12
    # a second run has nothing to do and writes the same output
    before = (tmp_path / "out.jsonl").read_bytes()
    count = server.count
    again = run(data)
    assert server.count == count and again.earlier == 12 and (tmp_path / "out.jsonl").read_bytes() == before


def test_same_output_whatever_the_concurrency(config_data, tmp_path):
    a = config_data(concurrency=1, output=str(tmp_path / "a.jsonl"))
    b = config_data(concurrency=8, output=str(tmp_path / "b.jsonl"))
    run(a)
    run(b)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_failures_are_retried_then_reported_and_a_rerun_finishes(config_data, server, tmp_path):
    # requests 1-3 fail in three ways and are retried; every request for one input fails until the second run
    server.failures = lambda number, body: (
        {1: "500", 2: "malformed", 3: "429"}.get(number)
        or ("503" if "Generate a haiku" in json.dumps(body) and server.count < 40 else None))
    data = config_data(seed=1)
    summary = run(data)
    assert summary.retries.get("HTTP 500") and summary.retries.get("malformed response")
    rows = read_jsonl(data["output"])
    haiku = [r for r in read_jsonl(data["input"]["path"])[:12] if "haiku" in r["instruction"].lower()]
    if haiku:
        assert summary.failed == len(haiku) and "HTTP 503 after 3 attempts" in summary.failed_reasons
        assert not summary.complete and len(rows) == 12 - len(haiku)
        server.failures = {}
        again = run(data)
        assert again.complete and len(read_jsonl(data["output"])) == 12
    else:
        assert summary.complete and len(rows) == 12


def test_settings_that_change_what_is_made_refuse_to_continue(config_data):
    run(config_data())
    with pytest.raises(OAError, match="other settings .*generation.max_new_tokens"):
        run(config_data(generation={"max_new_tokens": 32}))
    run(config_data(engine={**config_data()["engine"], "timeout": 5.0}))  # how requests are made: fine


def test_filters_and_dedup_are_counted(config_data, server):
    server.reply = lambda prompt, body, k: "I'm sorry, but I can't help with that." if "haiku" in json.dumps(
        prompt).lower() else "The same answer every time, more or less."
    data = config_data(dedup={"compare": "response"})
    summary = run(data)
    assert summary.removed["exact duplicate"] >= 1 and summary.done + summary.filtered == 12
    assert summary.written == len(read_jsonl(data["output"])) == summary.done
    line = summary.lines()[1]
    assert "removed (exact duplicate:" in line


def test_config_problems_are_reported_at_once(config_data):
    data = config_data(options={"output": "nope", "extra": 1}, generator=None)
    with pytest.raises(ConfigError) as e:
        validate(data, {}, "run.yaml")
    text = str(e.value)
    assert "run.yaml: options.output" in text and "run.yaml: options.extra" in text
    data = config_data(engine={"model": "m", "headers": {"Authorization": "Bearer x"}})
    with pytest.raises(ConfigError, match="engine.headers: .*api_key_env"):
        validate(data, {}, "run.yaml")
    with pytest.raises(ConfigError, match="augmenter: unknown augmenter 'answr' \\(did you mean 'answer'\\?\\)"):
        validate(config_data(augmenter="answr"), {}, "run.yaml")


def test_dry_run_shows_prompts_and_sends_nothing(config_data, server):
    data = config_data(template="Answer briefly.\n\n{{ instruction }}")
    text = preview(validate(data, {}, "run.yaml"), 2)
    assert "record 0" in text and "record 1" in text and "record 2" not in text
    assert "Answer briefly." in text and "would write" in text and server.count == 0


def test_cli_flags_run_and_print_the_summary(server, seeds, tmp_path, capsys):
    from oa_cli.main import main

    out = tmp_path / "cli.jsonl"
    args = ["augment", "--augmenter", "answer", "--input", str(seeds), "--format", "alpaca", "--limit", "3",
            "--output", str(out), "--generator", "openai", "--model", "fake", "--base-url", server.url]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 inputs: 3 done" in printed and len(read_jsonl(out)) == 3
    assert main(["augment", "--augmenter", "answer", "--input", str(seeds), "--output", str(out)]) == 2
    assert "--format: required without CONFIG" in capsys.readouterr().err


def test_an_endpoint_that_is_down_stops_the_run_with_failures_reported(seeds, tmp_path, capsys):
    import socket

    from oa_cli.main import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once it is closed
    out = tmp_path / "down.jsonl"
    code = main(["augment", "--augmenter", "answer", "--input", str(seeds), "--format", "alpaca", "--limit", "30",
                 "--output", str(out), "--generator", "openai", "--model", "fake", "--base-url",
                 f"http://127.0.0.1:{port}/v1", "--engine", "max_retries=1", "--engine", "backoff=0",
                 "--concurrency", "2"])
    printed = capsys.readouterr()
    assert code == 1, printed.err
    summary = json.loads((tmp_path / "down.augment" / "summary.json").read_text())
    assert summary["failed"] >= 20 and summary["pending"] > 0 and summary["done"] == 0
    assert list(summary["failed_reasons"]) == ["connection error after 2 attempts"]
    assert "not attempted (the run stopped)" in printed.out and out.read_text() == ""


def test_a_template_file_and_its_problems(config_data, tmp_path):
    from oa_augment.config import load_augment_config

    (tmp_path / "prompt.j2").write_text("Be brief.\n\n{{ instruction }}")
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(config_data(template_file="prompt.j2")))
    assert load_augment_config(config).template == "Be brief.\n\n{{ instruction }}"
    (tmp_path / "prompt.j2").write_text("{{ question }}")
    with pytest.raises(ConfigError, match=r"run.yaml: template_file: the template uses question, which this "
                                          r"augmenter does not give \(it gives: instruction, messages, reference\)"):
        load_augment_config(config)
    with pytest.raises(ConfigError, match="run.yaml: template: template line 1: "):
        validate(config_data(template="{% if %}"), {}, "run.yaml")


def test_changing_filters_refilters_without_generating_again(config_data, server):
    first = run(config_data())
    count = server.count
    again = run(config_data(filters={"min_chars": 10_000}))
    assert server.count == count and again.earlier == 12 and first.written == 12
    assert again.written == 0 and again.filtered == 12 and again.removed["too short"] == 12
    assert again.filtered_reasons == {"removed: too short": 12}
