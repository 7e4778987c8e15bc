"""DPO training step time and peak memory: oa's ``method: dpo`` vs TRL's ``DPOTrainer`` (same model, data, batch,
precision), each with a live reference model and with precomputed reference log-probs.

    python benchmarks/dpo_throughput.py --out DIR             # GPU: Llama-3.2-1B shape, hh-rlhf, 8 pairs, 1024 tokens
    python benchmarks/dpo_throughput.py --tiny --out DIR      # CPU smoke test (tiny model, few steps)

Each variant runs in its own process (peak memory starts from zero), in this order: ``trl-live``, ``oa-live``,
``trl-cached``, ``oa-cached``.

Model: randomly initialised from a local config: Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads / 8 KV
heads, MLP 8192, tied embeddings, 128256-token vocabulary so the LM head costs what it costs there; the token ids
come from the llama2-sp tokenizer), bf16 weights with bf16 autocast, attention ``sdpa``.
Data: examples/data/hh-rlhf (300 pairs, ``hh_rlhf``: shared prefix as prompt), chatml, max_length 1024, tokenized
once by oa-data (:func:`oa_data.candidates.prepare_candidates`: truncation keeps the prompt's end). TRL trains on
exactly these token ids (its ``prompt_ids``/``chosen_ids``/``rejected_ids`` columns; its tokenization is skipped).
Both: ``loss_type: sigmoid``, beta 0.1, ``--batch`` pairs per optimizer step (one micro-batch), torch AdamW lr 5e-7,
cosine, no warm-up, weight decay 0, clip 1.0, no gradient checkpointing.

- ``*-live``: a second, frozen copy of the starting model computes the reference log-probs every step (TRL:
  ``ref_model`` given; oa: ``reference.source: copy``).
- ``*-cached``: the reference log-probs of every pair are computed once before training (TRL:
  ``precompute_ref_log_probs``; oa: ``reference.precompute`` into a fresh cache folder), no reference model in
  training. The precomputation is in the set-up time, not in the step times.
- oa: ``train.padding_free: true`` (every micro-batch one packed row) and ``model.patches:
  [kernels.fused_linear_ce]`` on a GPU (no full-vocabulary logits; TRL's DPO has its own fused LM head).

Measured per optimizer step (CUDA synchronised, host clock) from a per-step callback; the first ``--warmup``
steps are dropped; the median is the headline. Tokens: non-padding tokens of the policy's forwards. Peak memory:
``torch.cuda.max_memory_allocated`` over the whole process (set-up and precomputation included).
Goals (issue 16), mode against mode: step time <= 0.65x TRL's, peak memory <= 0.8x TRL's; and oa's cached mode
<= 0.5x TRL's live step time.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Meter, device_name, summarize  # noqa: E402
from common import llama_config as model_config  # noqa: E402

VARIANTS = ("trl-live", "oa-live", "trl-cached", "oa-cached")
GOALS = {"step": 0.65, "memory": 0.8, "cached_vs_trl_live": 0.5}
HH_RLHF = ROOT / "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz"


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def goals(results: dict[str, dict]) -> list[dict]:
    """The issue's goals, each ``{name, ratio, goal, met}`` (ratios of medians and of peaks; None without GPU)."""
    out = []

    def add(name, a, b, key, goal):
        if a in results and b in results and results[a].get(key) and results[b].get(key):
            ratio = results[a][key] / results[b][key]
            out.append({"name": name, "ratio": ratio, "goal": goal, "met": ratio <= goal})

    for mode in ("live", "cached"):
        add(f"oa-{mode} / trl-{mode} step time", f"oa-{mode}", f"trl-{mode}", "step_ms_median", GOALS["step"])
        add(f"oa-{mode} / trl-{mode} peak memory", f"oa-{mode}", f"trl-{mode}", "peak_gib", GOALS["memory"])
    add("oa-cached / trl-live step time", "oa-cached", "trl-live", "step_ms_median", GOALS["cached_vs_trl_live"])
    return out


def check_losses(first: dict[str, float], tol: float = 0.02) -> list[str]:
    """At step 1 the policy is its reference, so every variant's sigmoid DPO loss is ln 2."""
    return [f"{name}: step-1 loss {loss:.4f} is not ln 2 = {math.log(2):.4f}" for name, loss in first.items()
            if not (math.isfinite(loss) and abs(loss - math.log(2)) < tol)]


