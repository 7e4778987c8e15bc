"""benchmarks/augment_throughput.py: its arithmetic, and a --tiny run on the CPU against the fake endpoint."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "augment_throughput.py"
spec = importlib.util.spec_from_file_location("augment_throughput", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_speedup_and_efficiency_against_the_ideal_rate():
    results = [{"concurrency": 1, "records": 100, "seconds": 5.0}, {"concurrency": 4, "records": 100, "seconds": 1.5},
               {"concurrency": 8, "records": 100, "seconds": 1.4}]
    out = bench.summarize(results, latency=0.05, capacity=4)
    assert [round(r["speedup"], 2) for r in out] == [1.0, 3.33, 3.57]
    assert [round(r["efficiency"], 2) for r in out] == [1.0, 0.83, 0.89]  # the ideal stops growing at capacity
    assert [r["goal_met"] for r in out] == [True, True, None]  # past saturation: no goal
    assert "| 4 | 1.50 | 66.7 | 3.33x | 80.0 | 0.83 |" in bench.render(
        {"date": "d", "machine": "m", "versions": {}, "latency": 0.05, "capacity": 4, "records": 100, "results": out})


@pytest.mark.slow
def test_tiny_run_writes_the_report(tmp_path):
    pytest.importorskip("oa_augment")
    assert bench.main(["--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "augment_throughput.json").read_text())
    assert [r["concurrency"] for r in report["results"]] == [1, 4]
    assert all(r["records"] == 24 and r["records_per_s"] > 0 for r in report["results"])
    assert (tmp_path / "augment_throughput.md").read_text().startswith(report["date"])
    assert sys.modules.get("oa_augment.pipeline") is not None
