"""The pairwise preference methods on the shared loop: ``dpo``, ``orpo``, ``simpo`` and ``cpo`` are one objective
with different loss terms (``train.terms()``): ``Σ_terms weight × loss`` per pair, summed over the micro-batch's
pairs (``unit = "pairs"``)."""

from __future__ import annotations

from dataclasses import asdict

import torch

from oa_train.preference.batches import model_part, pair_batch, sequence_sums
from oa_train.preference.losses import PairLogProbs
from oa_train.preference.objective import PreferenceObjective
from oa_train.training.objective import StepLoss


class PairwiseObjective(PreferenceObjective):
    """``dpo``, ``orpo``, ``simpo``, ``cpo``: a weighted sum of ``preference`` losses of each pair."""

    def make_examples(self, rows: list[dict], split: str) -> tuple[list[dict], dict, list[str]]:
        from oa_data.preference import PairCounts, pair_examples

        counts = PairCounts()
        pairs = pair_examples(rows, counts)
        dropped = counts.identical_after_cut
        lines = [f"  {dropped} pairs dropped: their replies were the same tokens after truncation"] if dropped else []
        return pairs, asdict(counts), lines

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = pair_batch(rows, self.run.pad_id, self.run.train.padding_free)
        cached = self.cached_reference(rows)
        if cached is not None:
            batch["ref_logps"] = cached
        return batch

    def num_units(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["margin"])

    @torch.no_grad()
    def reference_rows(self, reference, model, rows: list[dict]) -> torch.Tensor:
        batch = {k: v.to(self.run.device) for k, v in pair_batch(rows, self.run.pad_id, self.run.train.padding_free).items()}
        with self.run.accelerator.autocast():
            return reference(model, model_part(batch)).view(len(rows), 2)

    def log_probs(self, model, batch: dict[str, torch.Tensor]) -> PairLogProbs:
        """The pairs' policy (and reference) log-probs of a collated batch."""
        inputs = model_part(batch)
        sums, counts = sequence_sums(self.run.label_logprobs.tokens(model, inputs), inputs)
        ref = None
        if "ref_logps" in batch:
            ref = batch["ref_logps"].flatten()
        elif self.reference is not None:
            ref = self.reference(model, inputs)
        return PairLogProbs(sums[0::2], sums[1::2], counts[0::2], counts[1::2],
                            None if ref is None else ref[0::2], None if ref is None else ref[1::2], batch["margin"])

    def loss(self, model, batch: dict[str, torch.Tensor]) -> StepLoss:
        pairs = self.log_probs(model, batch)
        total, terms = 0, {}
        for name, weight, loss in self.terms:
            value = loss.fn(pairs, self.params)
            total = total + weight * value
            terms[f"loss/{name}"] = (value.detach().sum(), len(value))
        metrics = self.pair_metrics(pairs)
        return StepLoss(total.sum(), metrics | (terms if len(self.terms) > 1 else {}))

    @torch.no_grad()
    def pair_metrics(self, pairs: PairLogProbs) -> dict:
        """Implicit rewards β × log-ratio (reference-free: β × the mean or summed token log-prob, as the loss
        scores replies), their margins and how often the chosen reply wins, and the policy's log-probs: a chosen
        log-prob that falls with the rejected one shows here."""
        beta, n = self.params.beta, len(pairs.chosen)
        if pairs.ref_chosen is not None:
            chosen, rejected = beta * pairs.chosen_logratios, beta * pairs.rejected_logratios
        elif self.run.train.rewards_from_means:
            chosen, rejected = beta * pairs.chosen_mean, beta * pairs.rejected_mean
        else:
            chosen, rejected = beta * pairs.chosen, beta * pairs.rejected
        return {"rewards/accuracies": ((chosen > rejected).sum(), n), "rewards/margins": ((chosen - rejected).sum(), n),
                "logps/chosen": (pairs.chosen.sum(), n), "logps/rejected": (pairs.rejected.sum(), n),
                "rewards/chosen": (chosen.sum(), n), "rewards/rejected": (rejected.sum(), n)}
