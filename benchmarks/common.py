"""What the oa-vs-TRL benchmarks (sft, rm, dpo, grpo, generate throughput) share: environment facts, the
Llama-3.2-1B-shaped model config, step timing, throughput summaries, one process per variant and the report."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

H100_BF16_PEAK = 989e12  # also the H200's
PLUGINS = {"data": "oa_data.plugin", "oasst": "oa_oasst.plugin", "train": "oa_train.plugin", "infer": "oa_infer.plugin",
           "kernels": "oa_kernels.plugin"}
LLAMA_SHAPES = {
    # Llama-3.2-1B's shape (hidden 2048, 16 layers, 32/8 heads, MLP 8192, head dim 64), and a tiny one for the CPU
    "full": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 8, "head_dim": 64},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16},
}


# ---------------------------------------------------------------- environment


def ensure_plugins() -> None:
    """Register oa's plugins when they run from source (PYTHONPATH) without installed entry points."""
    from oa_core import plugins

    pm = plugins.get_plugin_manager()
    for name, module in PLUGINS.items():
        if name not in pm.providers:
            pm.register(importlib.import_module(module), name, plugins.Provider(name, module, "source"))
    plugins.get_registry.cache_clear()


def versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "triton"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"cpu, torch {torch.__version__}"


def device_args(p, mixed_precision: bool = True) -> None:
    """``--device``, ``--dtype`` (and ``--mixed-precision``); :func:`device_defaults` fills in the unset ones."""
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    if mixed_precision:
        p.add_argument("--mixed-precision", default=None)


def device_defaults(args) -> None:
    """``--device`` (a GPU if there is one, unless ``--tiny``), ``--dtype`` and ``--mixed-precision`` where unset."""
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    if hasattr(args, "mixed_precision"):
        args.mixed_precision = args.mixed_precision or ("no" if args.device == "cpu" else "bf16")


def llama_config(size: str, vocab_size: int | None = None, max_position_embeddings: int = 4096,
                 use_cache: bool = False) -> dict:
    """A transformers config of ``LLAMA_SHAPES[size]`` (random init), tied embeddings, rope theta 500000; the
    vocabulary by default Llama 3's 128256 at full size (its LM head costs what it costs there), 32000 when tiny."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "bos_token_id": 1,
        "eos_token_id": 2, "tie_word_embeddings": True, "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        "initializer_range": 0.02, "attention_dropout": 0.0, "attention_bias": False, "mlp_bias": False,
        "use_cache": use_cache, **LLAMA_SHAPES[size], "vocab_size": vocab_size or (128256 if size == "full" else 32000),
    }


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def attention_flops(position_sum: float, layers: int, heads: int, head_dim: int) -> float:
    """Causal attention matrix products of one training step: ``position_sum`` = sum over tokens of (position+1)."""
    return 12.0 * layers * heads * head_dim * position_sum


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


def summarize_mfu(steps: list[dict], warmup: int, n_params: int, peak_flops: float = H100_BF16_PEAK) -> dict:
    """Throughput over the steps after ``warmup``; each step has seconds, tokens, supervised, attn_flops."""
    kept = [s for s in steps[warmup:] if not s.get("profiled")]
    if not kept:
        raise ValueError(f"no steps after {warmup} warm-up steps (have {len(steps)})")
    secs = sum(s["seconds"] for s in kept)
    tokens = sum(s["tokens"] for s in kept)
    sup = sum(s["supervised"] for s in kept)
    flops = 6.0 * n_params * tokens + sum(s["attn_flops"] for s in kept)
    times = sorted(s["seconds"] for s in kept)
    return {
        "measured_steps": len(kept), "seconds": secs, "tokens": tokens, "supervised": sup,
        "tokens_per_s": tokens / secs, "supervised_per_s": sup / secs,
        "step_ms_mean": 1e3 * secs / len(kept), "step_ms_median": 1e3 * times[len(times) // 2],
        "tokens_per_step": tokens / len(kept), "tflops_per_s": flops / secs / 1e12, "mfu": flops / secs / peak_flops,
        "attn_share": sum(s["attn_flops"] for s in kept) / flops,
    }


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

    def counts(self) -> dict:
        """What the hook counted since the last step (and a fresh count for the next)."""
        tokens, self.tokens = self.tokens, 0
        return {"tokens": tokens}

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def start(self):
        self.sync()
        self.t0 = time.perf_counter()

    def step(self, loss: float | None):
        self.sync()
        now = time.perf_counter()
        self.steps.append({"seconds": now - self.t0, **self.counts(), "loss": loss})
        self.t0 = time.perf_counter()


def timer(meter, **logged):
    """A TRL trainer callback: ``meter`` times each optimizer step and gets its logged loss; ``logged`` maps more
    step keys to the log entries that fill them (None where absent)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            meter.start()

        def on_step_end(self, a, state, control, **kw):
            meter.step(None)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs and meter.steps:
                meter.steps[-1]["loss"] = float(logs["loss"])
                for key, name in logged.items():
                    meter.steps[-1][key] = None if logs.get(name) is None else float(logs[name])

    return Timer()


