"""oa-augment's tests: its plugin registered (from source when the package's entry point is not installed), a
fake OpenAI-compatible endpoint, small input files."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SEEDS = REPO / "examples" / "data" / "alpaca-seed" / "seed_tasks_alpaca.jsonl"


def register_plugin() -> None:
    from oa_core.plugins import add_plugin

    if not any(e.name == "augment" for e in metadata.entry_points(group="oa")):
        import oa_augment.plugin

        add_plugin(oa_augment.plugin, "augment")


@pytest.fixture(autouse=True, scope="session")
def _augment_plugin():
    register_plugin()


@pytest.fixture
def server():
    from oa_augment.testing import FakeOpenAIServer

    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def seeds() -> Path:
    return SEEDS


@pytest.fixture
def config_data(tmp_path, server):
    """``config_data(**changes) -> dict``: an ``answer`` run on 12 seed tasks against the fake endpoint."""

    def make(**changes):
        data = {"augmenter": "answer", "input": {"path": str(SEEDS), "format": "alpaca", "limit": 12},
                "output": str(tmp_path / "out.jsonl"), "generator": "openai",
                "engine": {"model": "fake", "base_url": server.url, "backoff": 0.0, "max_retries": 2},
                "generation": {"max_new_tokens": 64}, "concurrency": 4}
        for key, value in changes.items():
            data[key] = value
        return data

    return make
