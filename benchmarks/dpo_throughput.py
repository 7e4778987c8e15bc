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
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_throughput import device_name, ensure_plugins, versions  # noqa: E402

VARIANTS = ("trl-live", "oa-live", "trl-cached", "oa-cached")
GOALS = {"step": 0.65, "memory": 0.8, "cached_vs_trl_live": 0.5}
HH_RLHF = ROOT / "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz"

MODEL_CONFIGS = {
    # Llama-3.2-1B's shape (hidden 2048, 16 layers, 32/8 heads, MLP 8192, tied, vocabulary 128256)
    "full": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 32000},
}


def model_config(size: str) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "bos_token_id": 1,
            "eos_token_id": 2, "tie_word_embeddings": True, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "initializer_range": 0.02,
            "attention_dropout": 0.0, "attention_bias": False, "mlp_bias": False, "use_cache": False,
            **MODEL_CONFIGS[size]}


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def summarize(steps: list[dict], warmup: int) -> dict:
    """Step times (ms) and throughput over the steps after ``warmup``; each step has seconds and tokens."""
    kept = steps[warmup:]
    if not kept:
        raise ValueError(f"no steps after {warmup} warm-up steps (have {len(steps)})")
    times = sorted(s["seconds"] for s in kept)
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    seconds, tokens = sum(times), sum(s["tokens"] for s in kept)
    return {"measured_steps": len(kept), "step_ms_median": 1e3 * median, "step_ms_mean": 1e3 * seconds / len(kept),
            "tokens_per_step": tokens / len(kept), "tokens_per_s": tokens / seconds}


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


class Meter:
    """Times optimizer steps (host clock after a CUDA sync) and counts the policy's non-padding tokens (pre-hook on
    training forwards only: reference and precompute forwards are not counted)."""

    def __init__(self, model, device):
        import torch

        self.torch, self.device = torch, device
        self.steps: list[dict] = []
        self.tokens = 0
        self.t0 = None
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        if module.training and self.torch.is_grad_enabled():
            mask = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.tokens += int(mask.sum()) if mask is not None and mask.dim() == 2 else ids.numel()

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def start(self):
        self.sync()
        self.t0 = time.perf_counter()

    def step(self, loss: float | None):
        self.sync()
        now = time.perf_counter()
        self.steps.append({"seconds": now - self.t0, "tokens": self.tokens, "loss": loss})
        self.tokens = 0
        self.t0 = time.perf_counter()


