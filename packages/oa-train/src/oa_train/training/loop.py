"""One training loop for every method.

``Loop(loaded_config, objective).run()`` reads top to bottom: set up (output folder, accelerator, tokenizer,
model, data, schedule, optimizer, resume) → train (per optimizer step: the objective's micro-batches, loss
normalised by the step's units on all processes, clipping, NaN policy, update; then log, evaluate,
checkpoint) → finish (final model, plot, manifest). The method-specific parts come from the
:class:`~oa_train.training.objective.Objective`; everything here is the same for SFT, pretraining and any
registered method.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

from oa_core.config import LoadedConfig, write_effective_config
from oa_core.environment import environment_info
from oa_core.errors import OAError
from oa_train.training.batching import micro_batches
from oa_train.training.checkpoint import Checkpoints, read_state
from oa_train.training.config import LoopConfig
from oa_train.training.console import LibraryLog, format_record, summary
from oa_train.training.logprobs import LabelLogProbs
from oa_train.training.objective import DataPlan, Objective, Run
from oa_train.training.optim import build_optimizer, build_scheduler
from oa_train.training.output_dir import RunLock, check_output_dir, lock_held_by_launcher, mark_run_folder
from oa_train.training.runtime import (
    config_source,
    fill_deepspeed_values,
    flat,
    process_group_kwargs,
    ranks_in_sync,
    save_final,
    write_manifest,
)
from oa_train.training.state import (
    SHARDED,
    load_objective_state,
    load_training_state,
    save_objective_state,
    save_training_state,
)
from oa_train.training.tracking import RunLog, trackers

Callback = Callable[[int, dict], None]  # (step, logged record) after every optimizer step and its checkpoint


@dataclass(frozen=True)
class Schedule:
    """Step ``s`` of epoch ``e`` takes draw ``d = s // steps_per_draw``: micro-batches ``[d*k, (d+1)*k)`` of that
    epoch's data order (``k`` = the plan's micro-batches per draw); every epoch has the first epoch's number of
    steps."""

    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_steps: int | None
    data: DataPlan

    @classmethod
    def plan(cls, num_examples: int, tc: LoopConfig, num_processes: int, data: DataPlan | None = None) -> Schedule:
        data = data or DataPlan(tc.per_device_batch_size, tc.gradient_accumulation_steps)
        micro = math.ceil(num_examples / (data.batch_size * num_processes))
        per_epoch = math.ceil(micro / data.micro_batches) * data.steps_per_draw
        total = tc.max_steps or per_epoch * tc.num_epochs
        warmup = tc.warmup_steps or math.ceil(tc.warmup_ratio * total)
        return cls(micro, per_epoch, total, warmup, tc.eval_steps or tc.save_steps, data)


@dataclass
class LoopState:
    """What a checkpoint's ``trainer_state.json`` holds besides accelerate's state."""

    step: int = 0
    history: list[dict] = field(default_factory=list)  # every logged record
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation
    skipped_steps: int = 0
    total_steps: int = 0


class Loop:
    """Trains ``loaded.config`` with ``objective``; :meth:`run` returns the final record
    (``step``, ``skipped_steps`` and the last evaluation's metrics)."""

    def __init__(self, loaded: LoadedConfig, objective: Objective, *, callbacks: Sequence[Callback] = ()):
        self.loaded, self.cfg, self.tc = loaded, loaded.config, loaded.config.train
        self.objective, self.callbacks = objective, list(callbacks)
        self.out = Path(self.cfg.output_dir)

    def run(self) -> dict:
        check_output_dir(self.cfg)  # before anything is created there
        try:
            with self._lock(), LibraryLog() as self.library_log:
                self.setup()
                try:
                    self.train()
                    return self.finish()
                except BaseException as e:  # the manifest records a crash or an interrupt
                    self._record_failure(e)
                    raise
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise OAError(f"no space left on device while writing {e.filename or 'the output'}",
                          hint="free space (or choose another output_dir); continue with --resume auto") from None

    def _record_failure(self, e: BaseException) -> None:
        """Best effort: the error may be that the disk is full."""
        if self.main:
            self.manifest.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                                 steps=self.state.step, error=str(e) or type(e).__name__)
            with suppress(OSError):
                write_manifest(self.out, self.manifest)

    def _lock(self):
        """The output folder's lock, on the first process (unless the launching `oa train` holds it)."""
        first = int(os.environ.get("RANK", "0")) == 0
        return RunLock(self.out) if first and not lock_held_by_launcher() else nullcontext()

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Everything that can refuse the run comes before anything is written into the output folder."""
        resume = self._resolve_resume()
        self._start_accelerator()
        self._build_model()
        self._prepare_data()
        self.schedule = Schedule.plan(len(self.train_data), self.tc, self.accelerator.num_processes,
                                      self.objective.data_plan(self.tc))
        self._build_optimizer()
        self.state = self._resume(resume)
        self.log = RunLog(self.out, self.state.history)
        self.manifest = self._manifest(resume)
        if self.main:
            mark_run_folder(self.out)
            self.library_log.to_file(self.out / "logs" / "libraries.log")
            write_effective_config(self.loaded, self.out)
            write_manifest(self.out, self.manifest)

    def _resolve_resume(self) -> Path | None:
        """The checkpoint to resume from (verified); first, so a wrong path fails before any work."""
        if self.cfg.model is None:
            raise OAError("model: no model configured", hint="set model.path to a local folder or hub id")
        self.checkpoints = Checkpoints(self.out, limit=self.tc.save_total_limit, metric=self.tc.metric_for_best,
                                       greater_is_better=self.tc.higher_is_better)
        resume = self.checkpoints.resolve(self.tc.resume_from)
        if resume is None and self.checkpoints.list():
            raise OAError(
                f"output_dir: {self.out} already has checkpoints of another run",
                hint="continue it with --resume auto (train.resume_from: auto), or choose another output_dir",
            )
        self.objective.check(self.cfg)
        return resume

    def _start_accelerator(self) -> None:
        AcceleratorState._reset_state()  # fresh settings for every run in a process (tests, notebooks)
        GradientState._reset_state()
        self.accelerator = Accelerator(
            gradient_accumulation_steps=self.tc.gradient_accumulation_steps,
            mixed_precision=self.tc.mixed_precision,
            log_with=trackers(self.tc.report_to),
            project_dir=str(self.out),
            kwargs_handlers=process_group_kwargs(),
        )
        self.main = self.accelerator.is_main_process
        set_seed(self.cfg.seed)

    def _build_model(self) -> None:
        """The one tokenizer step, then the model built for it (patches, PEFT or freezing), then the objective."""
        from oa_core.plugins import get_registry
        from oa_data.tokenizer import prepare_run_tokenizer
        from oa_train.model import prepare_model

        run_tokenizer = prepare_run_tokenizer(self.cfg)
        prepared = prepare_model(self.cfg, run_tokenizer, get_registry(), show_table=self.main,
                                 **self.objective.model_options(self.cfg))
        self.model, self.model_manifest = prepared.model, prepared.manifest
        if self.tc.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        label_logprobs = LabelLogProbs.for_model(self.model, prepared.provides.get("linear_ce"))
        self.model_manifest["label_logprobs"] = label_logprobs.route
        tokenizer = run_tokenizer.tokenizer
        pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        self.tokenizer = tokenizer
        self.objective.setup(Run(self.cfg, self.tc, self.accelerator, run_tokenizer, self.model, self.model_manifest,
                                 self.out, label_logprobs, pad_id))

    def _prepare_data(self) -> None:
        with self.accelerator.main_process_first():  # rank 0 fills the tokenized cache the others read
            train, evaluation = self.objective.prepare_data()
        if len(train) == 0:
            raise OAError("datasets: the training split is empty", hint="check the dataset paths, split and filters")
        self.train_data, self.eval_data = train, evaluation if evaluation is not None else []
        self._epoch: tuple[int, Sequence[dict], list] | None = None  # (epoch, its data, its micro-batches)

    def _build_optimizer(self) -> None:
        tc = self.tc
        fill_deepspeed_values(self.accelerator, tc)
        if self.accelerator.distributed_type not in SHARDED and not getattr(self.model, "hf_device_map", None):
            self.model.to(self.accelerator.device)  # on its device first: AdamW's fused kernel needs it
        optimizer = build_optimizer(self.model, tc.optimizer, tc.learning_rate, tc.weight_decay, tc.adam_betas,
                                    tc.adam_epsilon)
        self.scheduler = build_scheduler(optimizer, tc.lr_scheduler, self.schedule.warmup_steps,
                                         self.schedule.total_steps)  # stepped once per optimizer step
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        if tc.report_to != ["none"]:
            self.accelerator.init_trackers(tc.project, config=flat(self.loaded.effective()))

    def _resume(self, resume: Path | None) -> LoopState:
        if resume is None:
            return LoopState(total_steps=self.schedule.total_steps)
        state = LoopState(**read_state(resume))
        if state.total_steps != self.schedule.total_steps:
            raise OAError(
                f"train.resume_from: {resume} was made for {state.total_steps} steps, this config gives "
                f"{self.schedule.total_steps}",
                hint="resume with the same data, batch sizes, epochs and number of processes",
            )
        load_training_state(self.accelerator, self.model, self.optimizer, self.scheduler, resume)
        load_objective_state(self.accelerator, self.objective, resume)
        return state

    def _manifest(self, resume: Path | None) -> dict:
        acc, tc, s = self.accelerator, self.tc, self.schedule
        plan = {"steps_per_draw": s.data.steps_per_draw} if s.data.steps_per_draw != 1 else {}
        return {
            "method": self.cfg.method, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed_from": str(resume) if resume else None, "num_processes": acc.num_processes,
            "distributed_type": acc.distributed_type.value, "device": str(acc.device),
            "mixed_precision": tc.mixed_precision, "environment": environment_info(gpu=False),
            "config_source": config_source(self.loaded.path), "model": self.model_manifest,
            "data": {"train_rows": len(self.train_data), "eval_rows": len(self.eval_data), **self.objective.data_report},
            "schedule": {"total_steps": s.total_steps, "steps_per_epoch": s.steps_per_epoch,
                         "warmup_steps": s.warmup_steps,
                         "examples_per_step": s.data.batch_size * s.data.micro_batches * acc.num_processes, **plan},
        }

    # ------------------------------------------------------------------ train

    def train(self) -> None:
        self.bar = tqdm(total=self.schedule.total_steps, initial=self.state.step, desc=self.cfg.method,
                        disable=not self.main, dynamic_ncols=True)
        self.window: dict[str, list[float]] = {}  # metric -> [sum, count] since the last log
        self.skipped_in_a_row, self.tokens_seen, self.started = 0, 0, time.perf_counter()
        self.model.train()
        try:
            for step in range(self.state.step, self.schedule.total_steps):
                batches = self.objective.make_batches(self.model, self._step_examples(step), step)
                result = self._step(batches)
                self.state.step = step + 1
                self.bar.update(1)
                record = self._log_and_evaluate(result)
                if self.tc.save_steps and self.state.step % self.tc.save_steps == 0:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self.state.step, record)
        finally:
            self.bar.close()  # also on an error, so that the error starts a line of its own

    def _step_examples(self, step: int) -> list[list[dict]]:
        """The examples of each micro-batch of ``step`` on this process (a resampled epoch with fewer rows
        wraps around)."""
        epoch, offset = divmod(step, self.schedule.steps_per_epoch)
        draw = offset // self.schedule.data.steps_per_draw
        if self._epoch is None or self._epoch[0] != epoch:
            data = self.train_data
            if epoch > 0:
                with self.accelerator.main_process_first():
                    data = self.objective.epoch_data(epoch) or self.train_data
            order = micro_batches(len(data), batch_size=self.schedule.data.batch_size,
                                  num_processes=self.accelerator.num_processes,
                                  rank=self.accelerator.process_index, epoch=epoch, seed=self.cfg.seed)
            self._epoch = (epoch, data, order)
        _, data, order = self._epoch
        k = self.schedule.data.micro_batches
        chosen = range(draw * k, min((draw + 1) * k, self.schedule.micro_per_epoch))
        return [[data[slot.index] for slot in order[j % len(order)]] for j in chosen]

    def _step(self, batches: list[dict[str, torch.Tensor]]) -> dict:
        """Forward and backward of every micro-batch, clipping, the NaN policy and the update. Each micro-batch
        loss is scaled by 1/(the step's units on all processes); gradients sync on the last one."""
        acc, model = self.accelerator, self.model
        counts = [sum(self.objective.num_units(b) for b in batches), sum(_tokens(b) for b in batches)]
        if acc.num_processes > 1:  # one process needs no round trip through the device (a synchronisation)
            counts = acc.reduce(torch.tensor(counts, device=acc.device), reduction="sum").tolist()
        units, tokens = counts
        self.tokens_seen += tokens
        scale = acc.gradient_accumulation_steps * acc.num_processes / max(units, 1)  # undoes accelerate's 1/k, DDP's mean
        names, tallies = None, 0  # tallies: [loss sum, then (sum, count) of each metric], float64 on the device
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            acc.gradient_state._set_sync_gradients(last)
            with nullcontext() if last else acc.no_sync(model):
                with acc.autocast():
                    out = self.objective.loss(model, {k: v.to(acc.device) for k, v in batch.items()})
                acc.backward(out.loss * scale)
            names = names or list(out.metrics)
            tallies = tallies + torch.stack([out.loss.detach().double(), *(_as_tensor(out.metrics[n][j], acc.device)
                                                                           for n in names for j in (0, 1))])
        grad_norm = acc.clip_grad_norm_(model.parameters(), self.tc.max_grad_norm or float("inf"))
        grad_norm = _as_tensor(float("nan") if grad_norm is None else grad_norm, acc.device).reshape(1)
        *totals, grad_norm = torch.cat([acc.reduce(tallies, reduction="sum"), grad_norm]).tolist()  # one sync for both
        loss_sum, sums = totals[0], {n: totals[1 + 2 * i: 3 + 2 * i] for i, n in enumerate(names)}
        lr = self.scheduler.get_last_lr()[0]
        finite = math.isfinite(loss_sum) and (math.isfinite(grad_norm) or acc.distributed_type == DistributedType.DEEPSPEED)
        if finite:
            self.optimizer.step()
            self.skipped_in_a_row = 0
        else:  # the NaN policy: stop, or skip this update (the data of the step counts as consumed)
            self._skip()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        extra = {name: [float(value), 1.0] for name, value in self.objective.step_metrics().items()}
        return {"finite": finite, "loss": [loss_sum, units], **extra, **sums, "grad_norm": grad_norm, "lr": lr,
                "units": units}

    def _skip(self) -> None:
        self.state.skipped_steps += 1
        self.skipped_in_a_row += 1
        if self.tc.nan_policy == "stop" or self.skipped_in_a_row > self.tc.max_skipped_steps:
            why = "nan_policy: stop" if self.tc.nan_policy == "stop" else f"{self.skipped_in_a_row} skipped steps in a row"
            raise OAError(
                f"train.nan_policy: non-finite loss or gradient at step {self.state.step + 1} ({why})",
                hint="lower train.learning_rate, set train.max_grad_norm, check the data, or use nan_policy: skip",
            )

    def _log_and_evaluate(self, result: dict) -> dict:
        """The record of this step: the window's means every ``logging_steps``, eval metrics when due."""
        step, done = self.state.step, self.state.step == self.schedule.total_steps
        tallied = [k for k, v in result.items() if isinstance(v, list)]
        if result["finite"]:
            for name in tallied:
                total = self.window.setdefault(name, [0.0, 0.0])
                total[0] += result[name][0]
                total[1] += result[name][1]
        record = {"step": step}
        if step % self.tc.logging_steps == 0 or done:
            record["epoch"] = round(step / self.schedule.steps_per_epoch, 4)
            record |= {name: s / max(c, 1) for name, (s, c) in ((n, self.window.get(n, [0.0, 0.0])) for n in tallied)}
            record |= {"grad_norm": result["grad_norm"], "lr": result["lr"], self.objective.unit: result["units"],
                       "skipped_steps": self.state.skipped_steps}
            self.window.clear()
        if len(self.eval_data) and ((self.schedule.eval_steps and step % self.schedule.eval_steps == 0) or done):
            evaluation = self.objective.evaluate(self.model, self.eval_data)
            self.state.metrics = evaluation.metrics
            record |= evaluation.metrics
            if self.main and evaluation.samples:
                self.log.add_generations(step, evaluation.samples)
        if len(record) > 1:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            if self.main:
                self.log.add(record)
                if "loss" in record:
                    self.bar.set_postfix(loss=f"{record['loss']:.4f}")
                tqdm.write(format_record(record, self.schedule.total_steps))
        return record

    def save_checkpoint(self) -> Path:
        self.state.history = self.log.history

        def write_state(folder: Path) -> None:
            save_training_state(self.accelerator, self.model, self.optimizer, self.scheduler, folder, self.tokenizer)
            save_objective_state(self.accelerator, self.objective, folder)

        return self.checkpoints.save(self.accelerator, self.state.step, asdict(self.state), write_state)

    # ------------------------------------------------------------------ finish

    def finish(self) -> dict:
        """The final model (``output_dir/model``), the loss plot and the finished manifest."""
        acc = self.accelerator
        save_final(acc, self.model, self.tokenizer, self.out)
        best, in_sync = self.checkpoints.best(), ranks_in_sync(acc, self.model)
        if self.main:
            if in_sync is False:
                tqdm.write("warning: the ranks ended with different weights (see run_manifest.json: ranks_in_sync)")
            self.log.plot(unit=self.objective.unit)
            seconds = time.perf_counter() - self.started
            self.manifest.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 final=self.state.metrics, steps=self.state.step, skipped_steps=self.state.skipped_steps,
                                 best_checkpoint=str(best) if best else None, ranks_in_sync=in_sync,
                                 train_seconds=round(seconds, 3), tokens_seen=self.tokens_seen)
            write_manifest(self.out, self.manifest)
            print("\n".join(summary(out=self.out, steps=self.state.step, seconds=seconds, tokens=self.tokens_seen,
                                     metrics=self.state.metrics, best=best, metric=self.tc.metric_for_best,
                                     library_log=self.library_log)))
        acc.end_training()  # finishes the trackers and destroys the process group
        return {"step": self.state.step, "skipped_steps": self.state.skipped_steps, **self.state.metrics}


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    """The tokens of a micro-batch that are not padding."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None and mask.dim() == 2 else batch["input_ids"].numel()


def _as_tensor(value, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        value = value.full_tensor() if hasattr(value, "full_tensor") else value  # FSDP2's gradient norm: a DTensor
        return value.detach().to(device=device, dtype=torch.float64).reshape(())
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def train(loaded: LoadedConfig, *, callbacks: Sequence[Callback] = ()) -> dict:
    """Train with the method ``loaded.config.method`` names (its registered objective on the loop)."""
    from oa_core.plugins import get_registry

    method = get_registry().get("method", loaded.config.method)
    return Loop(loaded, method.objective(), callbacks=callbacks).run()
