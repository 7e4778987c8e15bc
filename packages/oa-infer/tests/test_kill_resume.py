"""`oa infer` killed with SIGKILL at random moments, then restarted until it finishes: the output has every input
exactly once and equals the output of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLOW_ECHO = '''
import sys, time
from oa_core.generation import Completion
from oa_infer.config import load_infer_config
from oa_infer.infer import run_infer

class SlowEcho:
    """Deterministic and slow enough to be killed mid-run; long texts make every write large."""
    def generate(self, prompts, params):
        time.sleep(0.01)
        return [[Completion((p * 40)[::-1], [len(p)], "length")] for p in prompts]

run_infer(load_infer_config(sys.argv[1]), engine=SlowEcho(), progress=False)
'''


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_and_restart(command, output: Path, n: int, kills: int, rng: random.Random) -> list[int]:
    """Run ``command(output)`` ``kills`` times, each killed with SIGKILL at a random moment while it writes (once
    the output has grown to a random number of records, after a random further delay), then once to the end.
    Returns the number of lines the output had after each kill."""
    subprocess.run(command(output.with_name("reference.jsonl")), env=env(), check=True, capture_output=True)
    states = []
    for _ in range(kills):
        done = lines(output)
        if done >= n - 1:
            break
        target = rng.randint(done + 1, done + max(1, (n - done) // 2))
        proc = subprocess.Popen(command(output), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while lines(output) < target and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        states.append(lines(output))
    subprocess.run(command(output), env=env(), check=True, capture_output=True)
    return states


def check_complete(output: Path, n: int) -> None:
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(n))  # every input exactly once
    assert output.read_bytes() == output.with_name("reference.jsonl").read_bytes()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, write_jsonl):
    n = 200
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": f"record {i} " + "y" * (i % 11)} for i in range(n)])
    script = tmp_path / "slow_echo.py"
    script.write_text(SLOW_ECHO)
    config = tmp_path / "infer.yaml"
    template = {"engine": {"model": "unused"}, "input": {"path": data, "format": "pretraining"},
                "chunk_size": 4, "generation": {"max_new_tokens": 8}}

    def command(output: Path) -> list[str]:
        config.write_text(json.dumps({**template, "output": str(output)}))
        return [sys.executable, str(script), str(config)]

    states = kill_and_restart(command, tmp_path / "out.jsonl", n, kills=8, rng=random.Random(0))
    assert sum(0 < s < n for s in states) >= 5, states  # the kills landed mid-run
    check_complete(tmp_path / "out.jsonl", n)


@pytest.mark.slow
def test_sigkill_of_the_real_command_with_the_hf_generator(model_dir, alpaca_seed, tmp_path):
    n = 12

    def command(output: Path) -> list[str]:
        return [sys.executable, "-m", "oa_cli.main", "infer", "--model", model_dir, "--input", str(alpaca_seed),
                "--limit", str(n), "--max-new-tokens", "4", "--batch-size", "2", "--chunk-size", "1",
                "--output", str(output)]

    states = kill_and_restart(command, tmp_path / "out.jsonl", n, kills=2, rng=random.Random(1))
    assert len(states) == 2 and all(0 < s < n for s in states), states
    check_complete(tmp_path / "out.jsonl", n)