def write_run_config(work: Path, args, variant: str) -> Path:
    import yaml

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
    path = work / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


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
    from transformers import TrainerCallback
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
        output_dir=str(work / f"run-{variant}"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, learning_rate=5e-7, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", logging_steps=1, save_strategy="no",
        report_to="none", seed=cfg.seed, gradient_checkpointing=False, max_length=args.max_length, beta=0.1,
        loss_type=["sigmoid"], precompute_ref_log_probs=cached, precompute_ref_batch_size=args.batch,
        bf16=args.mixed_precision == "bf16", use_cpu=args.device == "cpu", dataloader_num_workers=0,
        disable_tqdm=True)
    t0 = time.perf_counter()
    trainer = PreTokenized(model=model, ref_model=None if cached else copy.deepcopy(model), args=dpo_args,
                           train_dataset=train, processing_class=tokenizer)
    setup_s = time.perf_counter() - t0
    meter = Meter(model, torch.device(args.device))

    class Timer(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            meter.start()

        def on_step_end(self, a, state, control, **kw):
            meter.step(None)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs and meter.steps:
                meter.steps[-1]["loss"] = float(logs["loss"])

    trainer.add_callback(Timer())
    trainer.train()
    meter.handle.remove()
    return {"steps": meter.steps, "pairs": len(train), "setup_s": setup_s}


def one_variant(args) -> None:
    import torch

    ensure_plugins()
    work = Path(args.out)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run_trl(args, work, args.variant) if args.variant.startswith("trl") else run_oa(args, work, args.variant)
    res["wall_s"] = time.perf_counter() - t0
    if args.device == "cuda":
        res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        res["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    Path(args.result).write_text(json.dumps(res, default=str))


def driver(args) -> int:
    work = Path(args.out).resolve()
    (work / "model-config").mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.tiny else "full"
    (work / "model-config" / "config.json").write_text(json.dumps(model_config(size), indent=1))
    results, env = {}, dict(os.environ, PYTHONUNBUFFERED="1")
    for variant in [v for v in args.variants.split(",") if v]:
        result = work / f"result-{variant}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--variant", variant, "--result", str(result), "--out", str(work),
               "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length),
               "--device", args.device, "--dtype", args.dtype, "--mixed-precision", args.mixed_precision,
               "--attn", args.attn, "--oa-attn", args.oa_attn, "--patches", args.patches]
        print(f"== {variant}: {' '.join(cmd[2:])}", flush=True)
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not result.exists():
            print(f"!! {variant} failed (exit {proc.returncode})", flush=True)
            results[variant] = {"failed": proc.returncode}
            continue
        res = json.loads(result.read_text())
        res.update(summarize(res["steps"], args.warmup))
        results[variant] = res
        print(f"   {variant}: median step {res['step_ms_median']:.1f} ms", flush=True)
    ok = {v: r for v, r in results.items() if "failed" not in r}
    first = {v: r["steps"][0]["loss"] for v, r in ok.items() if r["steps"] and r["steps"][0]["loss"] is not None}
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "versions": versions(), "args": vars(args),
              "model_config": model_config(size), "device": device_name(args.device), "results": results,
              "goals": goals(ok), "loss_check": check_losses(first) if ok else ["no variant ran"]}
    (work / "dpo_throughput.json").write_text(json.dumps(report, indent=1, default=str))
    table = render(report)
    (work / "dpo_throughput.md").write_text(table + "\n")
    print(table)
    return 0 if len(ok) == len(results) and not report["loss_check"] else 1


def render(report: dict) -> str:
    lines = [f"{report['date']}; {report['device']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             "", "| variant | pairs | tokens/step | step ms (median / mean) | tokens/s | peak GiB (alloc / reserved) | "
             "set-up s | loss step 1 / last |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["results"].items():
        if "failed" in r:
            lines.append(f"| {name} | failed (exit {r['failed']}) |")
            continue
        peak = f"{r['peak_gib']:.2f} / {r['peak_reserved_gib']:.2f}" if "peak_gib" in r else "n/a"
        losses = [s["loss"] for s in r["steps"] if s["loss"] is not None]
        loss = f"{losses[0]:.4f} / {losses[-1]:.4f}" if losses else "n/a"
        lines.append(f"| {name} | {r['pairs']} | {r['tokens_per_step']:.0f} | {r['step_ms_median']:.1f} / "
                     f"{r['step_ms_mean']:.1f} | {r['tokens_per_s']:.0f} | {peak} | {r['setup_s']:.1f} | {loss} |")
    lines.append("")
    for g in report["goals"]:
        lines.append(f"- {g['name']}: {g['ratio']:.2f}x (goal <= {g['goal']}x: {'met' if g['met'] else 'NOT met'})")
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
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--mixed-precision", default=None)
    p.add_argument("--attn", default="sdpa", help="attention of the TRL variants (and of oa's unless --oa-attn)")
    p.add_argument("--oa-attn", default=None, help="attention of the oa variants ('default': oa's own choice)")
    p.add_argument("--patches", default=None, help="oa's model patches, comma-separated ('default': oa's own choice; "
                   "default here: kernels.fused_linear_ce on a GPU)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    tiny = args.tiny
    args.steps = args.steps or (6 if tiny else 40)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 5)
    args.batch = args.batch or (4 if tiny else 8)
    args.max_length = args.max_length or (256 if tiny else 1024)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    args.mixed_precision = args.mixed_precision or ("no" if args.device == "cpu" else "bf16")
    args.oa_attn = args.oa_attn or args.attn
    if args.patches is None:
        args.patches = "kernels.fused_linear_ce" if args.device == "cuda" else ""
    if args.variant:
        one_variant(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
