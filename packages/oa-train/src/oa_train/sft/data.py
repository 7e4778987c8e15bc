"""The boundary to the data pipeline: tokenized examples in, checked.

An example is a dict with ``input_ids``, ``labels`` (-100 = not supervised, same length) and, for packed
rows, ``position_ids`` (restarting at 0 for every packed sample).
"""

from __future__ import annotations

from oa_core.errors import OAError
from oa_train.training.batching import IGNORE


def default_prepare_data(cfg, tokenizer, epoch: int = 0):
    """``(train, eval)`` examples from the oa-data pipeline (``oa_data.pipeline.build_sft_datasets``);
    ``epoch`` matters with ``data.per_epoch_resample``."""
    try:
        from oa_data.pipeline import build_sft_datasets
    except ImportError:
        raise OAError(
            "data pipeline not available: oa_data.pipeline.build_sft_datasets is missing",
            hint="update oa-data, or call run_sft(config, prepare_data=fn) with tokenized examples",
        ) from None
    return build_sft_datasets(cfg, tokenizer, epoch=epoch)


def check_examples(examples, split: str, limit: int = 1000) -> None:
    """Validate the first ``limit`` examples of ``split`` (the pipeline has checked them already; this
    catches a hand-made ``prepare_data`` that breaks the contract)."""
    supervised = 0
    for i in range(min(len(examples), limit)):
        ex = examples[i]
        where = f"{split} example {i}"
        if "input_ids" not in ex or "labels" not in ex:
            raise OAError(f"{where}: needs 'input_ids' and 'labels' (has {sorted(ex)})", hint="check the data pipeline")
        n = len(ex["input_ids"])
        if n == 0:
            raise OAError(f"{where}: empty input_ids", hint="drop empty samples (data.min_length)")
        if len(ex["labels"]) != n:
            raise OAError(f"{where}: labels has {len(ex['labels'])} tokens, input_ids {n}", hint="they must align")
        pos = ex.get("position_ids")
        if pos is not None and (len(pos) != n or pos[0] != 0):
            raise OAError(f"{where}: position_ids must have {n} entries starting at 0", hint="check data.packing")
        supervised += sum(1 for t in ex["labels"][1:] if t != IGNORE)
    if len(examples) and split == "train" and supervised == 0:
        raise OAError(f"train data: no supervised tokens in the first {limit} examples (all labels are -100)",
                      hint="check data.train_on_inputs and the chat template")
