"""Reward models (``method: rm``): a sequence classifier with one output scores every reply of a prompt at its
last token, and the loss named by ``train.loss`` (a registered ``reward`` loss) ranks them as people did."""

from __future__ import annotations

import torch

from oa_core.errors import OAError
from oa_infer.sequence_scores import sequence_scores
from oa_train.reward.batching import collate_groups
from oa_train.reward.losses import RewardPairs
from oa_train.reward.metrics import TALLIES, prompt_tallies, ranking_metrics
from oa_train.training.batching import micro_batches
from oa_train.training.objective import Evaluation, Objective, StepLoss


def float_scores(scores: torch.Tensor) -> torch.Tensor:
    """Scores in float32 at least (bf16/fp16 under mixed precision), float64 kept."""
    return scores if scores.dtype == torch.float64 else scores.float()


class RMObjective(Objective):
    """Ranked reply groups from the oa-data pipeline (:func:`oa_data.ranking.prepare_ranking`); the units are
    those of the loss (``fn.unit``: prompts or pairs)."""

    unit = "prompts"

    def model_options(self, config) -> dict:
        return {"num_labels": 1, "packed_rows": config.train.padding_free}

    def check(self, config) -> None:
        if not config.datasets:
            raise OAError("datasets: no training datasets configured", hint="add at least one entry under datasets:")

    def setup(self, run) -> None:
        from oa_core.plugins import get_registry

        super().setup(run)
        self.loss_fn = get_registry().get("loss", run.train.loss).fn
        self.unit = getattr(self.loss_fn, "unit", "pairs")

    def prepare_data(self):
        from oa_data.ranking import prepare_ranking
        from oa_train.sft.objective import data_file_digests

        run, tc = self.run, self.run.train
        options = {"max_replies": tc.max_replies, "min_prompt": tc.min_prompt_length, "use_margin": tc.use_margin}
        splits = {name: prepare_ranking(run.config, run.tokenizer, name, **options) for name in ("train", "eval")}
        splits = {name: split for name, split in splits.items() if split is not None}
        self.data_report = {f"{name}_groups": len(split.rows) for name, split in splits.items()}
        self.data_report["datasets"] = {name: {source: r.to_dict() for source, r in split.reports.items()}
                                        for name, split in splits.items()}
        self.data_report["files"] = data_file_digests(run.config)
        if run.accelerator.is_main_process:
            print("\n".join(line for name, split in splits.items() for line in split.lines(name)))
        return splits["train"].rows, splits["eval"].rows if "eval" in splits else []

    def make_batches(self, model, examples, step):
        return [collate_groups(rows, self.run.pad_id, packed=self.run.train.padding_free) for rows in examples]

    def num_units(self, batch) -> int:
        if self.unit == "prompts":
            return int(torch.unique(batch["pair_group"]).numel())
        return len(batch["pair_group"])

    def pairs(self, scores: torch.Tensor, batch) -> RewardPairs:
        margin = batch["pair_margin"].to(scores.dtype)
        return RewardPairs(scores[batch["pair_better"]], scores[batch["pair_worse"]], batch["pair_group"],
                           margin if self.run.train.use_margin else torch.zeros_like(margin))

    def loss(self, model, batch) -> StepLoss:
        scores = float_scores(sequence_scores(model, batch)[:, 0])
        pairs = self.pairs(scores, batch)
        diff = (pairs.chosen - pairs.rejected).detach()
        return StepLoss(self.loss_fn(pairs, self.run.train), {
            "accuracy": ((diff > 0).sum(), len(diff)), "margin": (diff.sum(), len(diff)),
            "reward_mean": (scores.detach().sum(), len(scores))})

    @torch.no_grad()
    def evaluate(self, model, examples) -> Evaluation:
        """``eval_loss`` per unit and the ranking metrics of :mod:`oa_train.reward.metrics`. Every process runs
        the same number of forwards; the wrap-around fillers of the last micro-batch count nothing."""
        acc, tc = self.run.accelerator, self.run.train
        was_training = model.training
        model.eval()
        totals = torch.zeros(2 + len(TALLIES), dtype=torch.float64)
        for slots in micro_batches(len(examples), batch_size=tc.per_device_eval_batch_size or tc.per_device_batch_size,
                                   num_processes=acc.num_processes, rank=acc.process_index, shuffle=False):
            counted = [examples[s.index] for s in slots if s.counted]
            rows = counted or [examples[slots[0].index]]
            batch = {k: v.to(acc.device) for k, v in self.make_batches(model, [rows], 0)[0].items()}
            scores = float_scores(sequence_scores(model, batch)[:, 0])
            if not counted:
                continue
            totals[0] += float(self.loss_fn(self.pairs(scores, batch), tc))
            totals[1] += self.num_units(batch)
            values, groups = scores.tolist(), batch["sequence_group"].tolist()
            for g, row in enumerate(rows):
                totals[2:] += torch.tensor(prompt_tallies(row["ranks"], [v for v, h in zip(values, groups, strict=True)
                                                                          if h == g]), dtype=torch.float64)
        totals = acc.reduce(totals.to(acc.device), reduction="sum").tolist()
        model.train(was_training)
        return Evaluation({"eval_loss": totals[0] / max(totals[1], 1), **ranking_metrics(totals[2:])})


def run_rm(loaded, *, callbacks=()) -> dict:
    """Train ``loaded`` (``method: rm``) on the shared loop; returns the final record."""
    from oa_train.training.loop import Loop

    return Loop(loaded, RMObjective(), callbacks=callbacks).run()
