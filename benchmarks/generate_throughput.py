"""Generation throughput: oa's ``hf`` engine (:class:`oa_infer.engines.hf.HFEngine`: length-sorted batches, left
padding, KV cache) vs a plain ``model.generate`` loop over the same prompts and settings.

    python benchmarks/generate_throughput.py --out DIR          # GPU: Llama-3.2-1B shape, 128 prompts, 128 tokens
    python benchmarks/generate_throughput.py --tiny --out DIR   # CPU smoke test (tiny model, few prompts)

Variants, in this order, in one process (a warm-up generation first, so CUDA start-up is in none of them):

- ``plain-generate``: one ``model.generate`` call per prompt, in input order (what a hand-written evaluation loop
  does, and what oa-train's in-training generation did before it used the engine);
- ``plain-batched``: ``model.generate`` on ``--batch`` prompts at a time in input order, left-padded;
- ``plain-static``: ``plain-batched`` at its best: ``cache_implementation="static"``, with which transformers
  compiles the decoding step (``torch.compile``, CUDA graphs) on a GPU;
- ``oa-hf``: ``HFEngine.generate_ids`` with ``batch_size --batch`` as oa-infer's settings make it by default
  (prompts sorted by length, left-padded; on a GPU ``compile: auto`` means a static cache and compiled decoding,
  prompt widths padded to a power of two, at least 64);
- ``oa-hf-eager``: the same with ``compile: false`` (a dynamic KV cache, nothing compiled).

Variants that compile get one untimed run over all prompts first (its time is reported as "first run": compilation
included), so that the timed runs measure decoding, not the compiler.

Model: randomly initialised from a local config: Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads / 8 KV
heads, MLP 8192, tied embeddings, 128256-token vocabulary; the token ids come from the llama2-sp tokenizer with
ChatML's tokens added), bf16 weights, attention ``sdpa``. Prompts: the first ``--prompts`` (128) of the 175 alpaca
seed tasks (examples/data/alpaca-seed) as user turns rendered with ChatML and the generation prompt, encoded once; every
variant gets exactly these token ids. Settings: greedy, ``--max-new-tokens`` (128), ending at eos (a random model
rarely emits it, so almost every answer has the full length; generated tokens are counted per variant, the
end-of-turn token included, padding not). Measured: wall time of all prompts (CUDA synchronised) over
``--repeats`` runs (default 1; the fastest counts; ``plain-generate`` takes prompts x tokens sequential steps, most
of the run), tokens/s = generated tokens / seconds; ratios name both rows. The greedy
texts of ``oa-hf`` are compared with ``plain-generate``'s (bf16 batches with padding may differ in a few tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import device_name, ensure_plugins  # noqa: E402

VARIANTS = ("plain-generate", "plain-batched", "plain-static", "oa-hf", "oa-hf-eager")
ALPACA = ROOT / "examples/data/alpaca-seed/seed_tasks_alpaca.jsonl"
TOKENIZER = ROOT / "assets/tokenizers/llama2-sp"


def model_config(size: str) -> dict:
    """Llama-3.2-1B's shape ("full"); tiny: the tokenizer's 32000 tokens and ChatML's two."""
    return common.llama_config(size, vocab_size=128256 if size == "full" else 32002, use_cache=True)


# ---------------------------------------------------------------- pure helpers (tested on CPU)


def summarize(runs: list[dict]) -> dict:
    """The fastest of the repeated runs (each ``{seconds, tokens}``): seconds, tokens, tokens/s."""
    if not runs:
        raise ValueError("no runs")
    best = min(runs, key=lambda r: r["seconds"])
    return {"seconds": best["seconds"], "tokens": best["tokens"], "tokens_per_s": best["tokens"] / best["seconds"],
            "runs_s": [r["seconds"] for r in runs]}


def ratios(results: dict) -> list[dict]:
    """tokens/s of each oa variant over each plain variant that ran (and default over eager), named by both rows."""
    pairs = [(oa, base) for oa in ("oa-hf", "oa-hf-eager") for base in ("plain-generate", "plain-batched",
                                                                       "plain-static")]
    pairs.append(("oa-hf", "oa-hf-eager"))
    return [{"name": f"{a} / {b} tokens/s", "ratio": results[a]["tokens_per_s"] / results[b]["tokens_per_s"]}
            for a, b in pairs if "tokens_per_s" in results.get(a, {}) and "tokens_per_s" in results.get(b, {})]


def generated_tokens(ids: list[int], eos_ids: list[int], pad_id: int | None = None) -> list[int]:
    """A plain ``generate`` row's new tokens up to and including the first eos (the rest is padding)."""
    out = []
    for t in ids:
        out.append(t)
        if t in eos_ids:
            return out
    while pad_id is not None and out and out[-1] == pad_id and pad_id not in eos_ids:
        out.pop()
    return out


