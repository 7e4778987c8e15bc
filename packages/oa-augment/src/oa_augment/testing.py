"""A fake OpenAI-compatible endpoint for tests and benchmarks: a threaded ``http.server`` on 127.0.0.1 with
``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``, a fixed latency per request, a capacity (requests
served at once; more wait, as on a saturated server) and injected failures. ``python -m oa_augment.testing``
serves it on port 8000 (what the ``examples/augment-*.yaml`` configs call).

    with FakeOpenAIServer(latency=0.05, failures={3: "500", 5: "malformed"}) as server:
        engine = load_openai(model="fake", base_url=server.url)
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAILURES = ("timeout", "500", "503", "429", "400", "malformed", "no_choices", "disconnect")


def default_reply(prompt: Any, body: dict[str, Any], k: int) -> str:
    """A deterministic answer: the last user message (or the text prompt) and the seed decide it. Prompts of the
    built-in templates that ask for a form get it (a task for ``self_instruct``, a rating for ``judge``)."""
    text = prompt if isinstance(prompt, str) else next(
        (m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    digest = hashlib.sha256(f"{text}\0{body.get('seed')}\0{k}".encode()).hexdigest()[:8]
    if "Instruction: <the task>" in text:
        return f"Instruction: Write a sentence about topic {digest}.\nInput:\nOutput: A sentence about topic {digest}."
    if 'Reply with "Rating: N"' in text:
        return f"Rating: {4 + int(digest, 16) % 7}"
    return f"Answer {digest} to: {' '.join(text.split()[:12])}"


class FakeOpenAIServer:
    """``reply(prompt, body, k) -> str`` writes choice ``k`` (``prompt``: the messages or the text). ``failures``:
    ``{request number (1-based): kind}`` or ``fn(number, body) -> kind | None``, kind one of :data:`FAILURES`
    (``timeout`` answers after ``hang`` seconds). ``capacity``: requests served at once (None: no limit). ``port``:
0 picks a free one."""

    def __init__(self, reply: Callable[[Any, dict, int], str] = default_reply, *, latency: float = 0.0,
                 capacity: int | None = None, failures: dict[int, str] | Callable[[int, dict], str | None] | None = None,
                 hang: float = 2.0, api_key: str | None = None, port: int = 0):
        self.reply, self.latency, self.hang, self.api_key, self.port = reply, latency, hang, api_key, port
        self.failures = failures or {}
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self._lock = threading.Lock()
        self.count = 0
        self.bodies: list[dict[str, Any]] = []
        self.injected: list[tuple[int, str]] = []
        self.in_flight = self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> FakeOpenAIServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # a response in two writes would wait for a delayed ACK (40 ms)

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}))

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                owner._serve(self, body)

            def _send(self, status: int, text: str, headers: dict[str, str] | None = None):
                data = text.encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _failure(self, number: int, body: dict) -> str | None:
        if callable(self.failures):
            return self.failures(number, body)
        return self.failures.get(number)

    def _serve(self, handler: Any, body: dict[str, Any]) -> None:
        with self._lock:
            self.count += 1
            number = self.count
            self.bodies.append(body)
        if self.api_key is not None and handler.headers.get("authorization") != f"Bearer {self.api_key}":
            return handler._send(401, json.dumps({"error": {"message": "invalid api key"}}))
        kind = self._failure(number, body)
        if kind is not None:
            with self._lock:
                self.injected.append((number, kind))
        if kind == "timeout":
            time.sleep(self.hang)
        elif kind == "disconnect":
            handler.close_connection = True
            handler.connection.close()
            return
        elif kind in ("500", "503", "429", "400"):
            headers = {"retry-after": "0"} if kind == "429" else None
            return handler._send(int(kind), json.dumps({"error": {"message": f"injected {kind}"}}), headers)
        if self._slots:
            self._slots.acquire()
        try:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.latency:
                time.sleep(self.latency)
            text = self._answer(body, kind)
        finally:
            with self._lock:
                self.in_flight -= 1
            if self._slots:
                self._slots.release()
        handler._send(200, text)

    def _answer(self, body: dict[str, Any], kind: str | None) -> str:
        if kind == "malformed":
            return '{"choices": [{"message": '  # cut off: not JSON
        chat = "messages" in body
        prompt = body.get("messages") if chat else body.get("prompt", "")
        n = int(body.get("n") or 1)
        choices = []
        for k in range(n):
            text = self.reply(prompt, body, k)
            words = text.split()
            finish = "stop"
            if len(words) > int(body.get("max_tokens") or 10**9):
                text, finish = " ".join(words[: int(body["max_tokens"])]), "length"
            choices.append({"index": k, "finish_reason": finish,
                            **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})})
        if kind == "no_choices":
            choices = []
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in prompt) if chat else len(str(prompt).split())
        usage = {"prompt_tokens": prompt_words, "completion_tokens": sum(
            len((c["message"]["content"] if chat else c["text"]).split()) for c in choices)}
        return json.dumps({"id": "fake", "object": "chat.completion" if chat else "text_completion",
                           "model": body.get("model"), "choices": choices, "usage": usage})


def main(argv: list[str] | None = None) -> None:
    """``python -m oa_augment.testing [--port 8000] [--latency S] [--capacity N]``: serve the fake endpoint until
    Ctrl-C (for the examples, and to try ``oa augment`` without a model)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m oa_augment.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--capacity", type=int, default=None, help="requests served at once")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(latency=args.latency, capacity=args.capacity, port=args.port).start()
    print(f"fake OpenAI-compatible endpoint at {server.url} (Ctrl-C stops it)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
