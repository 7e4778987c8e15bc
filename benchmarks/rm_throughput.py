"""Reward-model training throughput: oa's `method: rm` vs TRL's RewardTrainer (same model, pairs, batch, precision).

    python benchmarks/rm_throughput.py --out DIR                  # GPU: Llama-3.2-1B-shaped RM, max_length 1024
    python benchmarks/rm_throughput.py --tiny --out DIR           # CPU smoke test (tiny model, few steps)
    python benchmarks/rm_throughput.py --data /path/harmless-base-test.jsonl.gz --out DIR   # all 2,312 pairs

Each variant runs in its own process (peak memory starts from zero), in this order: ``oa`` (padding-free: a
micro-batch's 16 sequences in one packed row), ``trl`` (its padded batches), ``oa-padded`` (oa with
``train.padding_free: false``, to show what packing buys).

Model: a sequence classifier (one output) randomly initialised from a local config: Llama-3.2-1B's shape (hidden
2048, 16 layers, 32 heads / 8 KV heads, MLP 8192, head dim 64, rope theta 500000) with the 32000-token llama2-sp
vocabulary plus the chatml tokens, bf16 weights with bf16 autocast, attention ``sdpa``. Both sides build it with
oa's model provider after the same seed, so they start from the same weights.
Data: Anthropic hh-rlhf harmless-base pairs (``hh_rlhf`` format; the shipped 300-pair sample by default), chatml,
tokenized and cut to ``--max-length`` by oa (``oa_data.ranking.prepare_ranking``). TRL gets the same token ids
(``chosen_ids`` = prompt + chosen, ``rejected_ids`` = prompt + rejected; none is over max_length, so it filters
nothing). Same loss (Bradley–Terry, no margin, no centering), optimizer (torch AdamW, lr 1e-5, cosine, no
warm-up, weight decay 0, clip 1.0), ``--batch`` pairs per optimizer step, no gradient accumulation, no gradient
checkpointing, ``--steps`` steps of which the first ``--warmup`` are dropped from the averages.

Measured per optimizer step (CUDA synchronised, host clock) from a forward pre-hook on the model (real tokens:
the attention mask's ones, or all tokens of a packed row; padded positions separately) and a per-step callback.
Throughput is real tokens over the summed step time. MFU as in ``sft_throughput.py`` (6·N·T plus causal
attention over the real tokens, 989 TFLOP/s bf16 dense peak of an H100/H200); N excludes the input embedding.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import H100_BF16_PEAK, attention_flops, device_name, summarize_mfu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("oa", "trl", "oa-padded")
DATA = ROOT / "examples/data/hh-rlhf/harmless-base-test-300.jsonl.gz"


def model_config(size: str) -> dict:
    """Llama-3.2-1B's shape ("full") with a 32000-token vocabulary (assets/tokenizers/llama2-sp)."""
    return common.llama_config(size, vocab_size=32000, max_position_embeddings=131072)


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def trl_rows(rows: list[dict]) -> list[dict]:
    """TRL's processed preference rows (``chosen_ids``, ``rejected_ids``) from oa's ranked rows (pairs)."""
    out = []
    for row in rows:
        best, worst = row["ranks"].index(min(row["ranks"])), row["ranks"].index(max(row["ranks"]))
        prompt = list(row["prompt_input_ids"])
        out.append({"chosen_ids": prompt + list(row["candidate_input_ids"][best]),
                    "rejected_ids": prompt + list(row["candidate_input_ids"][worst])})
    return out


def check_losses(first: dict[str, float], tol: float = 0.25) -> list[str]:
    """Step-1 losses of a random-init reward model: each near ln 2 (scores near 0)."""
    return [f"{name}: step-1 loss {loss:.4f} is not near ln 2 = {math.log(2):.4f}" for name, loss in first.items()
            if not (math.isfinite(loss) and abs(loss - math.log(2)) < tol)]


# ---------------------------------------------------------------- measurement


