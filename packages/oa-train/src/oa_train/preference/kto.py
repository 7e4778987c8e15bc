"""KTO on the shared loop: completions with a thumbs up or down (``kto`` records, or preference pairs unpaired),
an ``unpaired`` loss per completion weighted by ``desirable_weight`` / ``undesirable_weight``, averaged per
completion (``unit = "completions"``).

The reference point z_ref of each micro-batch is the mean of log π_θ(y'|x) − log π_ref(y'|x) over the mismatched
pairs (x, y') of its examples (:func:`oa_data.preference.unpaired_examples`), averaged over the processes,
clamped at 0 and without gradient, as in the paper and TRL.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from oa_core.errors import OAError
from oa_train.preference.batches import model_part, sequence_sums, unpaired_batch
from oa_train.preference.losses import UnpairedLogProbs
from oa_train.preference.objective import PreferenceObjective
from oa_train.training.objective import StepLoss


class KTOObjective(PreferenceObjective):
    unit = "completions"

    def make_examples(self, rows: list[dict], split: str) -> tuple[list[dict], dict, list[str]]:
        from oa_data.preference import unpaired_examples
        from oa_data.settings import DataSettings

        cfg, tc = self.run.config, self.run.train
        examples, counts = unpaired_examples(rows, cfg.section("data", DataSettings).max_length, cfg.seed)
        if split == "train" and not (counts.desirable and counts.undesirable):
            missing = "undesirable (label false)" if counts.desirable else "desirable (label true)"
            raise OAError(f"datasets: KTO needs desirable and undesirable completions; the training data "
                          f"({', '.join(spec.path for spec in cfg.datasets)}) has {counts.desirable} desirable and "
                          f"{counts.undesirable} undesirable", hint=f"add {missing} completions (or preference pairs, "
                          "whose rejected replies count as undesirable)")
        lines = [f"  {counts.desirable} desirable, {counts.undesirable} undesirable completions"]
        if split == "train":
            ratio = tc.desirable_weight * counts.desirable / (tc.undesirable_weight * counts.undesirable)
            if not 1 <= ratio <= 4 / 3:
                lines.append(f"  note: desirable_weight × {counts.desirable} / (undesirable_weight × "
                             f"{counts.undesirable}) = {ratio:.2f}; the KTO paper keeps it in [1, 4/3]")
        return examples, asdict(counts), lines

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = unpaired_batch(rows, self.run.pad_id, self.run.train.padding_free)
        cached = self.cached_reference(rows)
        if cached is not None:
            batch["ref_logps"] = cached
        return batch

    def num_units(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["desirable"])

    @torch.no_grad()
    def reference_rows(self, reference, model, rows: list[dict]) -> torch.Tensor:
        batch = {k: v.to(self.run.device) for k, v in
                 unpaired_batch(rows, self.run.pad_id, self.run.train.padding_free).items()}
        with self.run.accelerator.autocast():
            return torch.stack([reference(model, model_part(batch)), reference(model, model_part(batch, "kl_"))], -1)

    def loss(self, model, batch: dict[str, torch.Tensor]) -> StepLoss:
        run, tc = self.run, self.run.train
        inputs, kl_inputs = model_part(batch), model_part(batch, "kl_")
        logps = sequence_sums(run.label_logprobs.tokens(model, inputs), inputs)[0]
        with torch.no_grad():
            kl_logps = sequence_sums(run.label_logprobs.tokens(model, kl_inputs), kl_inputs)[0]
        if "ref_logps" in batch:
            ref, ref_kl = batch["ref_logps"].unbind(-1)
        else:
            ref, ref_kl = self.reference(model, inputs), self.reference(model, kl_inputs)
        kl = run.accelerator.reduce((kl_logps - ref_kl).mean().detach(), reduction="mean").clamp(min=0)
        desirable = batch["desirable"]
        examples = UnpairedLogProbs(logps, ref, desirable, kl)
        ((_, _, loss),) = self.terms
        per_example = loss.fn(examples, self.params)
        weights = torch.where(desirable, tc.desirable_weight, tc.undesirable_weight)
        return StepLoss((weights * per_example).sum(), self.metrics(examples))

    @torch.no_grad()
    def metrics(self, examples: UnpairedLogProbs) -> dict:
        rewards = self.params.beta * examples.logratios
        good, bad = examples.desirable, ~examples.desirable
        return {"kl": (examples.kl, 1), "rewards/chosen": (rewards[good].sum(), good.sum()),
                "rewards/rejected": (rewards[bad].sum(), bad.sum()), "logps/chosen": (examples.logps[good].sum(), good.sum()),
                "logps/rejected": (examples.logps[bad].sum(), bad.sum())}
