"""The SFT recipe, top to bottom: accelerator → model → data → optimizer/schedule → resume → loop
(accumulate, normalise by supervised tokens, clip, NaN policy, step) → log/eval/checkpoint → final model.

Continued pretraining is the same recipe on ``{"text"}`` data (every token supervised).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

from oa_core.config import LoadedConfig, write_effective_config
from oa_core.errors import OAError
from oa_core.io import atomic_write_text
from oa_train.model.tokens import resize_embeddings
from oa_train.sft.config import SFTConfig
from oa_train.sft.data import check_examples, default_prepare_data
from oa_train.sft.eval import evaluate, generation_metrics
from oa_train.training.batching import collate, micro_batches, num_targets
from oa_train.training.checkpoint import Checkpoints, read_state
from oa_train.training.loss import global_count, loss_sum
from oa_train.training.optim import build_optimizer, build_scheduler
from oa_train.training.tracking import RunLog, format_record, trackers


def run_sft(loaded: LoadedConfig, *, prepare_data=None, callbacks=()) -> dict:
    """Train, evaluate and checkpoint as ``loaded.config`` says; returns the final record.

    ``prepare_data(cfg, tokenizer) -> (train_examples, eval_examples)`` (default: the oa-data pipeline);
    each ``callback(step, record)`` runs after every optimizer step (and its checkpoint).
    """
    cfg = loaded.config
    tc: SFTConfig = cfg.train
    out = Path(cfg.output_dir)
    if cfg.model is None:
        raise OAError("model: no model configured", hint="set model.path to a local folder or hub id")
    ckpts = Checkpoints(out, limit=tc.save_total_limit, metric=tc.metric_for_best, greater_is_better=tc.higher_is_better)
    resume = ckpts.resolve(tc.resume_from)
    if resume is None and ckpts.list():
        raise OAError(
            f"output_dir: {out} already has checkpoints of another run",
            hint="continue it with --resume auto (train.resume_from: auto), or choose another output_dir",
        )
    if prepare_data is None and not cfg.datasets:
        raise OAError("datasets: no training datasets configured", hint="add at least one entry under datasets:")

    # 1. accelerator (fresh settings for every run in a process: tests, notebooks), seed, effective config
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        mixed_precision=tc.mixed_precision,
        log_with=trackers(tc.report_to),
        project_dir=str(out),
        kwargs_handlers=_process_group_kwargs(),
    )
    main = accelerator.is_main_process
    set_seed(cfg.seed)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_effective_config(loaded, out)

    # 2. model and tokenizer
    model, tokenizer, model_manifest = _prepare_model(cfg, main)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)

    # 3. data (rank 0 first: it fills the tokenized cache the others read); the pipeline may add tokens
    with accelerator.main_process_first():
        train_data, eval_data = (prepare_data or default_prepare_data)(cfg, tokenizer)
    resample = prepare_data is None and getattr(getattr(cfg, "data", None), "per_epoch_resample", False)

    def epoch_data(epoch: int):
        """The rows of ``epoch``: with data.per_epoch_resample a new deterministic draw of the mix (cached)."""
        if not resample or epoch == 0:
            return train_data
        with accelerator.main_process_first():
            return default_prepare_data(cfg, tokenizer, epoch=epoch)[0]
    if resize_embeddings(model, len(tokenizer)):
        model_manifest["resized_embeddings_to"] = len(tokenizer)
    eval_data = eval_data if eval_data is not None else []
    if len(train_data) == 0:
        raise OAError("datasets: the training split is empty", hint="check the dataset paths, split and filters")
    check_examples(train_data, "train")
    check_examples(eval_data, "eval")

    # 4. schedule: step s of epoch e takes micro-batches [s*k, (s+1)*k) of that epoch's order
    world, k = accelerator.num_processes, tc.gradient_accumulation_steps
    micro_per_epoch = math.ceil(len(train_data) / (tc.per_device_batch_size * world))
    steps_per_epoch = math.ceil(micro_per_epoch / k)
    total_steps = tc.max_steps or steps_per_epoch * tc.num_epochs
    warmup = tc.warmup_steps or math.ceil(tc.warmup_ratio * total_steps)
    eval_steps = tc.eval_steps or tc.save_steps
    if tc.generation.num_samples and not len(eval_data):
        raise OAError("train.generation.num_samples: needs eval data", hint="add eval_datasets, or set it to 0")

    # 5. optimizer, schedule, distributed wrapping (the schedule is stepped once per optimizer step)
    _fill_deepspeed_auto(accelerator, tc)
    optimizer = build_optimizer(model, tc.optimizer, tc.learning_rate, tc.weight_decay, tc.adam_betas, tc.adam_epsilon)
    scheduler = build_scheduler(optimizer, tc.lr_scheduler, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if tc.report_to != ["none"]:
        accelerator.init_trackers(tc.project, config=_flat(loaded.effective()))

    # 6. resume (the checkpoint was resolved first thing, so a wrong path fails fast)
    state = {"step": 0, "history": [], "metrics": {}, "skipped_steps": 0}
    if resume is not None:
        state = read_state(resume)
        if state["total_steps"] != total_steps:
            raise OAError(
                f"train.resume_from: {resume} was made for {state['total_steps']} steps, this config gives {total_steps}",
                hint="resume with the same data, batch sizes, epochs and number of processes",
            )
        accelerator.load_state(str(resume))
    log = RunLog(out, state["history"])
    manifest = {
        "method": cfg.method, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed_from": str(resume) if resume else None, "num_processes": world,
        "distributed_type": accelerator.distributed_type.value, "device": str(accelerator.device),
        "mixed_precision": tc.mixed_precision, "versions": _versions(), "model": model_manifest,
        "data": {"train_examples": len(train_data), "eval_examples": len(eval_data)},
        "schedule": {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup,
                     "examples_per_step": tc.per_device_batch_size * k * world},
    }
    if main:
        _write_manifest(out, manifest)

    # 7. the loop (the manifest records a crash or an interrupt)
    try:
        bar = tqdm(total=total_steps, initial=state["step"], desc=cfg.method, disable=not main, dynamic_ncols=True)
        epoch_cache: dict[int, tuple] = {}
        window = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, targets since the last log
        skipped_in_a_row = 0
        model.train()
        for step in range(state["step"], total_steps):
            epoch, offset = divmod(step, steps_per_epoch)
            if epoch not in epoch_cache:
                data = epoch_data(epoch)
                epoch_cache = {epoch: (data, micro_batches(
                    len(data), batch_size=tc.per_device_batch_size, num_processes=world,
                    rank=accelerator.process_index, epoch=epoch, seed=cfg.seed,
                ))}
            data, mbs = epoch_cache[epoch]
            # every epoch has epoch 0's number of steps; a resampled epoch with fewer rows wraps around
            chosen = [mbs[j % len(mbs)] for j in range(offset * k, min((offset + 1) * k, micro_per_epoch))]
            batches = [collate([data[s.index] for s in mb], pad_id) for mb in chosen]
            n_targets = global_count(accelerator, sum(num_targets(b) for b in batches))

            step_loss_sum, step_correct = _forward_backward(accelerator, model, batches, n_targets)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm or float("inf"))
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            lr = scheduler.get_last_lr()[0]

            # NaN/inf policy: stop, or skip this update (the data of the step counts as consumed)
            finite = math.isfinite(step_loss_sum) and (math.isfinite(grad_norm) or accelerator.distributed_type == DistributedType.DEEPSPEED)
            if finite:
                optimizer.step()
                skipped_in_a_row = 0
            else:
                state["skipped_steps"] += 1
                skipped_in_a_row += 1
                if tc.nan_policy == "stop" or skipped_in_a_row > tc.max_skipped_steps:
                    why = "nan_policy: stop" if tc.nan_policy == "stop" else f"{skipped_in_a_row} skipped steps in a row"
                    raise OAError(
                        f"train.nan_policy: non-finite loss or gradient at step {step + 1} ({why})",
                        hint="lower train.learning_rate, set train.max_grad_norm, check the data, or use nan_policy: skip",
                    )
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step + 1
            bar.update(1)

            # log, evaluate, checkpoint
            done = state["step"] == total_steps
            if finite:
                window += torch.tensor([step_loss_sum, step_correct, n_targets], dtype=torch.float64)
            record = {"step": state["step"]}
            if state["step"] % tc.logging_steps == 0 or done:
                record |= {
                    "epoch": round(state["step"] / steps_per_epoch, 4),
                    "loss": window[0].item() / max(window[2].item(), 1), "accuracy": window[1].item() / max(window[2].item(), 1),
                    "grad_norm": grad_norm, "lr": lr, "tokens": n_targets, "skipped_steps": state["skipped_steps"],
                }
                window.zero_()
            if len(eval_data) and ((eval_steps and state["step"] % eval_steps == 0) or done):
                metrics = evaluate(accelerator, model, eval_data, pad_id=pad_id,
                                   batch_size=tc.per_device_eval_batch_size or tc.per_device_batch_size)
                if tc.generation.num_samples:
                    scores, samples = generation_metrics(accelerator, model, tokenizer, eval_data,
                                                         num_samples=tc.generation.num_samples,
                                                         max_new_tokens=tc.generation.max_new_tokens)
                    metrics |= scores
                    if main:
                        log.add_generations(state["step"], samples)
                state["metrics"] = metrics
                record |= metrics
            if len(record) > 1:
                accelerator.log({k_: v for k_, v in record.items() if k_ != "step"}, step=state["step"])
                if main:
                    log.add(record)
                    bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}")
                    tqdm.write(format_record(record, total_steps))
            if tc.save_steps and state["step"] % tc.save_steps == 0:
                state.update(history=log.history, total_steps=total_steps)
                ckpts.save(accelerator, state["step"], state)
            for callback in callbacks:
                callback(state["step"], record)
        bar.close()
    except BaseException as e:
        if main:
            manifest.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=str(e) or type(e).__name__,
                            steps=state["step"])
            _write_manifest(out, manifest)
        raise

    # 8. final model, plot, manifest
    _save_final(accelerator, model, tokenizer, out)
    best, in_sync = ckpts.best(), _ranks_in_sync(accelerator, model)
    if main:
        if in_sync is False:
            tqdm.write("warning: the ranks ended with different weights (see run_manifest.json: ranks_in_sync)")
        log.plot()
        manifest.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), final=state["metrics"],
                        steps=state["step"], skipped_steps=state["skipped_steps"],
                        best_checkpoint=str(best) if best else None, ranks_in_sync=in_sync)
        _write_manifest(out, manifest)
    accelerator.end_training()
    return {"step": state["step"], "skipped_steps": state["skipped_steps"], **state["metrics"]}


def _prepare_model(cfg, main: bool):
    """``(model, tokenizer, manifest)`` from the model provider (patches, PEFT, freezing, new tokens)."""
    from oa_core.plugins import get_registry
    from oa_train.model import prepare_model

    return prepare_model(cfg, get_registry(), show_table=main)


def _forward_backward(accelerator, model, batches, n_targets: int) -> tuple[float, float]:
    """Backward of every micro-batch of one optimizer step, each scaled by 1/``n_targets`` (the step's
    supervised tokens on all ranks); gradients sync on the last one. Returns the summed loss and correct
    predictions over all ranks."""
    k, world = accelerator.gradient_accumulation_steps, accelerator.num_processes
    sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        accelerator.gradient_state._set_sync_gradients(last)
        with nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                total, correct = loss_sum(model, {key: v.to(accelerator.device) for key, v in batch.items()})
            # accelerator.backward divides by k (DeepSpeed too); x world: DDP averages over ranks
            accelerator.backward(total * (k * world / max(n_targets, 1)))
        sums += torch.tensor([total.item(), correct], dtype=torch.float64, device=sums.device)
    loss, right = accelerator.reduce(sums, reduction="sum").tolist()
    return loss, right


def _process_group_kwargs() -> list:
    """DeepSpeed workers without a GPU: accelerate finds no process-group backend (it would count one process
    per worker), so name gloo, which DeepSpeed's CPU accelerator uses too when oneCCL is not installed."""
    deepspeed_worker = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and "LOCAL_RANK" in os.environ
    if not deepspeed_worker or torch.cuda.is_available():
        return []
    from accelerate.utils import InitProcessGroupKwargs

    return [InitProcessGroupKwargs(backend="gloo")]