class Meter(common.Meter):
    """Counts each training forward's real tokens and padded positions (pre-hook) and times each optimizer step."""

    def __init__(self, model, device):
        super().__init__(model, device)
        self.model = model
        cfg = model.config
        self.heads, self.layers = cfg.num_attention_heads, cfg.num_hidden_layers
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.pending: list[tuple[int, int, float]] = []  # (real tokens, positions, sum over real tokens of pos+1)

    def hook(self, module, args, kwargs):
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            lengths = mask.sum(-1).double()
        else:  # a packed row: sequences start where the position is 0
            pos = kwargs["position_ids"].flatten()
            starts = (pos == 0).nonzero().flatten().tolist() + [len(pos)]
            lengths = self.torch.tensor([b - a for a, b in zip(starts, starts[1:], strict=False)], dtype=self.torch.float64)
        self.pending.append((int(lengths.sum()), ids.numel(), float((lengths * (lengths + 1) / 2).sum())))

    def counts(self) -> dict:
        tokens, positions, pos_sum = (sum(p[i] for p in self.pending) for i in range(3))
        self.pending = []
        return {"tokens": tokens, "positions": positions, "supervised": 0,
                "attn_flops": attention_flops(pos_sum, self.layers, self.heads, self.head_dim)}

    def params(self) -> dict:
        m = self.model
        total = sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())
        return {"n_params": total, "n_matmul": total - m.get_input_embeddings().weight.numel()}


def write_run_config(work: Path, args, variant: str) -> Path:
    model = {"path": str(work / "model-config"), "type": "seq_cls", "random_init": True, "dtype": args.dtype}
    attn = args.attn if variant == "trl" else args.oa_attn
    if attn != "default":  # default: no attn_implementation in the config, oa picks (flex for packed rows on a GPU)
        model["attn_implementation"] = attn
    if variant == "trl":
        model["patches"] = []  # TRL's own model: none of oa's kernels (oa's variants get oa's default patches)
    cfg = {
        "method": "rm", "output_dir": str(work / f"run-{variant}"), "seed": 0,
        "model": model,
        "tokenizer": {"path": str(ROOT / "assets/tokenizers/llama2-sp")},
        "datasets": [{"path": str(args.data), "format": "hh_rlhf"}],
        "data": {"chat_template": "chatml", "max_length": args.max_length, "cache_dir": str(work / "oa-cache")},
        "train": {"loss": "pairwise", "max_steps": args.steps, "per_device_batch_size": args.batch, "learning_rate": 1e-5,
                  "lr_scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "logging_steps": 1,
                  "save_steps": None, "mixed_precision": args.mixed_precision, "gradient_checkpointing": False,
                  "padding_free": variant != "oa-padded"},
    }
    return common.write_yaml(work / f"{variant}.yaml", cfg)


def run_oa(args, work: Path, variant: str) -> dict:
    import torch

    from oa_core.config import load_config
    from oa_train.reward.objective import RMObjective
    from oa_train.training.loop import Loop

    class Metered(RMObjective):
        """The reward-model objective, with a meter on the model it trains (train split only)."""

        def prepare_data(self):
            train, _ = super().prepare_data()
            self.rows = len(train)
            self.meter = Meter(self.run.model, torch.device(args.device))
            self.meter.start()  # the first step's time also holds the optimizer set-up: it is a warm-up step
            return train, []

    objective = Metered()
    Loop(load_config(write_run_config(work, args, variant)), objective,
         callbacks=[lambda step, record: objective.meter.step(record.get("loss"))]).run()
    objective.meter.handle.remove()
    return {**objective.meter.params(), "steps": objective.meter.steps, "rows": objective.rows}


def run_trl(args, work: Path, variant: str) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers.trainer_utils import set_seed

    from oa_core.config import load_config
    from oa_data.ranking import prepare_ranking
    from oa_train.model import prepare_model

    cfg = load_config(write_run_config(work, args, variant)).config
    set_seed(cfg.seed)  # as oa's loop does before building the model: the same initial weights
    prepared = prepare_model(cfg, num_labels=1, show_table=False)
    model, tokenizer = prepared.model, prepared.tokenizer.tokenizer
    train = Dataset.from_list(trl_rows(prepare_ranking(cfg, prepared.tokenizer, progress=False).rows))
    meter = Meter(model, torch.device(args.device))
    config = trl.RewardConfig(
        output_dir=str(work / "run-trl"), per_device_train_batch_size=args.batch, learning_rate=1e-5,
        max_length=args.max_length, center_rewards_coefficient=None, **common.trl_args(args, cfg.seed))
    trainer = trl.RewardTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer,
                                callbacks=[common.timer(meter)])
    rows = len(trainer.train_dataset)
    trainer.train()
    meter.handle.remove()
    return {**meter.params(), "steps": meter.steps, "rows": rows}


