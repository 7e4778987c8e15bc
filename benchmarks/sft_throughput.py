"""Packed SFT training throughput: oa's SFT method vs TRL's SFTTrainer (same model, data, batch, precision).

    python benchmarks/sft_throughput.py --out DIR                 # GPU: Qwen2.5-0.5B-like model, 2048 tokens
    python benchmarks/sft_throughput.py --shape llama1b --max-length 4096 --batch 2 \
        --variants oa-default,oa@sdpa,trl@flex_attention,trl+liger@flex_attention --out DIR
    python benchmarks/sft_throughput.py --tiny --out DIR          # CPU smoke test (tiny model, few steps)

Each variant runs in its own process (the RoPE patch swaps a function process-wide; peak memory starts
from zero), in the order given. A variant is ``NAME[@ATTENTION]`` (ATTENTION overrides ``--attn``):

- ``oa-default``: oa as a user gets it without flags: no ``model.patches`` and no ``attn_implementation`` in the
  config (on a GPU: ``kernels.all`` and flex attention for packed rows);
- ``oa``: no patches; ``oa+kernels``: ``model.patches: [kernels.all]``; ``oa+compile``: ``[kernels.all, compile.layers]``;
- ``trl``: TRL's SFTTrainer; ``trl+liger``: the same with ``use_liger_kernel=True`` (Liger's RoPE, RMSNorm,
  SwiGLU and fused linear cross-entropy);
- ``--repeat`` runs the first oa variant again at the end to show the run-to-run spread.

Models (``--shape``), randomly initialised from a local config with the 32000-token llama2-sp vocabulary (plus
the chatml tokens the pipeline adds) unless the shape says otherwise: ``qwen0.5b`` (``qwen2``: hidden 896, 24
layers, 14 heads / 2 KV heads, MLP 4864, tied embeddings), ``llama1b`` (Llama-3.2-1B: hidden 2048, 16 layers,
32 heads / 8 KV heads, MLP 8192, tied embeddings), ``llama1b-128k`` (the same with a 128,256-row LM head, as
Llama 3's vocabulary). bf16 weights with bf16 autocast.
Data: examples/data/oasst/en_100_tree.jsonl (oasst.sft) + alpaca seed tasks, chatml, max_length 2048,
tokenized by oa-data. oa packs them with its pipeline (``data.packing``); TRL gets the same tokenized,
unpacked samples (``input_ids`` + ``labels``) and packs them itself (``packing=True``, its default
``bfd`` strategy, padding-free). A micro-batch of ``--batch`` packed rows is one flattened row in both.
Same optimizer (torch AdamW, lr 2e-5, cosine, no warm-up, weight decay 0, clip 1.0), no gradient
checkpointing, ``--steps`` optimizer steps, gradient accumulation 1.

Measured per optimizer step from a forward pre-hook on the model (tokens, supervised tokens, attention work) and
a per-step callback that records a CUDA event (time between consecutive events; the meter never synchronises,
so it adds no idle GPU time of its own); the first ``--warmup`` steps are
dropped. Throughput is tokens over the summed step time of the measured steps.

MFU = (6 * N * T + A) / (t * 989e12): N = parameters in matrix products (all parameters except the
input embedding; the tied LM head counted once as a product), T = tokens (all positions, supervised or
not), A = causal attention products = 12 * layers * heads * head_dim * sum over tokens of (position + 1)
(QK^T and AV, forward + 2x backward, each query attending its own sample's earlier tokens), t = step time,
989 TFLOP/s = the bf16 dense peak of an H100 SXM and of an H200.

``--profile K`` records K steady steps after the warm-up with ``torch.profiler`` in every variant and adds a
per-category GPU time breakdown per step (matrix products, attention, optimizer, Triton kernels, elementwise and
copies, reductions, communication, other) and the time the GPU sat idle (step time minus the union of kernel
intervals) to the report; profiled steps are left out of the averages (the profiler slows them). Each profiled
variant's Chrome trace is written to ``trace-<variant>.json.gz`` (open it in Perfetto to see what the host does
while the GPU idles).

``--processes 1,2`` runs each variant on 1 and on 2 GPUs (one process per GPU, launched as ``oa train
--num-processes`` does, with ``--accelerate-config`` or plain DDP): rows "VARIANT x2" count the tokens of all
processes, time the slowest, give memory per GPU and MFU against 2 GPUs' peak, and a scaling line compares each
with its one-GPU row (efficiency = tokens/s on N GPUs / (N x tokens/s on one)). The per-device batch stays the same.
On CPU the processes use gloo (a smoke test only).

Ratios are printed against every TRL variant that ran (``X / trl+liger@flex_attention: ...``), each naming the
two rows it compares.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import H100_BF16_PEAK, attention_flops, device_name  # noqa: E402
from common import summarize_mfu as summarize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("oa", "trl", "oa+kernels")
BASES = ("oa-default", "oa", "oa+kernels", "oa+compile", "trl", "trl+liger")

MODEL_CONFIGS = {
    # Qwen2.5-0.5B's shape with a 32000-token vocabulary (assets/tokenizers/llama2-sp)
    "qwen0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                 "num_attention_heads": 14, "num_key_value_heads": 2},
    "llama1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                "num_attention_heads": 32, "num_key_value_heads": 8},
    "llama1b-128k": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "tiny": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
}


def model_config(shape_name: str) -> dict:
    shape = dict(MODEL_CONFIGS[shape_name])
    kind = shape.pop("model_type")
    common = {"hidden_act": "silu", "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True,
              "rms_norm_eps": 1e-6, "initializer_range": 0.02, "attention_dropout": 0.0, "use_cache": False}
    if kind == "llama":
        return {**common, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 131072,
                "rope_theta": 500000.0, "attention_bias": False, "mlp_bias": False, **shape}
    return {**common, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 32768,
            "max_window_layers": shape["num_hidden_layers"], "use_sliding_window": False, "rope_theta": 1000000.0, **shape}


def parse_variant(variant: str, attn: str) -> tuple[str, str]:
    """``NAME[@ATTENTION]`` -> (name, attention implementation)."""
    name, _, override = variant.partition("@")
    if name not in BASES:
        raise SystemExit(f"unknown variant '{name}' (one of {', '.join(BASES)}, optionally @ATTENTION)")
    return name, override or attn


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def matmul_params(total: int, embedding: int, vocab: int, hidden: int, tied: bool) -> int:
    """Parameters that take part in matrix products: all but the input embedding, the tied LM head counted once."""
    return total - embedding + (vocab * hidden if tied else 0)


def check_losses(first: dict[str, float], vocab: int, tol: float = 0.15) -> list[str]:
    """Step-1 losses of a random-init model: each near ln(vocab), all within ``tol`` of each other."""
    problems = []
    ref = math.log(vocab)
    for name, loss in first.items():
        if not (math.isfinite(loss) and abs(loss - ref) < 0.5):
            problems.append(f"{name}: step-1 loss {loss:.4f} is not near ln(V)={ref:.4f}")
    vals = list(first.values())
    if vals and max(vals) - min(vals) > tol:
        problems.append(f"step-1 losses differ by {max(vals) - min(vals):.4f} (> {tol}): {first}")
    return problems


CATEGORIES = (  # first match wins; names as the CUDA kernels are called (cuBLAS on Hopper: nvjet, sm90_xmma)
    ("attention", ("flex_attention", "flash", "fmha", "attention", "triton_tem_fused")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "splitk")),
    ("optimizer", ("adam", "multi_tensor_apply")),
    ("communication", ("nccl",)),
    ("triton", ("triton_",)),  # inductor's kernels; our own Triton kernels have no C++ namespace (below)
    ("reduction", ("reduce", "norm")),
    ("elementwise/copy", ("elementwise", "copy", "cast", "fill", "vectorized", "memcpy", "memset", "cat", "index")),
)


def kernel_category(name: str) -> str:
    low = name.lower()
    for category, needles in CATEGORIES:
        if any(n in low for n in needles):
            return category
        if category == "triton" and "::" not in name and low.endswith("kernel"):
            return category
    return "other"


def gpu_breakdown(kernels: list[tuple[str, float, float]], wall_us: float, steps: int) -> dict:
    """Milliseconds per step by kernel category, plus ``idle`` (wall time no kernel covered) and ``busy``;
    ``kernels`` holds (name, start us, end us) of every GPU kernel of the profiled steps."""
    out: dict[str, float] = {}
    for name, start, end in kernels:
        cat = kernel_category(name)
        out[cat] = out.get(cat, 0.0) + (end - start)
    busy, last = 0.0, float("-inf")
    for _, start, end in sorted(kernels, key=lambda k: k[1]):
        if end > last:
            busy += end - max(start, last)
            last = end
    per_step = {k: v / steps / 1e3 for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
    return {**per_step, "busy": busy / steps / 1e3, "idle": max(wall_us - busy, 0.0) / steps / 1e3,
            "step": wall_us / steps / 1e3}


def top_kernels(kernels: list[tuple[str, float, float]], steps: int, n: int = 12) -> list[tuple[str, float]]:
    total: dict[str, float] = {}
    for name, start, end in kernels:
        total[name] = total.get(name, 0.0) + end - start
    return [(name[:90], us / steps / 1e3) for name, us in sorted(total.items(), key=lambda kv: -kv[1])[:n]]


# ---------------------------------------------------------------- measurement


class Meter:
    """Counts each forward's tokens (pre-hook) and times each optimizer step (CUDA events, read at the end)."""

    def __init__(self, model, device, profile: int = 0, warmup: int = 0, trace: Path | None = None):
        import torch

        self.torch, self.device = torch, device
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.layers = cfg.num_hidden_layers
        self.pending: list = []  # (tokens, supervised tensor or None, position sum tensor) since the last step
        self.steps: list[dict] = []
        self.last = None
        self.model = model
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)
        self.profile_steps, self.warmup = profile, warmup
        self.profiler, self.profile, self.trace = None, None, trace

    def params(self) -> dict:
        """Unique parameters, and those in matrix products (see the module docstring)."""
        m = self.model
        total = sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())
        emb = m.get_input_embeddings().weight
        head = m.get_output_embeddings()
        tied = head is not None and head.weight is emb
        return {"n_params": total, "n_matmul": matmul_params(total, emb.numel(), emb.shape[0], emb.shape[1], tied),
                "tied": tied}

    def hook(self, module, args, kwargs):
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        pos = kwargs.get("position_ids")
        labels = kwargs.get("labels")
        pos_sum = (pos + 1).sum() if pos is not None else ids.shape[0] * ids.shape[1] * (ids.shape[1] + 1) / 2
        sup = (labels[:, 1:] != -100).sum() if labels is not None else None
        self.pending.append((ids.numel(), sup, pos_sum))

    def start(self):
        self.last = self.clock()

    def clock(self):
        """A CUDA event recorded in the stream (no synchronisation, so the meter adds no GPU idle time that the
        trainer itself does not cause), or the host clock on a CPU."""
        if self.device.type != "cuda":
            return time.perf_counter()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def step(self, loss: float | None, supervised: int | None = None):
        mark = self.clock()
        self.steps.append({"marks": (self.last, mark), "tokens": sum(p[0] for p in self.pending),
                           "supervised": supervised if supervised is not None else [p[1] for p in self.pending],
                           "pos_sums": [p[2] for p in self.pending], "loss": loss,
                           "profiled": self.profiler is not None})
        self.pending = []
        self.profile_step()
        self.last = self.clock() if self.profile_steps else mark  # the profiler's start and export are no step's

    def resolve(self) -> list[dict]:
        """Synchronise once and turn the recorded steps into numbers (seconds, supervised tokens, attention work)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        for s in self.steps:
            if "marks" not in s:
                continue
            a, b = s.pop("marks")
            s["seconds"] = a.elapsed_time(b) / 1e3 if self.device.type == "cuda" else b - a
            if isinstance(s["supervised"], list):
                s["supervised"] = int(sum(int(x) for x in s["supervised"] if x is not None))
            s["attn_flops"] = attention_flops(float(sum(float(x) for x in s.pop("pos_sums"))), self.layers,
                                              self.heads, self.head_dim)
        return self.steps

    def profile_step(self):
        """Start the profiler after the warm-up steps; stop it ``profile_steps`` steps later."""
        if not self.profile_steps:
            return
        done = len(self.steps)
        if done == self.warmup and self.profiler is None and self.profile is None:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.profiler = profile(activities=acts)
            self.profiler.start()
        elif self.profiler is not None and done == self.warmup + self.profile_steps:
            self.profiler.stop()
            from torch.autograd import DeviceType

            kind = DeviceType.CUDA if self.device.type == "cuda" else DeviceType.CPU
            events = [(e.name, e.time_range.start, e.time_range.end) for e in self.profiler.events()
                      if e.device_type == kind and (not e.is_user_annotation if kind == DeviceType.CUDA
                                                    else not e.cpu_parent)]  # a GPU annotation spans kernels
            wall = 1e6 * sum(s["seconds"] for s in self.resolve()[-self.profile_steps:])
            self.profile = {"breakdown_ms": gpu_breakdown(events, wall, self.profile_steps),
                            "top_kernels_ms": top_kernels(events, self.profile_steps)}
            if self.trace is not None and os.environ.get("RANK", "0") == "0":
                raw = self.trace.with_suffix("")
                self.profiler.export_chrome_trace(str(raw))
                with open(raw, "rb") as src, gzip.open(self.trace, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                raw.unlink()
            self.profiler = None


def safe_name(variant: str) -> str:
    """A variant as part of a file name (no '+' or '@')."""
    return variant.replace("+", "_").replace("@", "_")


def write_run_config(work: Path, args, variant: str) -> Path:
    name, attn = parse_variant(variant, args.attn)
    model = {"path": str(work / "model-config"), "random_init": True, "dtype": args.dtype}
    if name != "oa-default":
        model["attn_implementation"] = attn
        model["patches"] = {"oa+kernels": ["kernels.all"], "oa+compile": ["kernels.all", "compile.layers"]}.get(name, [])
    cfg = {
        "method": "sft", "output_dir": str(work / f"run-{safe_name(variant)}"), "seed": 0,
        "model": model,
        "tokenizer": {"path": str(ROOT / "assets/tokenizers/llama2-sp")},
        "datasets": [{"path": str(ROOT / "examples/data/oasst/en_100_tree.jsonl"), "format": "oasst.sft"},
                     {"path": str(ROOT / "examples/data/alpaca-seed/seed_tasks_alpaca.jsonl"), "format": "alpaca"}],
        "data": {"chat_template": "chatml", "max_length": args.max_length, "packing": not name.startswith("trl"),
                 "cache_dir": str(work / "oa-cache"), "max_drop_fraction": 1.0},
        "train": {"max_steps": args.steps, "per_device_batch_size": args.batch, "learning_rate": 2e-5,
                  "lr_scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "logging_steps": 1,
                  "save_steps": None, "mixed_precision": args.mixed_precision, "gradient_checkpointing": False},
    }
    return common.write_yaml(work / f"{safe_name(variant)}.yaml", cfg)


def run_oa(args, work: Path, variant: str) -> dict:
    import torch

    from oa_core.config import load_config
    from oa_train.sft.objective import SFTObjective
    from oa_train.training.loop import Loop

    class Metered(SFTObjective):
        """The SFT objective, with a meter on the model it trains (train split only)."""

        def prepare_data(self):
            train, _ = super().prepare_data()
            self.rows = len(train)
            self.meter = Meter(self.run.model, torch.device(args.device), args.profile, args.warmup,
                               work / f"trace-{safe_name(variant)}.json.gz")
            self.meter.start()  # the first step's time also holds the optimizer set-up: it is a warm-up step
            return train, []

    objective = Metered()
    loaded = load_config(write_run_config(work, args, variant))
    Loop(loaded, objective, callbacks=[lambda step, record: objective.meter.step(
        record.get("loss"), supervised=record.get("tokens"))]).run()
    objective.meter.handle.remove()
    run = objective.run
    return {**objective.meter.params(), "steps": objective.meter.resolve(), "rows": objective.rows,
            "supervised_of_all": True,  # the loop's count, of all processes together
            "profile": objective.meter.profile,
            "vocab": len(run.tokenizer.tokenizer), "patches": run.model_manifest.get("patches")}


def run_trl(args, work: Path, variant: str) -> dict:
    import torch
    import trl
    from transformers.trainer_utils import set_seed

    from oa_core.config import load_config
    from oa_data.pipeline import build_sft_datasets
    from oa_train.model import prepare_model

    loaded = load_config(write_run_config(work, args, variant))
    cfg = loaded.config
    set_seed(cfg.seed)  # as oa's loop does before building the model: the same initial weights
    prepared = prepare_model(cfg, show_table=False)
    model, tokenizer = prepared.model, prepared.tokenizer.tokenizer
    train, _ = build_sft_datasets(cfg, prepared.tokenizer)  # the same samples, unpacked (TRL packs them)
    train = train.select_columns(["input_ids", "labels"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    meter = Meter(model, torch.device(args.device), args.profile, args.warmup, work / f"trace-{safe_name(variant)}.json.gz")
    sft_config = trl.SFTConfig(
        output_dir=str(work / "run-trl"), per_device_train_batch_size=args.batch, learning_rate=2e-5,
        max_length=args.max_length, packing=True, use_liger_kernel=parse_variant(variant, args.attn)[0] == "trl+liger",
        **common.trl_args(args, cfg.seed))
    trainer = trl.SFTTrainer(model=model, args=sft_config, train_dataset=train, processing_class=tokenizer,
                             callbacks=[common.timer(meter)])
    rows = len(trainer.train_dataset)
    trainer.train()
    meter.handle.remove()
    return {**meter.params(), "steps": meter.resolve(), "rows": rows, "vocab": len(tokenizer), "profile": meter.profile,
            "packing_strategy": getattr(sft_config, "packing_strategy", None)}


def merge_ranks(parts: list[dict]) -> dict:
    """One result from each process's: tokens, supervised tokens and attention work summed per step, the
    slowest process's step time, the largest peak memory (per GPU)."""
    out = dict(parts[0], processes=len(parts))
    summed = ("tokens", "attn_flops") if parts[0].get("supervised_of_all") else ("tokens", "supervised", "attn_flops")
    out["steps"] = [dict(step, seconds=max(p["steps"][i]["seconds"] for p in parts),
                         **{k: sum(p["steps"][i][k] for p in parts) for k in summed})
                    for i, step in enumerate(parts[0]["steps"])]
    for key in ("peak_gib", "peak_reserved_gib"):
        if key in out:
            out[key] = max(p[key] for p in parts)
    return out


