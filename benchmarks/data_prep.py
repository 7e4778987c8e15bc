"""SFT data preparation throughput: oa's pipeline vs TRL's SFTTrainer dataset preparation.

Same conversations (real OASST threads + alpaca seed tasks, repeated), same Llama-2 tokenizer, same
chatml template, both single-process and without packing or truncation. Checks the outputs are equal
(input_ids and labels of every sample) and prints samples/s and the ratio.

    .venv/bin/python benchmarks/data_prep.py [--repeat 4]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
# chatml with TRL's {% generation %} markers (HF renders with trim_blocks, hence the explicit newlines)
CHATML_GENERATION = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def conversations(repeat: int):
    from oa_core.config import DatasetSpec
    from oa_data.loading import load_records

    records = []
    for path, fmt in [("examples/data/oasst/en_100_tree.jsonl", "oasst.sft"),
                      ("examples/data/alpaca-seed/seed_tasks_alpaca.jsonl", "alpaca")]:
        records += load_records(DatasetSpec(path=str(ROOT / path), format=fmt), progress=False).records
    return records * repeat


def run_oa(records, tokenizer, settings):
    from oa_core.config import DatasetSpec
    from oa_data.loading import LoadedSource
    from oa_data.mixing import MixReport
    from oa_data.pipeline import SplitReport, encode_split
    from oa_data.templates import resolve_template

    template = resolve_template(settings, tokenizer)
    source = LoadedSource(list(records), [], "bench", len(records))
    # distinct objects so every sample is encoded (the pipeline maps records to their origin by identity)
    source.records = [r.model_copy() for r in records]
    report = SplitReport("train", MixReport(seed=0, epoch=0))
    t, cpu = time.perf_counter(), time.process_time()
    out = encode_split(source.records, [(DatasetSpec(path="bench", format="oa.conversation"), source)],
                       tokenizer, template, settings, report, seed=0, progress=False)
    return (time.perf_counter() - t, time.process_time() - cpu), [(list(e.input_ids), list(e.labels)) for e in out]


def run_trl(records, tokenizer):
    import datasets
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_list([{"messages": [{"role": m.role, "content": m.content} for m in r.messages]}
                                     for r in records])
    args = SFTConfig(output_dir="/tmp/oa-bench-trl", assistant_only_loss=True, max_length=None,
                     dataset_num_proc=None, report_to="none", use_cpu=True)
    stub = SimpleNamespace(_tokenizer=tokenizer, chat_template=CHATML_GENERATION, completion_only_loss=False)
    t, cpu = time.perf_counter(), time.process_time()
    out = SFTTrainer._prepare_dataset(stub, ds, tokenizer, args, False, None, "train")
    elapsed = (time.perf_counter() - t, time.process_time() - cpu)
    return elapsed, [(list(x), list(y)) for x, y in zip(out["input_ids"], out["labels"], strict=True)]


DEFAULT_CROSS_CHECK = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4, help="copies of the sample conversations")
    parser.add_argument("--cross-check", type=float, default=DEFAULT_CROSS_CHECK,
                        help="data.mask_cross_check: fraction of samples whose mask is verified twice")
    parser.add_argument("--trials", type=int, default=3, help="alternating runs per side; the fastest counts")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from oa_data.settings import DataSettings
    from oa_data.special_tokens import add_special_tokens

    settings = DataSettings(chat_template="chatml", max_length=1_000_000, mask_cross_check=args.cross_check)
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "tokenizers" / "llama2-sp"))
    add_special_tokens(tokenizer, ["<|im_start|>", "<|im_end|>"])
    records = conversations(args.repeat)
    n = len(records)
    trl_s = oa_s = trl_cpu = oa_cpu = float("inf")
    for _ in range(args.trials):
        (t, c), trl_out = run_trl(records, copy.deepcopy(tokenizer))
        trl_s, trl_cpu = min(trl_s, t), min(trl_cpu, c)
        (t, c), oa_out = run_oa(records, copy.deepcopy(tokenizer), settings)
        oa_s, oa_cpu = min(oa_s, t), min(oa_cpu, c)
    same = trl_out == oa_out
    mismatch = next((i for i, (a, b) in enumerate(zip(trl_out, oa_out, strict=True)) if a != b), None)
    result = {
        "samples": n,
        "tokens": sum(len(x) for x, _ in oa_out),
        "oa_s": round(oa_s, 3),
        "trl_s": round(trl_s, 3),
        "oa_samples_per_s": round(n / oa_s, 1),
        "trl_samples_per_s": round(n / trl_s, 1),
        "speedup_vs_trl": round(trl_s / oa_s, 2),
        "oa_cpu_s": round(oa_cpu, 3),
        "trl_cpu_s": round(trl_cpu, 3),
        "cpu_time_ratio": round(trl_cpu / oa_cpu, 2),
        "outputs_equal": same,
        "first_mismatch": mismatch,
        "trials": args.trials,
        "mask_cross_check": args.cross_check,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
