"""What a training method brings to the shared :class:`~oa_train.training.loop.Loop`: an :class:`Objective`.

A method is a config (a :class:`~oa_train.training.config.LoopConfig` subclass, its ``train:`` section) plus an
objective, registered as ``Method(config=..., objective=...)`` through ``register_methods``. The loop owns
everything else: accelerate, the schedule, gradient accumulation and loss normalisation, the NaN policy,
logging, evaluation scheduling, checkpoints, exact resume and the final save. An objective says:

- :meth:`Objective.prepare_data`: its training and evaluation examples (dicts; collated by ``make_batches``);
- :meth:`Objective.loss`: the loss of one micro-batch, **summed** over its units, with metric tallies;
- :meth:`Objective.num_units`: how many units (supervised tokens, pairs, sequences) that sum runs over. An
  optimizer step is normalised by the units of all its micro-batches on all processes, so gradient
  accumulation and the number of processes never change the update;
- :meth:`Objective.evaluate`: metrics on the evaluation examples.

Optional: :meth:`Objective.make_batches` turns the examples the schedule picked for a step into micro-batches
(the place for on-policy generation: rollouts, rewards, advantages), :meth:`Objective.epoch_data` gives a
new draw of the training examples for an epoch, :meth:`Objective.data_plan` says how many examples a step draws
(e.g. prompts, when the micro-batches are made of their completions), :meth:`Objective.step_metrics` adds values
of the step to its logged record, and :meth:`Objective.state_dict` / :meth:`Objective.load_state_dict` carry the
objective's own state (e.g. a rollout buffer) through checkpoints, so that resume stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oa_train.training.batching import collate, micro_batches


@dataclass
class Run:
    """What the loop has set up for a run; the objective gets it in :meth:`Objective.setup`."""

    config: Any  # the validated RunConfig (sections: model, datasets, data, peft, ...)
    train: Any  # its ``train:`` section: the method's LoopConfig subclass
    accelerator: Any  # accelerate.Accelerator
    tokenizer: Any  # oa_data.tokenizer.RunTokenizer: the tokenizer and the chat template
    model: Any  # the model as built (patches, PEFT); ``loss`` gets it as accelerate wrapped it
    model_manifest: dict  # what was done to the model (run_manifest.json "model")
    output_dir: Path
    label_logprobs: Any  # oa_train.training.logprobs.LabelLogProbs of this model
    pad_id: int

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


@dataclass(frozen=True)
class DataPlan:
    """How the loop draws training examples for each process: ``micro_batches`` lists of ``batch_size`` examples
    per draw (``make_batches`` gets them), one draw for ``steps_per_draw`` consecutive optimizer steps (the
    objective reuses what it made of them, e.g. rollouts updated on several times). An epoch is every example
    drawn once, so it has ``ceil(examples / (batch_size × micro_batches × processes)) × steps_per_draw`` steps."""

    batch_size: int
    micro_batches: int = 1
    steps_per_draw: int = 1


@dataclass
class StepLoss:
    """The loss of one micro-batch: ``loss`` summed over its units (a 0-d tensor with gradients) and metric
    tallies ``name -> (sum, count)``. The loop logs ``sum / count`` over every micro-batch and process since the
    last log (``loss`` as loss sum / units). Use the same metric names for every micro-batch."""

    loss: torch.Tensor
    metrics: dict[str, tuple[torch.Tensor | float, torch.Tensor | float]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Metrics on the evaluation examples (names start with ``eval_``) and optional generated samples
    (dicts with ``prompt``, ``prediction``, ``reference``), written to ``generations.jsonl``."""

    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)


class Objective:
    """Base class of objectives (see the module docstring). Subclasses implement :meth:`prepare_data` and
    :meth:`loss`; the defaults collate padded micro-batches, count one unit per example and evaluate the mean
    loss per unit."""

    unit: str = "examples"  # what the loss is normalised by; logged under this name per step
    data_report: dict = {}  # set by prepare_data to describe the data (written to the run manifest's "data")

    def check(self, config) -> None:
        """Raise an ``OAError`` if this objective cannot train ``config`` (the validated run config); called
        before anything is loaded. Rules a config file can break belong in a ``check_config`` hook instead."""

    def model_options(self, config) -> dict:
        """Keyword arguments for :func:`oa_train.model.prepare_model` (e.g. ``num_labels`` of a classifier)."""
        return {}

    def setup(self, run: Run) -> None:
        """Called once the model, tokenizer and accelerator are ready, before :meth:`prepare_data`."""
        self.run = run

    def prepare_data(self) -> tuple[Sequence[dict], Sequence[dict]]:
        """``(train, eval)`` examples. Runs on the main process first (a cache it fills is read by the rest)."""
        raise NotImplementedError

    def epoch_data(self, epoch: int) -> Sequence[dict] | None:
        """The training examples of ``epoch`` (> 0) when they differ from the first epoch's, else None."""
        return None

    def data_plan(self, train) -> DataPlan:
        """What a step draws from the training data (``train``: the method's config): by default
        ``per_device_batch_size`` examples for each of ``gradient_accumulation_steps`` micro-batches."""
        return DataPlan(train.per_device_batch_size, train.gradient_accumulation_steps)

    def make_batches(self, model, examples: list[list[dict]], step: int) -> list[dict[str, torch.Tensor]]:
        """The micro-batches of optimizer step ``step`` from the examples the schedule picked (one list per
        micro-batch of the :meth:`data_plan`). The loop runs every micro-batch returned, whatever their number,
        and normalises the step by their units."""
        return [collate(rows, self.run.pad_id) for rows in examples]

    def step_metrics(self) -> dict[str, float]:
        """Values of the step just taken to log beside the loss (already reduced over the processes; the loop
        averages them over the steps of a logging window). Called on every process after every step."""
        return {}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """This process's state that a checkpoint must keep, as tensors and JSON-ready values (no pickles), or
        None for none. Written as ``objective_<rank>.safetensors`` and ``.json``."""
        return None

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore what :meth:`state_dict` gave (resume)."""

    def num_units(self, batch: dict[str, torch.Tensor]) -> int:
        """The number of units the loss of ``batch`` is summed over (this process only)."""
        return len(batch["input_ids"])

    def loss(self, model, batch: dict[str, torch.Tensor]) -> StepLoss:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model, examples: Sequence[dict]) -> Evaluation:
        """``eval_loss`` per unit over ``examples``. Every process runs the same number of forwards (sharded
        models need that); the wrap-around fillers of the last micro-batch count nothing."""
        accelerator = self.run.accelerator
        was_training = model.training
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        batch_size = self.run.train.per_device_eval_batch_size or self.run.train.per_device_batch_size
        for slots in micro_batches(len(examples), batch_size=batch_size, num_processes=accelerator.num_processes,
                                   rank=accelerator.process_index, shuffle=False):
            counted = [examples[s.index] for s in slots if s.counted]
            rows = counted or [examples[slots[0].index]]
            batch = {k: v.to(accelerator.device) for k, v in self.make_batches(model, [rows], 0)[0].items()}
            out = self.loss(model, batch)
            if counted:
                totals += torch.stack([out.loss.detach().double(), torch.tensor(float(self.num_units(batch)),
                                                                               dtype=torch.float64, device=totals.device)])
        loss_sum, units = accelerator.reduce(totals, reduction="sum").tolist()
        model.train(was_training)
        return Evaluation({"eval_loss": loss_sum / max(units, 1)})