# ---------------------------------------------------------------- measurement


def write_run_config(work: Path, args, variant: str) -> Path:
    mode = variant.split("-")[1]
    model = {"path": str(work / "model-config"), "random_init": True, "dtype": args.dtype}
    attn = args.attn if variant.startswith("trl") else args.oa_attn
    if attn != "default":  # default: no attn_implementation in the config, oa picks (flex for packed rows on a GPU)
        model["attn_implementation"] = attn
    if args.patches != "default":  # default: no model.patches, oa picks (kernels.all on a GPU)
        model["patches"] = [p for p in args.patches.split(",") if p]
    cfg = {
        "method": "dpo", "output_dir": str(work / f"run-{variant}"), "seed": 0,
        "model": model,
        "tokenizer": {"path": str(ROOT / "assets/tokenizers/llama2-sp")},
        "datasets": [{"path": str(HH_RLHF), "format": "hh_rlhf"}],
        "data": {"chat_template": "chatml", "max_length": args.max_length, "cache_dir": str(work / "oa-cache")},
        "train": {"max_steps": args.steps, "per_device_batch_size": args.batch, "learning_rate": 5e-7,
                  "lr_scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "logging_steps": 1,
                  "save_steps": None, "mixed_precision": args.mixed_precision, "gradient_checkpointing": False,
                  "beta": 0.1, "loss_type": "sigmoid", "padding_free": True,
                  "reference": {"source": "copy", "precompute": mode == "cached", "batch_size": args.batch,
                                "cache_dir": str(work / f"ref-cache-{variant}-{os.getpid()}")}},
    }
    return common.write_yaml(work / f"{variant}.yaml", cfg)


def run_oa(args, work: Path, variant: str) -> dict:
    import torch

    from oa_core.config import load_config
    from oa_train.preference.pairs import PairwiseObjective
    from oa_train.training.loop import Loop

    class Metered(PairwiseObjective):
        """The DPO objective with a meter on its model; the reference set-up (precomputation) is timed apart."""

        def prepare_data(self):
            t0 = time.perf_counter()
            out = super().prepare_data()
            self.setup_s = time.perf_counter() - t0
            self.meter = Meter(self.run.model, torch.device(args.device))
            return out[0], []

        def _start_reference(self, model, step):
            t0 = time.perf_counter()
            super()._start_reference(model, step)
            self.meter.sync()
            self.setup_s += time.perf_counter() - t0
            self.meter.start()

    objective = Metered()
    loaded = load_config(write_run_config(work, args, variant))
    Loop(loaded, objective, callbacks=[lambda step, record: objective.meter.step(record.get("loss"))]).run()
    objective.meter.handle.remove()
    run = objective.run
    return {"steps": objective.meter.steps, "pairs": len(objective.examples["train"]), "setup_s": objective.setup_s,
            "patches": run.model_manifest.get("patches"), "route": run.model_manifest.get("label_logprobs")}


