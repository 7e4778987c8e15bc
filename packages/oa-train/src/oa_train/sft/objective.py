"""Supervised fine-tuning, and continued pretraining on ``{"text"}`` data (every token supervised): the token
cross-entropy of the supervised tokens, normalised by their number over the whole optimizer step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from oa_core.errors import OAError
from oa_train.sft.data import check_examples
from oa_train.sft.eval import evaluate, generation_metrics
from oa_train.training.batching import num_targets
from oa_train.training.objective import Evaluation, Objective, StepLoss

PrepareData = Callable[..., tuple[Sequence[dict], Sequence[dict] | None]]


class SFTObjective(Objective):
    """``prepare_data(run_config, tokenizer) -> (train, eval)`` replaces the oa-data pipeline with examples
    made elsewhere (dicts with ``input_ids``, ``labels`` and, for packed rows, ``position_ids``)."""

    unit = "tokens"

    def __init__(self, prepare_data: PrepareData | None = None):
        self._prepare_data = prepare_data

    def check(self, config) -> None:
        if self._prepare_data is None and not config.datasets:
            raise OAError("datasets: no training datasets configured", hint="add at least one entry under datasets:")

    def prepare_data(self):
        run = self.run
        if self._prepare_data is not None:
            train, evaluation = self._prepare_data(run.config, run.tokenizer.tokenizer)
        else:
            train, evaluation = self._pipeline(epoch=0)
        evaluation = evaluation if evaluation is not None else []
        check_examples(train, "train")
        check_examples(evaluation, "eval")
        if run.train.generation.num_samples and not len(evaluation):
            raise OAError("train.generation.num_samples: needs eval data", hint="add eval_datasets, or set it to 0")
        return train, evaluation

    def epoch_data(self, epoch: int):
        """A new draw of the mix for every epoch with ``data.per_epoch_resample`` (cached, reproducible)."""
        from oa_data.settings import DataSettings

        if self._prepare_data is None and self.run.config.section("data", DataSettings).per_epoch_resample:
            return self._pipeline(epoch)[0]
        return None

    def _pipeline(self, epoch: int):
        """The oa-data splits; the first time, their summary is printed and kept for the manifest."""
        from oa_data.pipeline import prepare_splits
        from oa_data.summary import table

        train, evaluation = prepare_splits(self.run.config, self.run.tokenizer, epoch=epoch)
        splits = {"train": train, "eval": evaluation} if evaluation else {"train": train}
        if epoch == 0:
            self.data_report = {f"{name}_samples": sum(d.samples for d in split.report.datasets)
                                for name, split in splits.items()}
            self.data_report["datasets"] = {name: [d.to_dict() for d in split.report.datasets]
                                            for name, split in splits.items()}
            self.data_report["files"] = data_file_digests(self.run.config)
            if self.run.accelerator.is_main_process:
                print("\n".join(line for name, split in splits.items() for line in table(name, split.report.datasets)))
        return train.dataset, (evaluation.dataset if evaluation else None)

    def num_units(self, batch: dict[str, torch.Tensor]) -> int:
        return num_targets(batch)

    def loss(self, model, batch: dict[str, torch.Tensor]) -> StepLoss:
        nll, correct = self.run.label_logprobs.nll_sum(model, batch)
        metrics = {} if correct is None else {"accuracy": (correct, num_targets(batch))}
        return StepLoss(nll, metrics)

    def evaluate(self, model, examples) -> Evaluation:
        run, tc = self.run, self.run.train
        metrics = evaluate(run.accelerator, model, examples, pad_id=run.pad_id,
                           batch_size=tc.per_device_eval_batch_size or tc.per_device_batch_size)
        samples = []
        if tc.generation.num_samples:
            scores, samples = generation_metrics(run.accelerator, model, run.tokenizer.tokenizer, examples,
                                                 num_samples=tc.generation.num_samples,
                                                 max_new_tokens=tc.generation.max_new_tokens,
                                                 metrics=tc.generation.metrics,
                                                 batch_size=tc.per_device_eval_batch_size or tc.per_device_batch_size)
            metrics |= scores
        return Evaluation(metrics, samples)


def data_file_digests(cfg) -> dict[str, str]:
    """SHA-256 of every local data file the run reads (hub datasets are named by id and revision in the config)."""
    from oa_data.cache import file_digests
    from oa_data.loading import data_files

    specs = [*cfg.datasets, *cfg.eval_datasets]
    return file_digests(f for spec in specs for f in (data_files(spec.path) or [spec.path]))


def run_sft(loaded, *, prepare_data: PrepareData | None = None, callbacks=()) -> dict:
    """Train ``loaded`` (``method: sft`` or ``pretrain``) on the shared loop; returns the final record."""
    from oa_train.training.loop import Loop

    return Loop(loaded, SFTObjective(prepare_data), callbacks=callbacks).run()
