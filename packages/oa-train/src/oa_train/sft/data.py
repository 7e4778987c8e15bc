"""The contract of SFT examples, checked: a dict with ``input_ids``, ``labels`` (-100 = not supervised, same
length) and, for packed rows, ``position_ids`` (restarting at 0 for every packed sample)."""

from __future__ import annotations

from oa_core.errors import OAError
from oa_train.training.batching import IGNORE


def check_examples(examples, split: str, limit: int = 1000) -> None:
    """Validate the first ``limit`` examples of ``split`` (the pipeline has checked them already; this
    catches hand-made examples that break the contract)."""
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
