"""A user can install only the light packages from the repository: oa-core (and oa-oasst with the `oa` command)
without torch; every oa-* dependency comes from the repository, none from PyPI. `oa env` works there. oa-augment
installs without torch too (with oa-data, which reads its inputs) and runs against an HTTP endpoint."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv") or str(Path(sys.executable).parent / "uv")


@pytest.mark.skipif(not Path(UV).exists(), reason="uv not installed")
@pytest.mark.parametrize("packages", [["oa-core"], ["oa-core", "oa-cli", "oa-oasst"]])
def test_light_packages_install_without_torch(tmp_path, packages):
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    paths = [str(ROOT / "packages" / p) for p in packages]
    subprocess.run([UV, "pip", "install", "-q", "--python", str(py), *paths], check=True, env=env)
    listed = subprocess.run([UV, "pip", "list", "--python", str(py)], capture_output=True, text=True, check=True).stdout
    names = {line.split()[0] for line in listed.splitlines()[2:]}
    assert {"torch", "transformers", "datasets", "numpy", "triton"}.isdisjoint(names)
    assert {n for n in names if n.startswith("oa-")} <= {"oa-core", "oa-command", "oa-oasst"}
    modules = [p.replace("-", "_") for p in packages]
    if "oa-oasst" in packages:  # the partial install has a working `oa` with the oasst commands
        out = subprocess.run([str(venv / "bin" / "oa"), "data", "oasst", "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "export" in out.stdout, out.stderr
        out = subprocess.run([str(venv / "bin" / "oa"), "env", "--json"], capture_output=True, text=True)
        assert out.returncode == 0 and not out.stderr, out.stderr
        info = json.loads(out.stdout)
        assert set(info["packages"]) == {"oa-core", "oa-command", "oa-oasst"}
        assert {p["distribution"] for p in info["plugins"]} == {"oa-core", "oa-oasst"}
        assert info["libraries"]["torch"] is None and info["gpu"] is None and info["broken"] == []
        out = subprocess.run([str(venv / "bin" / "oa"), "env"], capture_output=True, text=True)
        assert out.returncode == 0 and f"\n  {'torch':<20} not installed\n" in out.stdout, out.stderr
        # what a missing package provides is named with the package to install
        (tmp_path / "run.yaml").write_text("method: sft\ndata: {max_length: 64}\n")
        out = subprocess.run([str(venv / "bin" / "oa"), "train", str(tmp_path / "run.yaml")], capture_output=True, text=True)
        assert out.returncode == 2 and "command 'train' comes from oa-train, which is not installed" in out.stderr
        out = subprocess.run([str(venv / "bin" / "oa"), "augment", "--help"], capture_output=True, text=True)
        assert out.returncode == 2 and "command 'augment' comes from oa-augment, which is not installed" in out.stderr
        out = subprocess.run([str(venv / "bin" / "oa"), "config", "validate", str(tmp_path / "run.yaml")],
                             capture_output=True, text=True)
        assert out.returncode == 2 and "method: method 'sft' comes from oa-train" in out.stderr
        assert "data: config section 'data' comes from oa-data, which is not installed" in out.stderr
    code = (
        "import time; t = time.perf_counter(); import oa_core; dt = time.perf_counter() - t; "
        f"import {', '.join(modules)}; from oa_core.plugins import PluginManager; "
        "reg = PluginManager().registry(); assert not reg.failures, reg.failures; "
        "print(dt, len(reg.names('dataset_format')))"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 0.5
    assert int(out[1]) >= 8


@pytest.mark.slow
@pytest.mark.skipif(not Path(UV).exists(), reason="uv not installed")
def test_oa_augment_installs_without_torch_and_runs_over_http(tmp_path):
    from oa_augment.testing import FakeOpenAIServer

    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") and k != "PYTHONPATH"}
    paths = [str(ROOT / "packages" / p) for p in ("oa-core", "oa-cli", "oa-data", "oa-augment")]
    subprocess.run([UV, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *paths], check=True, env=env)
    listed = subprocess.run([UV, "pip", "list", "--python", str(venv / "bin" / "python")], capture_output=True,
                            text=True, check=True).stdout
    names = {line.split()[0] for line in listed.splitlines()[2:]}
    assert {"torch", "triton", "vllm"}.isdisjoint(names)
    assert {n for n in names if n.startswith("oa-")} == {"oa-core", "oa-command", "oa-data", "oa-augment"}
    oa = str(venv / "bin" / "oa")
    seeds = ROOT / "examples" / "data" / "alpaca-seed" / "seed_tasks_alpaca.jsonl"
    with FakeOpenAIServer() as server:
        out = subprocess.run([oa, "augment", "--augmenter", "answer", "--input", str(seeds), "--format", "alpaca",
                              "--limit", "5", "--output", str(tmp_path / "out.jsonl"), "--generator", "openai",
                              "--model", "fake", "--base-url", server.url], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "5 inputs: 5 done" in out.stdout and len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
    # the hf generator needs oa-infer: named, with the package to install
    out = subprocess.run([oa, "augment", "--augmenter", "answer", "--input", str(seeds), "--format", "alpaca",
                          "--output", str(tmp_path / "hf.jsonl"), "--generator", "hf", "--model", "x"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "generator: generator 'hf' comes from oa-infer, which is not installed" in out.stderr, out.stderr
