"""The resumable state of a run, written without pickles: weights and tensors as safetensors, everything else
(optimizer hyper-parameters, the LR schedule, the Python/NumPy RNG, the loss scaler) as JSON.

Files of a checkpoint folder:

- ``model.safetensors`` (main process), ``optimizer.safetensors`` + ``optimizer.json`` (main process; every DDP
  rank holds the same optimizer state): single process, DDP and multi-CPU runs;
- DeepSpeed / FSDP runs: the engine's own sharded files, written and read by accelerate and the engine
  (DeepSpeed's files are ``torch.save`` archives it loads itself: resume only from folders your runs wrote);
- ``scheduler.json``, ``scaler.json`` (fp16 loss scaler, when used): main process;
- ``rng_<rank>.json`` + ``rng_<rank>.safetensors``: the RNG of every process;
- ``objective_<rank>.safetensors`` + ``objective_<rank>.json``: the objective's own state on every process, when it
  has one (:meth:`oa_train.training.objective.Objective.state_dict`, e.g. GRPO's rollout buffer).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, load_model, save_file, save_model

from oa_infer.adapters import record_quantization

SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)


def sharded(accelerator) -> bool:
    return accelerator.distributed_type in SHARDED


def save_training_state(accelerator, model, optimizer, scheduler, folder: Path, tokenizer=None) -> None:
    """Write the state of every process into ``folder`` (which exists). Without sharding the folder also loads in
    plain transformers / peft: ``config.json`` and ``generation_config.json`` beside ``model.safetensors``, or the
    adapter (``adapter_config.json``, ``adapter_model.safetensors``), and the tokenizer with its chat template."""
    main = accelerator.is_main_process
    if sharded(accelerator):
        accelerator.save_state(str(folder))  # the engine's sharded weights and optimizer (every rank)
        (folder / f"random_states_{accelerator.process_index}.pkl").unlink(missing_ok=True)  # ours is below
    elif main:
        net = accelerator.unwrap_model(model)
        save_model(net, str(folder / "model.safetensors"))
        _save_loadable(net, tokenizer, folder)
        tensors, meta = _split(optimizer.state_dict())
        save_file(tensors, str(folder / "optimizer.safetensors"))
        _write_json(folder / "optimizer.json", meta)
    if main:
        _write_json(folder / "scheduler.json", scheduler.state_dict())
        if accelerator.scaler is not None:
            _write_json(folder / "scaler.json", accelerator.scaler.state_dict())
    rank = accelerator.process_index
    tensors, meta = _rng_state()
    save_file(tensors, str(folder / f"rng_{rank}.safetensors"))
    _write_json(folder / f"rng_{rank}.json", meta)


def load_training_state(accelerator, model, optimizer, scheduler, folder: Path) -> None:
    """Restore what :func:`save_training_state` wrote (every process reads its own RNG)."""
    if sharded(accelerator):
        accelerator.load_state(str(folder))
    else:
        device = accelerator.device  # several CPU processes have 'cpu:0', which safetensors refuses
        load_model(accelerator.unwrap_model(model), str(folder / "model.safetensors"),
                   device="cpu" if device.type == "cpu" else str(device))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        optimizer.load_state_dict(_join(tensors, _read_json(folder / "optimizer.json")))
    scheduler.load_state_dict(_read_json(folder / "scheduler.json"))
    if accelerator.scaler is not None and (folder / "scaler.json").is_file():
        accelerator.scaler.load_state_dict(_read_json(folder / "scaler.json"))
    rank = accelerator.process_index
    _set_rng_state(load_file(str(folder / f"rng_{rank}.safetensors")), _read_json(folder / f"rng_{rank}.json"))


def save_objective_state(accelerator, objective, folder: Path) -> None:
    """The objective's state of this process (nothing when it has none)."""
    state = objective.state_dict()
    if state is None:
        return
    tensors, meta = state
    rank = accelerator.process_index
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / f"objective_{rank}.safetensors"))
    _write_json(folder / f"objective_{rank}.json", meta)


def load_objective_state(accelerator, objective, folder: Path) -> None:
    """Give the objective the state it saved in ``folder`` (a checkpoint without one leaves it as it is)."""
    rank = accelerator.process_index
    meta = folder / f"objective_{rank}.json"
    if meta.is_file():
        objective.load_state_dict(load_file(str(folder / f"objective_{rank}.safetensors")), _read_json(meta))


def _save_loadable(net, tokenizer, folder: Path) -> None:
    from peft import PeftModel

    if isinstance(net, PeftModel):
        net.save_pretrained(folder, safe_serialization=True, save_embedding_layers=False)  # the adapter only
        record_quantization(net, folder)
    else:
        net.config.save_pretrained(folder)
        if getattr(net, "generation_config", None) is not None:
            net.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------- optimizer state: tensors apart from the rest


def _split(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer ``state_dict`` as safetensors-ready tensors and a JSON-ready rest."""
    tensors, rest = {}, {}
    for pid, entries in state["state"].items():
        kept = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                key = f"{pid}.{name}"
                tensors[key] = value.detach().contiguous()
                kept[name] = {"tensor": key}
            else:
                kept[name] = value
        rest[str(pid)] = kept
    return tensors, {"state": rest, "param_groups": state["param_groups"]}


def _join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {name: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for name, v in entries.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- RNG


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    meta = {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))
