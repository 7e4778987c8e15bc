"""``oa augment`` killed with SIGKILL at random moments, then restarted until it finishes: every input's records
are in the output exactly once, and the output equals that of a run that was never interrupted."""

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

RUN = '''
import sys
from importlib import metadata
from oa_core.plugins import add_plugin
if not any(e.name == "augment" for e in metadata.entry_points(group="oa")):
    import oa_augment.plugin
    add_plugin(oa_augment.plugin, "augment")
from oa_cli.main import main
sys.exit(main(["augment", sys.argv[1]]))
'''


def journal_lines(work: Path) -> int:
    path = work / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, seeds):
    from oa_augment.testing import FakeOpenAIServer

    n = 120
    rng = random.Random(0)
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with FakeOpenAIServer(latency=0.01) as server:
        def config(name: str) -> Path:
            path = tmp_path / f"{name}.yaml"
            path.write_text(json.dumps({
                "augmenter": "answer", "input": {"path": str(seeds), "format": "alpaca", "limit": n},
                "output": str(tmp_path / f"{name}.jsonl"), "generator": "openai", "concurrency": 4,
                "engine": {"model": "fake", "base_url": server.url}, "generation": {"max_new_tokens": 64}}))
            return path

        subprocess.run([sys.executable, str(script), str(config("reference"))], env=env, check=True,
                       capture_output=True)
        work, kills = tmp_path / "out.augment", []
        for _ in range(8):
            done = journal_lines(work)
            if done >= n - 4:
                break
            target = rng.randint(done + 1, done + max(1, (n - done) // 3))
            proc = subprocess.Popen([sys.executable, str(script), str(config("out"))], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while journal_lines(work) < target and proc.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(journal_lines(work))
            assert not (tmp_path / "out.jsonl").exists()  # the output is written only by a run that finishes
        done = subprocess.run([sys.executable, str(script), str(config("out"))], env=env, capture_output=True,
                              text=True)
    assert done.returncode == 0, done.stderr
    assert len(kills) >= 3 and kills == sorted(kills)
    journal = [json.loads(line) for line in (work / "journal.jsonl").read_text().splitlines()]
    assert sorted(line["index"] for line in journal) == list(range(n))  # every input exactly once
    assert f"{n} inputs: {n} done" in done.stdout and "from an earlier run" in done.stdout
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