def agreement(a: list[str], b: list[str]) -> int:
    """How many of the texts are equal."""
    return sum(x == y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- the measurement


def setup(args):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from oa_core.generation import GenerationParams
    from oa_data.special_tokens import prepare_tokenizer
    from oa_data.templates import BUILTIN_TEMPLATES, standalone_jinja
    from oa_infer.engines.hf import HFEngine, HFSettings

    ensure_plugins()
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    template = BUILTIN_TEMPLATES["chatml"]
    prepare_tokenizer(tok, (), template)
    tok.chat_template = standalone_jinja(template)
    size = "tiny" if args.tiny else "full"
    config = model_config(size)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation=args.attn))
    model = model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    engine = HFEngine.from_settings(model, tok, HFSettings(model="-", batch_size=args.batch), source=str(TOKENIZER))
    eager = HFEngine.from_settings(model, tok, HFSettings(model="-", batch_size=args.batch, compile=False),
                                   source=str(TOKENIZER))
    rows = [json.loads(line) for line in ALPACA.read_text(encoding="utf-8").splitlines()][: args.prompts]
    prompts = [[{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else "")}]
               for r in rows]
    encoded = [engine.encoder.encode(p) for p in prompts]
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    return model, tok, {"oa-hf": engine, "oa-hf-eager": eager}, encoded, params, config


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_plain(model, tok, engine, encoded, params, batch: int, device: str, static: bool = False
              ) -> tuple[int, list[str]]:
    """``model.generate`` on ``batch`` prompts at a time in input order, left-padded (``static``: with a static
    cache, which transformers decodes with a compiled step): tokens and texts."""
    import torch

    tokens, texts = 0, []
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[engine.pad_id] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=params.max_new_tokens,
                                 do_sample=False, eos_token_id=engine.eos_ids, pad_token_id=engine.pad_id,
                                 **({"cache_implementation": "static"} if static else {}))
        for row in out[:, width:].tolist():
            new = generated_tokens(row, engine.eos_ids, engine.pad_id)
            tokens += len(new)
            texts.append(tok.decode([t for t in new if t not in engine.eos_ids], skip_special_tokens=True))
    return tokens, texts


def run_oa(engine, encoded, params) -> tuple[int, list[str]]:
    completions = [c for (c,) in engine.generate_ids(encoded, params)]
    return sum(len(c.token_ids) for c in completions), [c.text for c in completions]


def measure(args) -> dict:
    model, tok, engines, encoded, params, config = setup(args)
    warm = params.model_copy(update={"max_new_tokens": 2})
    run_oa(engines["oa-hf-eager"], encoded[:2], warm)
    run_plain(model, tok, engines["oa-hf"], encoded[:2], warm, 1, args.device)
    results, texts = {}, {}
    for variant in [v for v in args.variants.split(",") if v]:
        batch = 1 if variant == "plain-generate" else args.batch

        def once(variant=variant, batch=batch):
            sync(args.device)
            t0 = time.perf_counter()
            if variant in engines:
                tokens, texts[variant] = run_oa(engines[variant], encoded, params)
            else:
                tokens, texts[variant] = run_plain(model, tok, engines["oa-hf"], encoded, params, batch, args.device,
                                                   static=variant == "plain-static")
            sync(args.device)
            return {"seconds": time.perf_counter() - t0, "tokens": tokens}

        compiles = variant == "plain-static" or (variant == "oa-hf" and engines["oa-hf"].compile)
        first = once() if compiles else None
        results[variant] = {"prompts": len(encoded), "batch": batch, **summarize([once() for _ in range(args.repeats)]),
                            "first_run_s": first["seconds"] if first else None}
        print(f"   {variant}: {results[variant]['tokens']} tokens in {results[variant]['seconds']:.2f} s "
              f"({results[variant]['tokens_per_s']:.0f} tokens/s)", flush=True)
    same = {f"{oa} = {base}": agreement(texts[oa], texts[base]) for oa in ("oa-hf", "oa-hf-eager")
            for base in ("plain-generate", "plain-batched", "plain-static") if oa in texts and base in texts}
    return {"results": results, "same_text": same, "prompt_tokens": sum(len(p) for p in encoded),
            "model_config": config}


def render(report: dict) -> str:
    lines = [common.header(report),
             "", f"{report['args']['prompts_used']} prompts ({report['prompt_tokens']} tokens), greedy, "
             f"max_new_tokens {report['args']['max_new_tokens']}, {report['args']['dtype']}",
             "", "| variant | batch | generated tokens | seconds | tokens/s | first run (compiling), s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["results"].items():
        first = f"{r['first_run_s']:.1f}" if r.get("first_run_s") else "—"
        lines.append(f"| {name} | {r['batch']} | {r['tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:.0f} "
                     f"| {first} |")
    lines.append("")
    for g in report["ratios"]:
        lines.append(f"- {g['name']}: {g['ratio']:.2f}x")
    for name, n in report["same_text"].items():
        lines.append(f"- greedy texts {name}: {n} of {report['args']['prompts_used']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-generate")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, few prompts, few tokens")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--prompts", type=int, default=None, help="the first N alpaca seed tasks (175 in all)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="prompts per generate call (plain-batched, oa-hf)")
    p.add_argument("--repeats", type=int, default=None, help="runs per variant; the fastest counts")
    common.device_args(p, mixed_precision=False)
    p.add_argument("--attn", default="sdpa")
    args = p.parse_args(argv)
    common.device_defaults(args)
    tiny = args.tiny
    args.prompts = args.prompts or (12 if tiny else 128)
    args.max_new_tokens = args.max_new_tokens or (8 if tiny else 128)
    args.batch = args.batch or (4 if tiny else 32)
    args.repeats = args.repeats or 1
    measured = measure(args)
    args.prompts_used = measured["results"][next(iter(measured["results"]))]["prompts"] if measured["results"] else 0
    report = common.new_report(args, device=device_name(args.device), **measured, ratios=ratios(measured["results"]))
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    common.write_report(work, "generate_throughput", report, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