def _fill_deepspeed_auto(accelerator, tc: SFTConfig) -> None:
    """DeepSpeed presets say ``auto``; there is no prepared dataloader to infer them from."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    for key, value in (("train_micro_batch_size_per_gpu", tc.per_device_batch_size),
                       ("gradient_accumulation_steps", tc.gradient_accumulation_steps),
                       ("gradient_clipping", tc.max_grad_norm or 0.0)):
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    if ds.get("train_batch_size") == "auto":
        del ds["train_batch_size"]  # deepspeed derives it from the two above and the world size


def _save_final(accelerator, model, tokenizer, out: Path) -> None:
    """The trained model (+ tokenizer) in ``output_dir/model``, written to a temp folder then renamed."""
    state_dict = accelerator.get_state_dict(model)  # every rank: gathers FSDP/ZeRO-3 shards
    if accelerator.is_main_process:
        final, tmp = out / "model", out / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()


def _ranks_in_sync(accelerator, model) -> bool | None:
    """True when every rank holds the same weights (a checksum compared across ranks; None if sharded)."""
    if accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        return None
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in accelerator.unwrap_model(model).parameters()]).sum()
    gathered = accelerator.gather(local.reshape(1).to(accelerator.device))
    return bool((gathered == gathered[0]).all())


def _write_manifest(out: Path, manifest: dict) -> None:
    import json

    atomic_write_text(out / "run_manifest.json", json.dumps(manifest, indent=1, default=str))


def _versions() -> dict[str, str]:
    import accelerate
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, v in d.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out |= _flat(v, name + ".")
        else:
            out[name] = v if isinstance(v, int | float | str | bool) or v is None else str(v)
    return out