def driver(args) -> int:
    size = "tiny" if args.tiny else "full"
    work = common.workdir(args.out, model_config(size))
    results = []
    for variant in [v for v in args.variants.split(",") if v]:
        result = work / f"result-{len(results)}.json"
        t0 = time.perf_counter()
        res = common.run_variant(__file__, variant, result, [
            "--out", str(work), "--steps", str(args.steps), "--batch", str(args.batch),
            "--max-length", str(args.max_length), "--device", args.device, "--dtype", args.dtype,
            "--mixed-precision", args.mixed_precision, "--attn", args.attn, "--oa-attn", args.oa_attn,
            "--data", str(args.data)])
        if "failed" in res:
            results.append({"variant": variant, **res})
            continue
        res["variant"] = variant
        res["summary"] = summarize_mfu(res["steps"], args.warmup, res["n_matmul"],
                                       H100_BF16_PEAK if args.device == "cuda" else float("nan"))
        kept = res["steps"][args.warmup:]
        res["summary"]["padding_share"] = 1 - sum(s["tokens"] for s in kept) / sum(s["positions"] for s in kept)
        print(f"   {variant}: {time.perf_counter() - t0:.0f} s, {res['summary']['tokens_per_s']:.0f} tokens/s", flush=True)
        results.append(res)
    report = common.new_report(args, model_config=model_config(size), device=device_name(args.device), results=results)
    ok = [r for r in results if "summary" in r]
    first = {r["variant"]: r["steps"][0]["loss"] for r in ok if r["steps"] and r["steps"][0]["loss"] is not None}
    report["loss_check"] = check_losses(first) if ok else ["no variant ran"]
    common.write_report(work, "rm_throughput", report, render)
    return 0 if len(ok) == len(results) and not report["loss_check"] else 1


def render(report: dict) -> str:
    lines = [common.header(report),
             "", "| variant | pairs | real tokens/step | padding | step ms (mean / median) | tokens/s | "
             "peak GiB (alloc / reserved) | TFLOP/s | MFU | loss step 1 / last |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ok = [r for r in report["results"] if "summary" in r]
    for r in report["results"]:
        if "summary" not in r:
            lines.append(f"| {r['variant']} | failed (exit {r['failed']}) |")
            continue
        s = r["summary"]
        lines.append(f"| {r['variant']} | {r['rows']} | {s['tokens_per_step']:.0f} | {100 * s['padding_share']:.1f}% | "
                     f"{s['step_ms_mean']:.1f} / {s['step_ms_median']:.1f} | {s['tokens_per_s']:.0f} | {common.peak(r)} | "
                     f"{s['tflops_per_s']:.1f} | {100 * s['mfu']:.1f}% | {common.first_last_loss(r['steps'], 3)} |")
    trl_run = next((r for r in ok if r["variant"] == "trl"), None)
    if trl_run:
        lines.append("")
        for r in ok:
            if r is not trl_run:
                mem = f", peak memory {r['peak_gib'] / trl_run['peak_gib']:.2f}x" if "peak_gib" in r else ""
                lines.append(f"- {r['variant']} / trl: tokens/s "
                             f"{r['summary']['tokens_per_s'] / trl_run['summary']['tokens_per_s']:.2f}x{mem}")
    if ok:
        lines.append(f"- N (matmul parameters) = {ok[0]['n_matmul'] / 1e6:.1f} M of {ok[0]['n_params'] / 1e6:.1f} M")
    lines.append("- step-1 loss check: " + ("; ".join(report["loss_check"]) or "ok (all near ln 2)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-rm")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, short sequences, few steps")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--data", default=str(DATA), help="hh-rlhf jsonl(.gz) of {chosen, rejected} dialogues")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None, help="steps dropped from the averages")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=None)
    common.device_args(p)
    p.add_argument("--attn", default="sdpa", help="attention of the TRL variant (and of oa's unless --oa-attn)")
    p.add_argument("--oa-attn", default=None, help="attention of the oa variants ('default': oa's own choice)")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common.device_defaults(args)
    args.oa_attn = args.oa_attn or args.attn
    args.steps = args.steps or (6 if args.tiny else 60)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.tiny else 10)
    args.max_length = args.max_length or (256 if args.tiny else 1024)
    if args.variant:
        common.one_variant(args, run_trl if args.variant == "trl" else run_oa)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