def trl_args(args, seed: int) -> dict:
    """TrainingArguments of every TRL side: ``--steps`` steps without gradient accumulation, torch AdamW with a cosine
    schedule, no warm-up, weight decay 0, clip 1.0, a log line every step, nothing saved, no checkpointing."""
    return dict(max_steps=args.steps, gradient_accumulation_steps=1, lr_scheduler_type="cosine", warmup_steps=0,
                weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", logging_steps=1, save_strategy="no",
                report_to="none", seed=seed, gradient_checkpointing=False, dataloader_num_workers=0,
                bf16=args.mixed_precision == "bf16", use_cpu=args.device == "cpu", disable_tqdm=True)


# ---------------------------------------------------------------- one process per variant, and the report


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_variant(args, run, per_rank: bool = False) -> None:
    """``run(args, work, variant)`` with the peak memory counted from zero; its result, with wall time and peak memory,
    written to ``--result`` (``per_rank``: to RESULT.rankN.json in each process a launcher started)."""
    import torch

    ensure_plugins()
    work = Path(args.out)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run(args, work, args.variant)
    res["wall_s"] = time.perf_counter() - t0
    if args.device == "cuda":
        res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        res["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    rank = int(os.environ.get("RANK", "0"))
    result = Path(args.result)
    (result.with_suffix(f".rank{rank}.json") if per_rank and "WORLD_SIZE" in os.environ else result).write_text(
        json.dumps(res, default=str))


def workdir(out: str, model_config: dict) -> Path:
    """The output folder (made), with the benchmark model's config in ``model-config/config.json``."""
    work = Path(out).resolve()
    (work / "model-config").mkdir(parents=True, exist_ok=True)
    (work / "model-config" / "config.json").write_text(json.dumps(model_config, indent=1))
    return work


def run_variant(script: str, variant: str, result: Path, flags: list[str]) -> dict:
    """``python SCRIPT --variant VARIANT --result RESULT FLAGS`` in a process of its own: the result it wrote, or
    ``{"failed": exit code}``."""
    cmd = [sys.executable, script, "--variant", variant, "--result", str(result), *flags]
    print(f"== {variant}: {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0 or not result.exists():
        print(f"!! {variant} failed (exit {proc.returncode})", flush=True)
        return {"failed": proc.returncode}
    return json.loads(result.read_text())


def new_report(args, **fields) -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "versions": versions(), "args": vars(args), **fields}


def write_report(work: Path, name: str, report: dict, render) -> None:
    """``NAME.json`` and the rendered ``NAME.md`` in ``work``; the table printed."""
    (work / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    table = render(report)
    (work / f"{name}.md").write_text(table + "\n")
    print(table)


def header(report: dict) -> str:
    return f"{report['date']}; {report['device']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())


def peak(r: dict) -> str:
    return f"{r['peak_gib']:.2f} / {r['peak_reserved_gib']:.2f}" if "peak_gib" in r else "n/a"


def first_last_loss(steps: list[dict], digits: int) -> str:
    losses = [s["loss"] for s in steps if s["loss"] is not None]
    return f"{losses[0]:.{digits}f} / {losses[-1]:.{digits}f}" if losses else "n/a"


def goal_lines(goals: list[dict]) -> list[str]:
    return [f"- {g['name']}: {g['ratio']:.2f}x (goal <= {g['goal']}x: {'met' if g['met'] else 'NOT met'})" for g in goals]
