"""What the preference objectives share: :class:`PreferenceObjective`, the base of the pairwise methods
(``dpo``, ``orpo``, ``simpo``, ``cpo``; :mod:`oa_train.preference.pairs`) and of ``kto``
(:mod:`oa_train.preference.kto`).

Data: the oa-data candidate rows of ``datasets`` / ``eval_datasets`` (:func:`oa_data.candidates.prepare_candidates`:
truncation keeps the prompt's end and the replies' start, drops counted), as pairs or unpaired examples. Every
log-prob goes through ``run.label_logprobs`` (the fused linear+CE head when a patch provides it). The reference
(:mod:`oa_train.preference.reference`) is set up when the first micro-batches are made, when the model is on its
device: a live reference, or the precomputed log-probs from the cache (computed then if it is not complete).

A loss is summed over the micro-batch's units (pairs, completions); the loop divides by the units of the whole
optimizer step, so a step's loss is the mean over its pairs (completions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch

from oa_core.errors import OAError
from oa_train.preference.cache import CacheEntry, cache_key, examples_digest
from oa_train.preference.reference import AdaptersOff, Frozen, weights_digest
from oa_train.training.batching import micro_batches
from oa_train.training.frozen import frozen_starting_model
from oa_train.training.objective import Evaluation, Objective


class PreferenceObjective(Objective):
    """What pairs and unpaired feedback share: data, loss terms, the reference and evaluation."""

    unit = "pairs"
    width = 2  # reference log-probs per example

    def model_options(self, config) -> dict:
        return {"packed_rows": config.train.padding_free}

    def setup(self, run) -> None:
        """The loss terms of ``run.train``; no reference yet (:meth:`make_batches` starts it, or set
        ``reference`` to a :class:`~oa_train.preference.reference.Reference` and ``started`` to True)."""
        from oa_core.plugins import get_registry

        super().setup(run)
        self.params = run.train.params()
        self.terms = [(name, weight, get_registry().get("loss", name)) for name, weight in run.train.terms()]
        self.needs_reference = any(loss.needs_reference for _, _, loss in self.terms)
        self.reference, self.tables, self.cache, self._frozen, self.started = None, {}, {}, None, False

    def check(self, config) -> None:
        if not config.datasets:
            raise OAError("datasets: no training datasets configured", hint="add at least one entry under datasets:")

    # ---------------------------------------------------------------- data

    def prepare_data(self):
        from oa_data.candidates import prepare_candidates
        from oa_train.sft.objective import data_file_digests

        run = self.run
        splits = {name: prepare_candidates(run.config, run.tokenizer, name) for name in ("train", "eval")}
        lines, counts, self.examples = [], {}, {}
        for name, split in splits.items():
            if split is None:
                continue
            self.examples[name], counts[name], more = self.make_examples(split.rows, name)
            for i, ex in enumerate(self.examples[name]):
                ex["split"], ex["index"] = name, i
            lines += split.lines(name) + more
        self.data_report = {f"{name}_{self.unit}": len(rows) for name, rows in self.examples.items()}
        self.data_report["counts"] = counts
        self.data_report["datasets"] = {name: {source: asdict(report) for source, report in split.reports.items()}
                                        for name, split in splits.items() if split is not None}
        self.data_report["files"] = data_file_digests(run.config)
        lines += self._plan_reference()
        if run.accelerator.is_main_process:
            print("\n".join(lines))
        return self.examples["train"], self.examples.get("eval", [])

    def make_examples(self, rows: list[dict], split: str) -> tuple[list[dict], dict, list[str]]:
        """The examples of a split's candidate rows, what making them counted, and lines to print."""
        raise NotImplementedError

    # ---------------------------------------------------------------- reference

    def _plan_reference(self) -> list[str]:
        """Decide where the reference log-probs come from; copy the starting weights when a copy is needed."""
        if not self.needs_reference:
            self.data_report["reference"] = {"source": "none (reference-free)"}
            return []
        run, settings = self.run, self.run.train.reference
        self.source = settings.source
        if self.source == "auto":
            self.source = "adapters_off" if _is_peft(run.model) and not run.config.model.adapter_path else "copy"
        report = {"source": self.source, "precompute": settings.precompute}
        self.data_report["reference"] = report
        if not settings.precompute:
            if self.source == "copy":
                self._frozen = self._frozen_copy()
            return [f"reference: {self._reference_name()}, computed live"]
        weights = weights_digest(run.model, frozen_only=self.source == "adapters_off")
        settings_key = self._numerics()
        cache_dir = settings.cache_dir or _data_cache_dir(run.config)
        lines = []
        for name, rows in self.examples.items():
            key = cache_key(weights, examples_digest(rows), settings_key)
            entry = self.cache[name] = CacheEntry.at(cache_dir, key, len(rows), self.width)
            status = entry.status()
            report[name] = {"key": key, **status}
            done = {"hit": "cache hit", "miss": "cache miss, computed before step 1",
                    "partial": f"cache partly there ({status['chunks_on_disk']} of {status['chunks']} chunks), the rest "
                    "computed before step 1"}[status["cache"]]
            lines.append(f"reference log-probs [{name}]: {done} ({entry.folder})")
        incomplete = any(report[name]["cache"] != "hit" for name in self.cache)
        if incomplete and self.source == "copy" and _has_checkpoints(run.output_dir):
            # a resumed run's policy has trained: keep the starting weights to finish the cache with
            self._frozen = self._frozen_copy()
        return lines

    def _frozen_copy(self):
        run = self.run
        return frozen_starting_model(run, run.label_logprobs.linear_ce, self.model_options(run.config),
                                     key="train.reference.source")

    def _numerics(self) -> dict:
        """The settings besides weights and data that change the reference log-probs."""
        cfg, tc = self.run.config, self.run.train
        return {"kind": type(self).__name__, "source": self.source, "dtype": cfg.model.dtype,
                "mixed_precision": tc.mixed_precision, "attn_implementation": cfg.model.attn_implementation,
                "route": self.run.label_logprobs.route, "padding_free": tc.padding_free}

    def _reference_name(self) -> str:
        return {"adapters_off": "the policy with its adapters disabled",
                "copy": "a frozen copy of the starting model"}[self.source]

    def make_batches(self, model, examples: list[list[dict]], step: int) -> list[dict[str, torch.Tensor]]:
        if not self.started:
            self._start_reference(model, step)
        return [self.collate(rows) for rows in examples]

    def _start_reference(self, model, step: int) -> None:
        """The live reference, or the cached tables (computing what the cache lacks: the policy has not been
        updated yet, so at step 0 it is the reference)."""
        self.started = True
        if not self.needs_reference:
            return
        run = self.run
        if self.source == "adapters_off":
            reference = AdaptersOff(run.label_logprobs, run.accelerator)
        elif self._frozen is not None:
            reference = Frozen("a frozen copy of the starting model", *self._frozen.ready())
        else:
            reference = Frozen("the policy before its first update", model, run.label_logprobs)
        if not run.train.reference.precompute:
            self.reference = reference
            return
        missing = [name for name, entry in self.cache.items() if entry.on_disk() < len(entry.chunks())]
        if missing and isinstance(reference, Frozen) and reference.frozen is model and step > 0:
            raise OAError(f"train.reference.precompute: the reference log-probs cache of the {missing[0]} split is "
                          f"incomplete and this resumed run's policy has trained ({self.cache[missing[0]].folder})",
                          hint="restore the cache folder, or start the run again in a new output_dir")
        tc = run.train
        batch_size = tc.reference.batch_size or tc.per_device_eval_batch_size or tc.per_device_batch_size
        for name, entry in self.cache.items():
            rows = self.examples[name]
            self.tables[name] = entry.fill(
                lambda indices, rows=rows: self.reference_rows(reference, model, [rows[i] for i in indices]),
                run.accelerator, batch_size=batch_size, about={"reference": reference.name, **self._numerics()},
                desc=f"reference log-probs ({name})")
        self._frozen = None

    @torch.no_grad()
    def reference_rows(self, reference, model, rows: list[dict]) -> torch.Tensor:
        """``(len(rows), width)`` reference log-probs of ``rows``."""
        raise NotImplementedError

    def cached_reference(self, rows: list[dict]) -> torch.Tensor | None:
        if not self.tables:
            return None
        return torch.stack([self.tables[ex["split"]][ex["index"]] for ex in rows])

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, model, examples: Sequence[dict]) -> Evaluation:
        """The mean loss per unit and the mean of every metric of :meth:`loss` over ``examples`` (``eval_``
        prefixed). Every process runs the same number of forwards; wrap-around fillers count nothing."""
        acc = self.run.accelerator
        was_training = model.training
        model.eval()
        batch_size = self.run.train.per_device_eval_batch_size or self.run.train.per_device_batch_size
        names, totals = None, None
        for slots in micro_batches(len(examples), batch_size=batch_size, num_processes=acc.num_processes,
                                   rank=acc.process_index, shuffle=False):
            counted = [examples[s.index] for s in slots if s.counted]
            batch = {k: v.to(acc.device) for k, v in self.make_batches(model, [counted or [examples[slots[0].index]]],
                                                                      0)[0].items()}
            with acc.autocast():
                out = self.loss(model, batch)
            names = names or list(out.metrics)
            values = torch.stack([out.loss.double(), torch.tensor(float(self.num_units(batch)), dtype=torch.float64,
                                                                 device=acc.device),
                                  *(torch.as_tensor(out.metrics[n][j], dtype=torch.float64, device=acc.device)
                                    for n in names for j in (0, 1))])
            totals = (0 if totals is None else totals) + values * bool(counted)
        totals = acc.reduce(totals, reduction="sum").tolist()
        model.train(was_training)
        metrics = {"eval_loss": totals[0] / max(totals[1], 1)}
        metrics |= {f"eval_{n}": totals[2 + 2 * i] / max(totals[3 + 2 * i], 1) for i, n in enumerate(names)}
        return Evaluation(metrics)


def _data_cache_dir(cfg) -> str:
    from oa_data.settings import DataSettings

    return cfg.section("data", DataSettings).cache_dir


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _has_checkpoints(output_dir) -> bool:
    return any((output_dir / "checkpoints").glob("checkpoint-*"))
