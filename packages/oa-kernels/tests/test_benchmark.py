"""The CPU-side logic of benchmarks/kernels.py (its GPU part runs on a GPU machine only)."""

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).parents[3] / "benchmarks" / "kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_min_bytes_counts_each_read_and_write_once(bench):
    # GeGLU forward on bf16: read a and b, write c
    assert bench.min_bytes(2 * 100, 100, 2) == 600


def test_markdown_table_fractions_and_speedups(bench, tmp_path):
    report = bench.Report("GPU X", "2026-01-01", copy_gbps=2000.0)
    report.rows += [
        bench.Row("geglu", "ours", ms=1.0, bytes=1_800_000_000, error=1e-3),
        bench.Row("geglu", "liger", ms=1.5, bytes=1_800_000_000),
        bench.Row("geglu", "compile", note="failed: RuntimeError: x"),
    ]
    assert bench.speedups(report.rows, "geglu") == {"liger": 1.5}
    text = bench.render_markdown(report)
    assert "| geglu | ours | 1.000 | 0.90 |" in text
    assert "| geglu | liger | 1.500 | 0.60 | 1.50x |" in text
    assert "failed: RuntimeError: x" in text and "2000 GB/s" in text
    bench.write(report, tmp_path)
    assert (tmp_path / "kernels.md").read_text() == text
    assert '"provider": "liger"' in (tmp_path / "kernels.json").read_text()


def test_main_needs_a_gpu(bench, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert bench.main(["--out", "unused"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_speedups_compare_against_the_automatic_plan_not_a_forced_variant(bench):
    rows = [bench.Row("ce", "ours", ms=2.0, note="plan: auto"), bench.Row("ce", "ours", ms=4.0, note="forced"),
            bench.Row("ce", "eager", ms=3.0)]
    assert bench.speedups(rows, "ce") == {"eager": 1.5}