def driver(args) -> int:
    work = common.workdir(args.out, model_config(args.shape))
    order = [v for v in args.variants.split(",") if v]
    for v in order:
        parse_variant(v, args.attn)
    oa_runs = [v for v in order if v.startswith("oa")]
    if args.repeat and oa_runs:
        order.append(oa_runs[0])
    results, seen = [], {}
    runs = [(variant, n) for variant in order for n in args.processes]
    for variant, n in runs:
        seen[(variant, n)] = seen.get((variant, n), 0) + 1
        label = variant if n == 1 else f"{variant} x{n}"
        label = label if seen[(variant, n)] == 1 else f"{label} (again)"
        result = work / f"result-{len(results)}.json"
        target = [__file__, "--variant", variant, "--result", str(result), "--out", str(work),
                  "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length),
                  "--device", args.device, "--dtype", args.dtype, "--mixed-precision", args.mixed_precision,
                  "--attn", args.attn, "--shape", args.shape, "--warmup", str(args.warmup),
                  "--profile", str(args.profile)]
        cmd, env = [sys.executable, *target], dict(os.environ, PYTHONUNBUFFERED="1")
        if n > 1 or args.accelerate_config:  # one process per GPU, started as `oa train --num-processes` does
            from oa_train.launch import launch_command, launch_env

            cmd = launch_command(target, num_processes=n, accelerate_config=args.accelerate_config)
            env = dict(launch_env(args.accelerate_config), PYTHONUNBUFFERED="1")
        print(f"== {label}: {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env)
        parts = sorted(work.glob(f"{result.stem}.rank*.json"), key=lambda p: int(p.suffixes[0][5:]))
        if proc.returncode != 0 or not (result.exists() or parts):
            print(f"!! {label} failed (exit {proc.returncode})", flush=True)
            results.append({"variant": label, "failed": proc.returncode})
            continue
        res = merge_ranks([json.loads(p.read_text()) for p in parts]) if parts else json.loads(result.read_text())
        res["variant"], res["processes"] = label, n
        res["summary"] = summarize(res["steps"], args.warmup, res["n_matmul"],
                                   n * H100_BF16_PEAK if args.device == "cuda" else float("nan"))
        print(f"   {label}: {time.perf_counter() - t0:.0f} s, {res['summary']['tokens_per_s']:.0f} tokens/s", flush=True)
        results.append(res)
    report = common.new_report(args, model_config=model_config(args.shape), device=device_name(args.device),
                               results=results)
    ok = [r for r in results if "summary" in r]
    first = {r["variant"]: r["steps"][0]["loss"] for r in ok if r["steps"] and r["steps"][0]["loss"] is not None}
    report["loss_check"] = check_losses(first, ok[0]["vocab"]) if ok else ["no variant ran"]
    common.write_report(work, "sft_throughput", report, render)
    return 0 if len(ok) == len(results) and not report["loss_check"] else 1


def render(report: dict) -> str:
    lines = [common.header(report),
             "", "| variant | rows | tokens/step | step ms (mean / median) | tokens/s | supervised tokens/s | "
             "peak GiB (alloc / reserved) | TFLOP/s | MFU | loss step 1 / last |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ok = [r for r in report["results"] if "summary" in r]
    for r in report["results"]:
        if "summary" not in r:
            lines.append(f"| {r['variant']} | failed (exit {r['failed']}) |")
            continue
        s = r["summary"]
        lines.append(f"| {r['variant']} | {r['rows']} | {s['tokens_per_step']:.0f} | {s['step_ms_mean']:.1f} / "
                     f"{s['step_ms_median']:.1f} | {s['tokens_per_s']:.0f} | {s['supervised_per_s']:.0f} | "
                     f"{common.peak(r)} | {s['tflops_per_s']:.1f} | {100 * s['mfu']:.1f}% | "
                     f"{common.first_last_loss(r['steps'], 3)} |")
    lines += [""] + ratio_lines(ok)
    n = ok[0]["n_matmul"] if ok else 0
    lines.append(f"- N (matmul parameters) = {n / 1e6:.1f} M of {ok[0]['n_params'] / 1e6:.1f} M" if ok else "")
    lines += profile_lines(ok)
    lines.append("- step-1 loss check: " + ("; ".join(report["loss_check"]) or "ok (all near ln V and within 0.15)"))
    return "\n".join(lines)


def profile_lines(ok: list[dict]) -> list[str]:
    """One breakdown line (ms per step by category, idle last) and the top kernels per profiled variant."""
    out = []
    for r in (r for r in ok if r.get("profile")):
        b = r["profile"]["breakdown_ms"]
        parts = ", ".join(f"{k} {v:.1f}" for k, v in b.items() if k not in ("busy", "idle", "step"))
        out.append(f"- profile {r['variant']} (ms per step of {b['step']:.1f}): {parts}; GPU busy {b['busy']:.1f}, "
                   f"idle {b['idle']:.1f}")
        out += [f"    - {ms:7.2f} ms  {name}" for name, ms in r["profile"]["top_kernels_ms"]]
    return out


def ratio_lines(ok: list[dict]) -> list[str]:
    """Every oa row against every TRL row on as many GPUs, each line naming the two rows it compares; then each
    multi-GPU row's scaling against its variant on one GPU."""
    out = []
    for peer in (r for r in ok if r["variant"].startswith("trl")):
        for r in (r for r in ok if r["variant"].startswith("oa") and r.get("processes", 1) == peer.get("processes", 1)):
            a, b = r["summary"], peer["summary"]
            mem = f", peak memory {r['peak_gib'] / peer['peak_gib']:.2f}x" if "peak_gib" in r and "peak_gib" in peer else ""
            out.append(f"- {r['variant']} / {peer['variant']}: tokens/s {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
                       f"supervised tokens/s {a['supervised_per_s'] / b['supervised_per_s']:.2f}x{mem}")
    one = {r["variant"]: r for r in ok if r.get("processes", 1) == 1}
    for r in (r for r in ok if r.get("processes", 1) > 1):
        n, base = r["processes"], one.get(r["variant"].rsplit(" x", 1)[0])
        if base is not None:
            ratio = r["summary"]["tokens_per_s"] / base["summary"]["tokens_per_s"]
            out.append(f"- {r['variant']} / {base['variant']}: tokens/s {ratio:.2f}x with {n} processes "
                       f"(scaling efficiency {ratio / n:.0%})")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-sft")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, short rows, few steps")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeat", action="store_true", help="run oa once more at the end (run-to-run spread)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None, help="steps dropped from the averages")
    p.add_argument("--batch", type=int, default=4, help="packed rows per micro-batch")
    p.add_argument("--max-length", type=int, default=None)
    common.device_args(p)
    p.add_argument("--attn", default="sdpa", help="attention of variants without @ATTENTION")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="profile K steps after the warm-up (torch.profiler), report GPU time by category")
    p.add_argument("--shape", choices=sorted(MODEL_CONFIGS), default=None, help="model shape (default qwen0.5b)")
    p.add_argument("--processes", default="1", help="comma-separated process (GPU) counts to run each variant "
                   "with, e.g. 1,2: scaling; tokens/s and MFU are of all GPUs together, memory per GPU")
    p.add_argument("--accelerate-config", default=None, help="accelerate preset for the runs (default: DDP), e.g. "
                   "examples/configs/accelerate/fsdp.yaml")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.processes = [int(n) for n in str(args.processes).split(",") if n]
    common.device_defaults(args)
    tiny = args.tiny
    args.shape = "tiny" if tiny else (args.shape or "qwen0.5b")
    args.steps = args.steps or (6 if tiny else 60)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 10)
    args.max_length = args.max_length or (256 if tiny else 2048)
    if args.variant:
        common.one_variant(args, run_trl if parse_variant(args.variant, args.attn)[0].startswith("trl") else run_oa,
                           per_rank=True)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
