"""The ``openai`` generator: an OpenAI-compatible HTTP endpoint (vLLM's and llama.cpp's servers, TGI, hosted APIs)
through ``/chat/completions`` or ``/completions``, with concurrent requests, retries with exponential backoff and
jitter (timeouts, connection errors, 408/409/429/5xx, malformed responses), ``Retry-After``, a requests-per-minute
limit and per-request timeouts. The API key is read from the environment variable named by ``api_key_env``; it is
never part of the settings, the provenance or any message."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from oa_core.errors import OAError
from oa_core.generation import Completion, GenerationParams, GeneratorSettings, Prompt

RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx


class GenerationError(OAError):
    """An endpoint gave no usable answer: after all retries, or at once for a request it refuses (4xx)."""


class OpenAISettings(GeneratorSettings):
    """An OpenAI-compatible endpoint: which model it serves, where it is, how to retry and pace requests."""

    model: str = Field(description="the model name the endpoint serves (the request's `model`)")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the API's base URL, up to and with /v1")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="name of the environment variable holding the API key (sent as a bearer "
        "token when set); the key itself never goes in a config")
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="chat: /chat/completions (text prompts become one user message); completions: "
        "/completions (text prompts only)")
    timeout: float = Field(60.0, gt=0, description="seconds one request may take before it is retried")
    max_retries: int = Field(5, ge=0, description="retries of a request that failed in a way worth retrying")
    backoff: float = Field(1.0, ge=0, description="seconds before the first retry; doubled each retry, with jitter")
    backoff_max: float = Field(30.0, ge=0, description="longest wait between two retries (seconds)")
    requests_per_minute: float | None = Field(None, gt=0, description="space requests to stay under this rate")
    max_concurrent_requests: int = Field(16, ge=1, description="requests in flight at once (all records together)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="more fields for every request body "
                                       "(a server's own sampling options)")
    headers: dict[str, str] = Field(default_factory=dict, description="more HTTP headers (not the key: see api_key_env)")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        secret = [k for k in value if k.lower() in ("authorization", "api-key", "x-api-key")]
        if secret:
            raise ValueError(f"'{secret[0]}': keys do not go in a config; put the key in an environment variable "
                             "and name it in api_key_env")
        return value

    @model_validator(mode="after")
    def _unused(self) -> OpenAISettings:
        unused = [k for k in ("adapter", "tokenizer") if getattr(self, k) is not None]
        unused += ["dtype"] if self.dtype != "auto" else []
        unused += ["trust_remote_code"] if self.trust_remote_code else []
        if unused:
            raise ValueError(f"{', '.join(unused)}: not used by the openai generator (the endpoint loads the model)")
        return self


class _Retry(Exception):
    def __init__(self, cause: str, detail: str, wait: float | None = None):
        super().__init__(detail)
        self.cause, self.detail, self.wait = cause, detail, wait


class OpenAIEngine:
    """:class:`oa_core.generation.Engine` over HTTP. Safe to call from several threads at once
    (``concurrent = True``); each call sends its prompts' requests concurrently, at most
    ``max_concurrent_requests`` in flight over all calls."""

    concurrent = True

    def __init__(self, settings: OpenAISettings, *, sleep=time.sleep):
        import httpx

        self.settings = settings
        self._sleep = sleep
        headers = dict(settings.headers)
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/", headers=headers, timeout=settings.timeout,
            limits=httpx.Limits(max_connections=settings.max_concurrent_requests,
                                max_keepalive_connections=settings.max_concurrent_requests))
        self._pool = ThreadPoolExecutor(settings.max_concurrent_requests, thread_name_prefix="oa-openai")
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._jitter = random.Random()
        self.requests = 0
        self.retries: Counter[str] = Counter()
        self.prompt_tokens = self.completion_tokens = 0

    def stats(self) -> dict[str, Any]:
        """Requests sent, retries by cause, tokens the endpoint counted."""
        with self._lock:
            return {"requests": self.requests, "retries": dict(self.retries),
                    "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[list[Completion]]:
        if len(prompts) == 1:
            return [self._request(prompts[0], params)]
        return [f.result() for f in [self._pool.submit(self._request, p, params) for p in prompts]]

    # ------------------------------------------------------------ one request

    def body(self, prompt: Prompt, params: GenerationParams) -> dict[str, Any]:
        """The JSON body of the request for ``prompt``."""
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "max_tokens": params.max_new_tokens, "temperature": params.temperature,
                                "top_p": params.top_p, "n": params.n}
        if s.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [
                {k: m[k] for k in ("role", "content", "name") if m.get(k) is not None} for m in prompt]
        elif isinstance(prompt, str):
            body["prompt"] = prompt
        else:
            raise OAError("the openai generator's completions endpoint takes text prompts, not conversations",
                          hint="set engine.endpoint: chat")
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k:
            body["top_k"] = params.top_k  # not in OpenAI's API; vLLM, llama.cpp and TGI read it
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if params.logprobs:
            body["logprobs"] = True if s.endpoint == "chat" else 1
        return body | s.extra_body

    def _request(self, prompt: Prompt, params: GenerationParams) -> list[Completion]:
        import httpx

        s = self.settings
        path = "chat/completions" if s.endpoint == "chat" else "completions"
        body = self.body(prompt, params)
        for attempt in range(s.max_retries + 1):
            self._pace()
            try:
                try:
                    response = self._client.post(path, json=body)
                except httpx.TimeoutException:
                    raise _Retry("timeout", f"no answer within {s.timeout:g} s") from None
                except httpx.TransportError as e:
                    raise _Retry("connection error", f"{type(e).__name__}: {e}") from None
                finally:
                    with self._lock:
                        self.requests += 1
                return self._parse(response, params)
            except _Retry as r:
                with self._lock:
                    self.retries[r.cause] += 1 if attempt < s.max_retries else 0
                if attempt == s.max_retries:
                    raise GenerationError(f"{s.base_url}/{path}: {r.cause} after {attempt + 1} attempts ({r.detail})",
                                          hint="the record counts as failed; run again to retry it") from None
                delay = min(s.backoff_max, s.backoff * 2 ** attempt) * self._jitter.uniform(0.5, 1.0)
                self._sleep(max(delay, min(r.wait, s.backoff_max * 4)) if r.wait is not None else delay)
        raise AssertionError("unreachable")

    def _pace(self) -> None:
        rpm = self.settings.requests_per_minute
        if not rpm:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 60.0 / rpm
        if slot > now:
            self._sleep(slot - now)

    def _parse(self, response: Any, params: GenerationParams) -> list[Completion]:
        status = response.status_code
        where = f"{self.settings.base_url}/{response.request.url.path.rsplit('/v1/', 1)[-1]}"
        if status in RETRY_STATUS or status >= 500:
            raise _Retry(f"HTTP {status}", _snippet(response.text), _retry_after(response.headers.get("retry-after")))
        if status != 200:
            hints = {401: f"set the API key in the environment variable {self.settings.api_key_env}",
                     403: f"the key in {self.settings.api_key_env} may not use this model",
                     404: "check engine.base_url (it ends in /v1) and engine.model"}
            raise GenerationError(f"{where}: HTTP {status}: {_snippet(response.text)}",
                                  hint=hints.get(status, "the endpoint refused the request; it is not retried"))
        try:
            data = json.loads(response.text)
            choices = data["choices"]
            if not isinstance(choices, list) or len(choices) != params.n:
                raise ValueError(f"{len(choices) if isinstance(choices, list) else 'no'} choices for n={params.n}")
            choices = sorted(choices, key=lambda c: c.get("index", 0))
            usage = data.get("usage") or {}
            out = [self._completion(c, k, params, usage) for k, c in enumerate(choices)]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise _Retry("malformed response", f"{type(e).__name__}: {e}") from None
        with self._lock:
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)
        return out

    def _completion(self, choice: dict, k: int, params: GenerationParams, usage: dict) -> Completion:
        text = choice["message"]["content"] if self.settings.endpoint == "chat" else choice["text"]
        if not isinstance(text, str):
            raise TypeError(f"choice {k} has no text")
        logprobs = None
        if params.logprobs and choice.get("logprobs"):
            lp = choice["logprobs"]
            logprobs = [float(t["logprob"]) for t in lp["content"]] if "content" in lp else [
                float(x) for x in lp["token_logprobs"]]
        total = usage.get("completion_tokens")
        tokens = None
        if isinstance(total, int):  # the endpoint counts all n together: shared out, the first ones get the rest
            tokens = total // params.n + (1 if k < total % params.n else 0)
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(text, [], finish, logprobs, num_tokens=tokens, prompt_tokens=prompt_tokens)


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def load_openai(settings: OpenAISettings | dict | None = None, **kwargs: Any) -> OpenAIEngine:
    """An :class:`OpenAIEngine` for ``settings`` (or keyword arguments)."""
    if not isinstance(settings, OpenAISettings):
        settings = OpenAISettings.model_validate({**(settings or {}), **kwargs})
    return OpenAIEngine(settings)