def run_trl(args, work: Path, variant: str) -> dict:
    import copy

    import datasets
    import torch
    import trl
    from transformers.trainer_utils import set_seed

    from oa_core.config import load_config
    from oa_data.candidates import prepare_candidates
    from oa_train.model import prepare_model

    cfg = load_config(write_run_config(work, args, variant)).config
    cfg.model.patches = []  # TRL brings its own fused LM head
    set_seed(cfg.seed)  # as oa's loop does before building the model: the same initial weights
    prepared = prepare_model(cfg, show_table=False)
    model, tokenizer = prepared.model, prepared.tokenizer.tokenizer
    rows = prepare_candidates(cfg, prepared.tokenizer, "train", progress=False).rows
    train = datasets.Dataset.from_list([{"prompt_ids": r["prompt_input_ids"], "chosen_ids": r["candidate_input_ids"][0],
                                         "rejected_ids": r["candidate_input_ids"][1]} for r in rows])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cached = variant.endswith("cached")

    class PreTokenized(trl.DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # oa-data's token ids, the ones oa trains on

    dpo_args = trl.DPOConfig(
        output_dir=str(work / f"run-{variant}"), per_device_train_batch_size=args.batch, learning_rate=5e-7,
        max_length=args.max_length, beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=cached,
        precompute_ref_batch_size=args.batch, **common.trl_args(args, cfg.seed))
    t0 = time.perf_counter()
    trainer = PreTokenized(model=model, ref_model=None if cached else copy.deepcopy(model), args=dpo_args,
                           train_dataset=train, processing_class=tokenizer)
    setup_s = time.perf_counter() - t0
    meter = Meter(model, torch.device(args.device))
    trainer.add_callback(common.timer(meter))
    trainer.train()
    meter.handle.remove()
    return {"steps": meter.steps, "pairs": len(train), "setup_s": setup_s}


def driver(args) -> int:
    size = "tiny" if args.tiny else "full"
    work = common.workdir(args.out, model_config(size))
    results = {}
    for variant in [v for v in args.variants.split(",") if v]:
        result = work / f"result-{variant}.json"
        result.unlink(missing_ok=True)
        res = common.run_variant(__file__, variant, result, [
            "--out", str(work), "--steps", str(args.steps), "--batch", str(args.batch),
            "--max-length", str(args.max_length), "--device", args.device, "--dtype", args.dtype,
            "--mixed-precision", args.mixed_precision, "--attn", args.attn, "--oa-attn", args.oa_attn,
            "--patches", args.patches])
        results[variant] = res
        if "failed" not in res:
            res.update(summarize(res["steps"], args.warmup))
            print(f"   {variant}: median step {res['step_ms_median']:.1f} ms", flush=True)
    ok = {v: r for v, r in results.items() if "failed" not in r}
    first = {v: r["steps"][0]["loss"] for v, r in ok.items() if r["steps"] and r["steps"][0]["loss"] is not None}
    report = common.new_report(args, model_config=model_config(size), device=device_name(args.device), results=results,
                               goals=goals(ok), loss_check=check_losses(first) if ok else ["no variant ran"])
    common.write_report(work, "dpo_throughput", report, render)
    return 0 if len(ok) == len(results) and not report["loss_check"] else 1


def render(report: dict) -> str:
    lines = [common.header(report),
             "", "| variant | pairs | tokens/step | step ms (median / mean) | tokens/s | peak GiB (alloc / reserved) | "
             "set-up s | loss step 1 / last |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["results"].items():
        if "failed" in r:
            lines.append(f"| {name} | failed (exit {r['failed']}) |")
            continue
        lines.append(f"| {name} | {r['pairs']} | {r['tokens_per_step']:.0f} | {r['step_ms_median']:.1f} / "
                     f"{r['step_ms_mean']:.1f} | {r['tokens_per_s']:.0f} | {common.peak(r)} | {r['setup_s']:.1f} | "
                     f"{common.first_last_loss(r['steps'], 4)} |")
    lines.append("")
    lines += common.goal_lines(report["goals"])
    lines.append("- step-1 loss check: " + ("; ".join(report["loss_check"]) or "ok (every variant ln 2 at step 1)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-dpo")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, short rows, few steps")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None, help="steps dropped from the averages")
    p.add_argument("--batch", type=int, default=None, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=None)
    common.device_args(p)
    p.add_argument("--attn", default="sdpa", help="attention of the TRL variants (and of oa's unless --oa-attn)")
    p.add_argument("--oa-attn", default=None, help="attention of the oa variants ('default': oa's own choice)")
    p.add_argument("--patches", default=None, help="oa's model patches, comma-separated ('default': oa's own choice; "
                   "default here: kernels.fused_linear_ce on a GPU)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common.device_defaults(args)
    tiny = args.tiny
    args.steps = args.steps or (6 if tiny else 40)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 5)
    args.batch = args.batch or (4 if tiny else 8)
    args.max_length = args.max_length or (256 if tiny else 1024)
    args.oa_attn = args.oa_attn or args.attn
    if args.patches is None:
        args.patches = "kernels.fused_linear_ce" if args.device == "cuda" else ""
    if args.variant:
        common.one_variant(args, run_trl if args.variant.startswith("trl") else run_oa)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
