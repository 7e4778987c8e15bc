"""``oa augment`` throughput against an OpenAI-compatible endpoint: records/s with 1 vs N concurrent requests.

    python benchmarks/augment_throughput.py --out DIR            # 400 records, latency 50 ms, capacity 16
    python benchmarks/augment_throughput.py --tiny --out DIR     # CPU smoke test (few records, low latency)

The endpoint is the fake one of ``oa_augment.testing`` in its own process (``python -m oa_augment.testing``): each
request takes ``--latency`` seconds and at most ``--capacity`` are served at once (more wait, as on a saturated
server), so the ideal rate is ``min(c, capacity) / latency``. For each concurrency ``c`` (``concurrency`` and
``engine.max_concurrent_requests`` both ``c``), a fresh ``oa augment`` run (the ``answer`` augmenter on the shipped
alpaca seed tasks, repeated to ``--records``; journal fsync per finished batch, filters and dedup on) is timed
end to end in this process, in-process the way the command runs it. Reported: records/s, the speed-up over
``c = 1`` and the efficiency (records/s over the ideal rate). Goal (issue 18): near-linear until the endpoint
saturates: efficiency >= 0.7 for every ``c <= capacity``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "examples/data/alpaca-seed/seed_tasks_alpaca.jsonl"
GOAL = 0.7


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def ideal_rate(concurrency: int, latency: float, capacity: int) -> float:
    """Records/s of a perfect client: ``min(c, capacity)`` requests finish every ``latency`` seconds."""
    return min(concurrency, capacity) / latency


def summarize(results: list[dict], latency: float, capacity: int) -> list[dict]:
    """Each result (concurrency, records, seconds) with records/s, speed-up over c=1, efficiency, and whether it
    meets the goal (only below saturation: ``c <= capacity``)."""
    base = next(r["records"] / r["seconds"] for r in results if r["concurrency"] == 1)
    out = []
    for r in results:
        rate = r["records"] / r["seconds"]
        eff = rate / ideal_rate(r["concurrency"], latency, capacity)
        out.append(r | {"records_per_s": rate, "speedup": rate / base, "efficiency": eff,
                        "goal_met": eff >= GOAL if r["concurrency"] <= capacity else None})
    return out


def render(report: dict) -> str:
    lines = [f"{report['date']}; {report['machine']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             f"endpoint: latency {report['latency'] * 1e3:g} ms, capacity {report['capacity']}; "
             f"{report['records']} records per run", "",
             "| concurrency | seconds | records/s | speed-up vs 1 | ideal records/s | efficiency |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        ideal = ideal_rate(r["concurrency"], report["latency"], report["capacity"])
        lines.append(f"| {r['concurrency']} | {r['seconds']:.2f} | {r['records_per_s']:.1f} | {r['speedup']:.2f}x | "
                     f"{ideal:.1f} | {r['efficiency']:.2f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- measurement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inputs(path: Path, records: int) -> Path:
    rows = SEEDS.read_text(encoding="utf-8").splitlines()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            row = json.loads(rows[i % len(rows)])
            row["instruction"] += f" (variant {i})"  # distinct records: the fake answers differ, dedup keeps them
            f.write(json.dumps(row) + "\n")
    return path


def ensure_plugin() -> None:
    from importlib import metadata

    from oa_core.plugins import add_plugin

    if not any(e.name == "augment" for e in metadata.entry_points(group="oa")):
        import oa_augment.plugin

        add_plugin(oa_augment.plugin, "augment")


def measure(url: str, data: Path, work: Path, concurrency: int) -> dict:
    import shutil

    from oa_augment.config import validate
    from oa_augment.pipeline import run_augment

    shutil.rmtree(work / f"c{concurrency}.augment", ignore_errors=True)  # a fresh run, not a resumed one
    config = validate({
        "augmenter": "answer", "input": {"path": str(data), "format": "alpaca"},
        "output": str(work / f"c{concurrency}.jsonl"), "generator": "openai", "concurrency": concurrency,
        "engine": {"model": "fake", "base_url": url, "max_concurrent_requests": concurrency},
        "generation": {"max_new_tokens": 256}}, {}, "benchmark")
    start = time.perf_counter()
    summary = run_augment(config, progress=False)
    seconds = time.perf_counter() - start
    if not summary.complete:
        raise RuntimeError(f"c={concurrency}: {summary.lines()[0]}")
    return {"concurrency": concurrency, "records": summary.inputs, "seconds": seconds}


def versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("oa-augment", "httpx", "datasketch"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "source"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for augment_throughput.json / .md and the runs")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: 24 records, latency 10 ms, c in 1, 4")
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    args = parser.parse_args(argv)
    if args.tiny:
        args.records, args.latency, args.capacity, args.concurrency = 24, 0.01, 4, [1, 4]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_plugin()
    data = inputs(out / "inputs.jsonl", args.records)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    server = subprocess.Popen([sys.executable, "-m", "oa_augment.testing", "--port", str(port), "--latency",
                               str(args.latency), "--capacity", str(args.capacity)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        server.stdout.readline()  # "fake OpenAI-compatible endpoint at ..." once it listens
        url = f"http://127.0.0.1:{port}/v1"
        measure(url, data, out, max(args.concurrency))  # warm-up: imports, the input's first read (datasets' cache)
        results = [measure(url, data, out, c) for c in args.concurrency]
    finally:
        server.terminate()
        server.wait()
    report = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores",
              "versions": versions(), "latency": args.latency, "capacity": args.capacity, "records": args.records,
              "results": summarize(results, args.latency, args.capacity)}
    (out / "augment_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "augment_throughput.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
