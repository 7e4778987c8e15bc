"""The ``openai`` generator against the fake endpoint with injected failures: timeouts, 5xx, 429, malformed JSON,
dropped connections are retried with backoff and counted; refusals (4xx) are not retried; the API key comes from
the environment and never shows in a message."""

from __future__ import annotations

import pytest

from oa_augment.openai_http import GenerationError, OpenAIEngine, OpenAISettings
from oa_augment.testing import FakeOpenAIServer
from oa_core.generation import GenerationParams

PARAMS = GenerationParams(max_new_tokens=16, temperature=0.0)


def engine(server, sleeps=None, **settings) -> OpenAIEngine:
    values = {"model": "fake", "base_url": server.url, "backoff": 0.5, "max_retries": 3, **settings}
    return OpenAIEngine(OpenAISettings(**values), sleep=(sleeps.append if sleeps is not None else lambda s: None))


@pytest.mark.parametrize("kind", ["500", "503", "429", "malformed", "no_choices", "disconnect", "timeout"])
def test_a_failure_is_retried_with_backoff(kind):
    sleeps: list[float] = []
    with FakeOpenAIServer(failures={1: kind, 2: kind}, hang=1.0) as server:
        e = engine(server, sleeps, timeout=0.3)
        (completion,), = e.generate(["hello"], PARAMS)
        assert completion.text.startswith("Answer ") and server.count == 3
        assert sum(e.stats()["retries"].values()) == 2
        assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0 or kind == "429"


def test_giving_up_names_the_cause_and_the_attempts():
    with FakeOpenAIServer(failures=lambda number, body: "500") as server:
        with pytest.raises(GenerationError, match=r"/chat/completions: HTTP 500 after 4 attempts"):
            engine(server).generate(["hello"], PARAMS)
        assert server.count == 4


def test_a_refused_request_is_not_retried():
    with FakeOpenAIServer(failures={1: "400"}) as server:
        with pytest.raises(GenerationError, match="HTTP 400: .*injected 400"):
            engine(server).generate(["hello"], PARAMS)
        assert server.count == 1


def test_the_key_comes_from_the_environment_and_is_never_shown(monkeypatch):
    with FakeOpenAIServer(api_key="sk-secret-123") as server:
        monkeypatch.setenv("MY_KEY", "sk-wrong-456")
        with pytest.raises(GenerationError) as e:
            engine(server, api_key_env="MY_KEY").generate(["hi"], PARAMS)
        assert "HTTP 401" in str(e.value) and "MY_KEY" in e.value.hint and "sk-wrong" not in str(e.value)
        monkeypatch.setenv("MY_KEY", "sk-secret-123")
        e = engine(server, api_key_env="MY_KEY")
        assert e.generate(["hi"], PARAMS)[0][0].text and "sk-secret" not in repr(e.settings)


def test_requests_run_concurrently_up_to_the_limit():
    with FakeOpenAIServer(latency=0.05) as server:
        e = engine(server, max_concurrent_requests=4)
        out = e.generate([f"prompt {i}" for i in range(12)], PARAMS)
        assert len(out) == 12 and all(c[0].text.endswith(f"prompt {i}") for i, c in enumerate(out))
        assert 2 <= server.max_in_flight <= 4


def test_n_seed_and_stop_are_sent_and_tokens_counted():
    with FakeOpenAIServer() as server:
        e = engine(server)
        params = GenerationParams(max_new_tokens=4, n=3, seed=7, stop=["\n"], temperature=0.8)
        (completions,) = e.generate([[{"role": "user", "content": "one two three four five six seven"}]], params)
        body = server.bodies[0]
        assert body["n"] == 3 and body["seed"] == 7 and body["stop"] == ["\n"] and body["max_tokens"] == 4
        assert len(completions) == 3 and all(c.finish_reason == "length" and c.tokens == 4 for c in completions)
        assert completions[0].prompt_tokens == 7


def test_requests_per_minute_spaces_requests():
    sleeps: list[float] = []
    with FakeOpenAIServer() as server:
        e = engine(server, sleeps, requests_per_minute=600)  # one every 0.1 s
        e.generate([f"p{i}" for i in range(4)], PARAMS)
    assert server.count == 4 and len(sleeps) >= 3 and all(0 < s <= 0.4 for s in sleeps)
