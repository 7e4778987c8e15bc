"""The loop's contact with accelerate and the output folder: process-group set-up, DeepSpeed values, the
final save, the run manifest, a cross-rank weight check."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from accelerate.utils import DistributedType

from oa_core.io import atomic_write_text, follow_umask
from oa_infer.adapters import record_quantization


def process_group_kwargs() -> list:
    """DeepSpeed workers without a GPU: accelerate finds no process-group backend (it would count one process
    per worker), so name gloo, which DeepSpeed's CPU accelerator uses too when oneCCL is not installed."""
    deepspeed_worker = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and "LOCAL_RANK" in os.environ
    if not deepspeed_worker or torch.cuda.is_available():
        return []
    from accelerate.utils import InitProcessGroupKwargs

    return [InitProcessGroupKwargs(backend="gloo")]


def fill_deepspeed_values(accelerator, tc) -> None:
    """Give a DeepSpeed config the batch sizes and clipping of the run (presets leave them out or say
    ``auto``, and there is no prepared dataloader to infer them from)."""
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


def save_final(accelerator, model, tokenizer, out: Path) -> None:
    """The trained model (+ tokenizer, with the chat template used in training) in ``output_dir/model``,
    written to a temp folder then renamed."""
    state_dict = accelerator.get_state_dict(model)  # every rank: gathers FSDP/ZeRO-3 shards
    if accelerator.is_main_process:
        final, tmp = out / "model", out / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        net = accelerator.unwrap_model(model)
        net.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        record_quantization(net, tmp)  # a QLoRA adapter: its base's quantization, for oa merge
        tokenizer.save_pretrained(tmp)
        follow_umask(tmp)  # safetensors writes its files 0600
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()


def ranks_in_sync(accelerator, model) -> bool | None:
    """True when every rank holds the same weights (a checksum compared across ranks; None if sharded)."""
    if accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        return None
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in accelerator.unwrap_model(model).parameters()]).sum()
    gathered = accelerator.gather(local.reshape(1).to(accelerator.device))
    return bool((gathered == gathered[0]).all())


def write_manifest(out: Path, manifest: dict) -> None:
    atomic_write_text(out / "run_manifest.json", json.dumps(manifest, indent=1, default=str))


def config_source(path: Path) -> dict:
    """The config file, and the git commit of the repository it lives in (with whether it has changes), if any."""
    import subprocess

    out: dict = {"file": str(path), "git_commit": None, "git_dirty": None}
    try:
        git = ["git", "-C", str(Path(path).resolve().parent)]
        out["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                           timeout=10).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True, timeout=10)
        out["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git repository, or no git
    return out


def flat(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, other values as str (tracker configs)."""
    out = {}
    for key, v in d.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out |= flat(v, name + ".")
        else:
            out[name] = v if isinstance(v, int | float | str | bool) or v is None else str(v)
    return out
