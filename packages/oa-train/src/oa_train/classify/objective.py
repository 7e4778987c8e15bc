"""Sequence classification (``method: classification``): a score per class read at the last token of every
sequence, and the loss named by ``train.loss`` (a registered ``classification`` loss)."""

from __future__ import annotations

import torch

from oa_core.errors import OAError
from oa_infer.sequence_scores import batch_sequences, sequence_scores
from oa_train.classify.metrics import class_metrics, tallies
from oa_train.reward.objective import float_scores
from oa_train.training.batching import micro_batches
from oa_train.training.objective import Evaluation, Objective, StepLoss


def label_names(config) -> list[str]:
    """The class names of the first dataset whose format options name them, else the indices."""
    n = config.train.num_labels
    for spec in [*config.datasets, *config.eval_datasets]:
        names = spec.options.get("label_names")
        if names and len(names) == n:
            return [str(x) for x in names]
    return [str(i) for i in range(n)]


class ClassificationObjective(Objective):
    """Labelled records from the oa-data pipeline (:func:`oa_data.classification.prepare_classification`). Units:
    records (weighted by ``class_weights``) for single-label, record × class for multi-label."""

    unit = "examples"

    def model_options(self, config) -> dict:
        return {"num_labels": config.train.num_labels, "packed_rows": config.train.padding_free}

    def check(self, config) -> None:
        if not config.datasets:
            raise OAError("datasets: no training datasets configured", hint="add at least one entry under datasets:")

    def setup(self, run) -> None:
        from oa_core.plugins import get_registry

        super().setup(run)
        self.loss_fn = get_registry().get("loss", run.train.loss).fn
        self.multi_label = run.train.problem_type == "multi_label"
        self.unit = "labels" if self.multi_label else "examples"
        self.names = label_names(run.config)

    def prepare_data(self):
        from oa_data.classification import prepare_classification
        from oa_train.sft.objective import data_file_digests

        run, tc = self.run, self.run.train
        splits = {name: prepare_classification(run.config, run.tokenizer, name, num_labels=tc.num_labels,
                                               multi_label=self.multi_label) for name in ("train", "eval")}
        splits = {name: split for name, split in splits.items() if split is not None}
        self.data_report = {f"{name}_records": len(split.rows) for name, split in splits.items()}
        self.data_report["datasets"] = {name: {source: r.to_dict() for source, r in split.reports.items()}
                                        for name, split in splits.items()}
        self.data_report["files"] = data_file_digests(run.config)
        if run.accelerator.is_main_process:
            print("\n".join(line for name, split in splits.items() for line in split.lines(name)))
        return splits["train"].rows, splits["eval"].rows if "eval" in splits else []

    def make_batches(self, model, examples, step):
        return [self.collate(rows) for rows in examples]

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Model inputs of the rows' sequences and ``class_labels``: (N,) indices, or (N, C) 0/1 targets."""
        batch = batch_sequences([r["input_ids"] for r in rows], self.run.pad_id, packed=self.run.train.padding_free)
        if self.multi_label:
            targets = torch.zeros(len(rows), self.run.train.num_labels)
            for i, row in enumerate(rows):
                targets[i, row["label"]] = 1.0
            return batch | {"class_labels": targets}
        return batch | {"class_labels": torch.tensor([r["label"] for r in rows], dtype=torch.long)}

    def num_units(self, batch) -> float:
        labels, weights = batch["class_labels"], self.run.train.class_weights
        if self.multi_label:
            return labels.numel()
        return float(sum(weights[y] for y in labels.tolist())) if weights else len(labels)

    def loss(self, model, batch) -> StepLoss:
        logits = float_scores(sequence_scores(model, batch))
        labels = batch["class_labels"]
        loss = self.loss_fn(logits, labels.to(logits.dtype) if self.multi_label else labels, self.run.train)
        right = ((logits > 0) == labels.bool()).sum() if self.multi_label else (logits.argmax(-1) == labels).sum()
        return StepLoss(loss, {"accuracy": (right.detach(), labels.numel())})

    @torch.no_grad()
    def evaluate(self, model, examples) -> Evaluation:
        """``eval_loss`` per unit, accuracy, macro-F1 and F1 per class; the per-class table is printed."""
        acc, tc = self.run.accelerator, self.run.train
        was_training = model.training
        model.eval()
        totals = torch.zeros(4 + 3 * tc.num_labels, dtype=torch.float64)
        for slots in micro_batches(len(examples), batch_size=tc.per_device_eval_batch_size or tc.per_device_batch_size,
                                   num_processes=acc.num_processes, rank=acc.process_index, shuffle=False):
            counted = [examples[s.index] for s in slots if s.counted]
            batch = {k: v.to(acc.device) for k, v in self.collate(counted or [examples[slots[0].index]]).items()}
            logits = float_scores(sequence_scores(model, batch))
            if not counted:
                continue
            labels = batch["class_labels"]
            loss = self.loss_fn(logits, labels.to(logits.dtype) if self.multi_label else labels, tc)
            if self.multi_label:
                predicted, target = logits > 0, labels.bool()
            else:
                predicted = torch.nn.functional.one_hot(logits.argmax(-1), tc.num_labels).bool()
                target = torch.nn.functional.one_hot(labels, tc.num_labels).bool()
            totals += torch.tensor([float(loss), self.num_units(batch), *tallies(predicted, target)], dtype=torch.float64)
        totals = acc.reduce(totals.to(acc.device), reduction="sum").tolist()
        model.train(was_training)
        metrics, table = class_metrics(totals[2:], self.names, single_label=not self.multi_label)
        if acc.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write("\n".join(table))
        return Evaluation({"eval_loss": totals[0] / max(totals[1], 1), **metrics})
