"""GRPO training step time and peak memory: oa's ``method: grpo`` vs TRL's ``GRPOTrainer`` (same model, prompts,
group size, lengths, precision; generation with transformers on both sides), each as it comes and at its best.

    python benchmarks/grpo_throughput.py --out DIR             # GPU: Llama-3.2-1B shape, GSM8K, 4 prompts x 8
    python benchmarks/grpo_throughput.py --tiny --out DIR      # CPU smoke test (tiny model, few steps)

Each variant runs in its own process (peak memory starts from zero), in this order:

- ``trl``: ``GRPOTrainer`` with its defaults (``model.generate`` with a dynamic KV cache, padded batches);
- ``trl-best``: its fastest transformers-based set-up: ``use_transformers_continuous_batching`` (paged KV cache,
  no padding). TRL 1.16 computes log-probs through its own chunked LM head in both (``use_liger_loss`` is gone;
  the Hub kernels it suggests instead need a download, and the GPU machine has no network);
- ``oa``: ``method: grpo`` with oa's defaults (``generator: hf``, on a GPU with ``hf.compile: auto``: a static KV
  cache and a compiled, CUDA-graph decoding step; model patches and attention as oa picks them unless
  ``--patches`` / ``--oa-attn`` say otherwise);
- ``oa-eager``: the same with ``hf.compile: false`` (a dynamic KV cache, as before compiled decoding existed);
- ``oa-best``: the same with ``hf.continuous_batching: true``.

Model: randomly initialised from a local config: Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads / 8 KV
heads, MLP 8192, tied embeddings, 128256-token vocabulary so the LM head costs what it costs there; the token ids
come from the llama2-sp tokenizer, which decodes ids past its 32000 as nothing), bf16 weights with bf16 autocast,
attention ``sdpa``. A random policy rarely samples eos, so nearly every completion runs to
``max_completion_length`` on both sides (the table shows the mean completion length of each).
Prompts: examples/data/gsm8k/train_500.jsonl (``prompt_reference``, chatml), tokenized once by oa-data
(:func:`oa_train.grpo.data.prepare_prompts`); TRL gets exactly these prompt ids (its ``_tokenize_prompts`` is
replaced). Reward: oa-infer's ``numeric_answer`` on both sides. Both: ``--prompts`` prompts × ``--group``
completions per optimizer step (one generation batch, one micro-batch, ``num_iterations`` 1), temperature 1,
``loss_type: dapo``, beta 0, epsilon 0.2, torch AdamW lr 1e-6, cosine, no warm-up, weight decay 0, clip 1.0, no
gradient checkpointing.

Measured per optimizer step (CUDA synchronised, host clock) from a per-step callback, generation included; the
first ``--warmup`` steps are dropped; the median is the headline. Tokens: non-padding tokens of the policy's
training forwards (prompt + completion of every completion). Peak memory: ``torch.cuda.max_memory_allocated`` over
the whole process. Goals (issue 17): step time <= 0.5x TRL's and peak memory <= TRL's, each oa variant against
the TRL variant of the same standing.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Meter, device_name, summarize  # noqa: E402
from common import llama_config as model_config  # noqa: E402

VARIANTS = ("trl", "trl-best", "oa", "oa-eager", "oa-best")
GOALS = {"step": 0.5, "memory": 1.0}
GSM8K = ROOT / "examples/data/gsm8k/train_500.jsonl"


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def goals(results: dict[str, dict]) -> list[dict]:
    """The issue's goals, each ``{name, ratio, goal, met}``: ``oa`` against ``trl``, ``oa-best`` against
    ``trl-best`` and against ``trl`` (ratios of medians and of peaks; no peaks without a GPU)."""
    out = []

    def add(a, b, key, what, goal):
        if a in results and b in results and results[a].get(key) and results[b].get(key):
            ratio = results[a][key] / results[b][key]
            out.append({"name": f"{a} / {b} {what}", "ratio": ratio, "goal": goal, "met": ratio <= goal})

    for a, b in (("oa", "trl"), ("oa-best", "trl-best"), ("oa-best", "trl")):
        add(a, b, "step_ms_median", "step time", GOALS["step"])
        add(a, b, "peak_gib", "peak memory", GOALS["memory"])
    return out


def check_losses(first: dict[str, float | None]) -> list[str]:
    """Every variant reports a finite loss at step 1 (its value depends on the sampled completions)."""
    return [f"{name}: step-1 loss {loss} is not a finite number" for name, loss in first.items()
            if loss is None or not math.isfinite(loss)]


# ---------------------------------------------------------------- measurement


def write_run_config(work: Path, args, variant: str) -> Path:
    model = {"path": str(work / "model-config"), "random_init": True, "dtype": args.dtype}
    attn = args.attn if variant.startswith("trl") else args.oa_attn
    if attn != "default":  # default: no attn_implementation in the config, oa picks
        model["attn_implementation"] = attn
    if args.patches != "default":  # default: no model.patches, oa picks (kernels.all on a GPU)
        model["patches"] = [p for p in args.patches.split(",") if p]
    group = args.prompts * args.group
    cfg = {
        "method": "grpo", "output_dir": str(work / f"run-{variant}"), "seed": 0,
        "model": model,
        "tokenizer": {"path": str(ROOT / "assets/tokenizers/llama2-sp")},
        "datasets": [{"path": str(GSM8K), "format": "prompt_reference",
                      "field_map": {"prompt": "question", "reference": "answer"},
                      "options": {"reference_after": "####"}}],
        "data": {"chat_template": "chatml", "cache_dir": str(work / "oa-cache")},
        "train": {"max_steps": args.steps, "per_device_batch_size": group, "num_generations": args.group,
                  "max_completion_length": args.max_completion_length, "temperature": 1.0,
                  "rewards": [{"function": "numeric_answer"}], "loss_type": "dapo", "beta": 0.0, "epsilon": 0.2,
                  "learning_rate": 1e-6, "lr_scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0,
                  "logging_steps": 1, "save_steps": None, "log_completions_steps": 0,
                  "mixed_precision": args.mixed_precision, "gradient_checkpointing": False,
                  "hf": {"batch_size": group, "continuous_batching": variant == "oa-best",
                         **({"compile": False} if variant == "oa-eager" else {})}},
    }
    return common.write_yaml(work / f"{variant}.yaml", cfg)


def run_oa(args, work: Path, variant: str) -> dict:
    import torch

    from oa_core.config import load_config
    from oa_train.grpo.objective import GRPOObjective
    from oa_train.training.loop import Loop

    class Metered(GRPOObjective):
        """The GRPO objective with a meter on its model, started once the prompts are ready."""

        def prepare_data(self):
            t0 = time.perf_counter()
            out = super().prepare_data()
            self.setup_s = time.perf_counter() - t0
            self.prompts = len(out[0])
            self.meter = Meter(self.run.model, torch.device(args.device))
            self.meter.start()
            return out[0], []

    objective = Metered()

    def on_step(step, record):
        objective.meter.step(record.get("loss"))
        objective.meter.steps[-1]["completion_length"] = record.get("completions/mean_length")

    Loop(load_config(write_run_config(work, args, variant)), objective, callbacks=[on_step]).run()
    objective.meter.handle.remove()
    run = objective.run
    engine = getattr(objective.rollout, "engine", None)
    return {"steps": objective.meter.steps, "prompts": objective.prompts, "setup_s": objective.setup_s,
            "patches": run.model_manifest.get("patches"), "route": run.model_manifest.get("label_logprobs"),
            "compiled_decoding": getattr(engine, "compile", None)}


def run_trl(args, work: Path, variant: str) -> dict:
    import datasets
    import torch
    import trl
    from transformers.trainer_utils import set_seed

    from oa_core.config import load_config
    from oa_infer.rewards import numeric_answer
    from oa_train.grpo.data import prepare_prompts
    from oa_train.model import prepare_model

    cfg = load_config(write_run_config(work, args, variant)).config
    cfg.model.patches = []  # TRL's model gets none of oa's kernels
    set_seed(cfg.seed)  # as oa's loop does before building the model: the same initial weights
    prepared = prepare_model(cfg, show_table=False)
    model, tokenizer = prepared.model, prepared.tokenizer.tokenizer
    rows = prepare_prompts(cfg, prepared.tokenizer, "train", columns={"numeric_answer": ("reference",)},
                           max_prompt_length=None).rows
    prompt_ids = {r["text"]: list(r["prompt_ids"]) for r in rows}
    train = datasets.Dataset.from_list([{"prompt": r["text"], "reference": r["columns"]["reference"]} for r in rows])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def gsm8k(prompts, completions, reference, **_):
        return numeric_answer(prompts, completions, reference)

    class PreTokenized(trl.GRPOTrainer):
        def _tokenize_prompts(self, prompts):
            return [prompt_ids[p] for p in prompts], None, {}  # oa-data's token ids, the ones oa generates from

    grpo_args = trl.GRPOConfig(
        output_dir=str(work / f"run-{variant}"), per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.max_completion_length, temperature=1.0,
        loss_type="dapo", beta=0.0, epsilon=0.2, learning_rate=1e-6,
        use_transformers_continuous_batching=variant == "trl-best", **common.trl_args(args, cfg.seed))
    t0 = time.perf_counter()
    trainer = PreTokenized(model=model, reward_funcs=gsm8k, args=grpo_args, train_dataset=train,
                           processing_class=tokenizer)
    setup_s = time.perf_counter() - t0
    meter = Meter(model, torch.device(args.device))
    trainer.add_callback(common.timer(meter, completion_length="completions/mean_length"))
    trainer.train()
    meter.handle.remove()
    return {"steps": meter.steps, "prompts": len(train), "setup_s": setup_s}


def driver(args) -> int:
    size = "tiny" if args.tiny else "full"
    work = common.workdir(args.out, model_config(size))
    results = {}
    for variant in [v for v in args.variants.split(",") if v]:
        result = work / f"result-{variant}.json"
        result.unlink(missing_ok=True)
        res = common.run_variant(__file__, variant, result, [
            "--out", str(work), "--steps", str(args.steps), "--prompts", str(args.prompts), "--group", str(args.group),
            "--max-completion-length", str(args.max_completion_length), "--device", args.device,
            "--dtype", args.dtype, "--mixed-precision", args.mixed_precision, "--attn", args.attn,
            "--oa-attn", args.oa_attn, "--patches", args.patches])
        results[variant] = res
        if "failed" not in res:
            res.update(summarize(res["steps"], args.warmup))
            lengths = [s["completion_length"] for s in res["steps"] if s.get("completion_length") is not None]
            res["completion_length_mean"] = sum(lengths) / len(lengths) if lengths else None
            print(f"   {variant}: median step {res['step_ms_median']:.1f} ms", flush=True)
    ok = {v: r for v, r in results.items() if "failed" not in r}
    first = {v: r["steps"][0]["loss"] for v, r in ok.items() if r["steps"]}
    report = common.new_report(args, model_config=model_config(size), device=device_name(args.device), results=results,
                               goals=goals(ok), loss_check=check_losses(first) if ok else ["no variant ran"])
    common.write_report(work, "grpo_throughput", report, render)
    return 0 if len(ok) == len(results) and not report["loss_check"] else 1


def render(report: dict) -> str:
    lines = [common.header(report),
             "", "| variant | completions/step | completion tokens (mean) | tokens/step | step ms (median / mean) | "
             "tokens/s | peak GiB (alloc / reserved) | set-up s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    args = report["args"]
    for name, r in report["results"].items():
        if "failed" in r:
            lines.append(f"| {name} | failed (exit {r['failed']}) |")
            continue
        length = "n/a" if r.get("completion_length_mean") is None else f"{r['completion_length_mean']:.1f}"
        lines.append(f"| {name} | {args['prompts'] * args['group']} | {length} | {r['tokens_per_step']:.0f} | "
                     f"{r['step_ms_median']:.1f} / {r['step_ms_mean']:.1f} | {r['tokens_per_s']:.0f} | {common.peak(r)} | "
                     f"{r['setup_s']:.1f} |")
    lines.append("")
    lines += common.goal_lines(report["goals"])
    lines.append("- step-1 loss check: " + ("; ".join(report["loss_check"]) or "ok (every variant finite)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-grpo")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, short completions, few steps")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None, help="steps dropped from the averages")
    p.add_argument("--prompts", type=int, default=None, help="prompts per optimizer step")
    p.add_argument("--group", type=int, default=None, help="completions per prompt (num_generations)")
    p.add_argument("--max-completion-length", type=int, default=None)
    common.device_args(p)
    p.add_argument("--attn", default="sdpa", help="attention of the TRL variants (and of oa's unless --oa-attn)")
    p.add_argument("--oa-attn", default=None, help="attention of the oa variants ('default': oa's own choice)")
    p.add_argument("--patches", default=None, help="oa's model patches, comma-separated ('default', the default on "
                   "a GPU: oa's own choice; none on CPU)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common.device_defaults(args)
    tiny = args.tiny
    args.steps = args.steps or (3 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 2)
    args.prompts = args.prompts or (2 if tiny else 4)
    args.group = args.group or (4 if tiny else 8)
    args.max_completion_length = args.max_completion_length or (8 if tiny else 256)
    args.oa_attn = args.oa_attn or args.attn
    if args.patches is None:
        args.patches = "default" if args.device == "cuda" else ""
    if args.variant:
        common.one_variant(args, run_trl if args.variant.startswith("trl") else run_oa)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
