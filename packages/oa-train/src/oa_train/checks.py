"""Config-time rules of oa-train (its ``check_config`` hook): what would fail after the model is loaded is
reported before, with the key to change. Reads files only (a local model's ``config.json``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_run_config(cfg) -> list[tuple[str, str]]:
    from oa_train.sft.config import SFTConfig
    from oa_train.training.config import LoopConfig

    problems = _length_problems(cfg) + _model_problems(cfg)
    train = cfg.train
    if isinstance(train, LoopConfig):
        problems += [("train.report_to", f"'{name}' is not installed (pip install {TRACKERS[name]}, or report_to: none)")
                     for name in train.report_to if name in TRACKERS and importlib.util.find_spec(name) is None]
    if isinstance(train, SFTConfig):
        if train.generation.num_samples and cfg.datasets and not cfg.eval_datasets:
            problems.append(("train.generation.num_samples", "needs eval data (add eval_datasets, or set it to 0)"))
        problems += _record_problems(cfg)
    return problems


def _model_problems(cfg) -> list[tuple[str, str]]:
    """Local model and adapter folders that are not there (hub ids are checked when they load)."""
    from oa_data.hub import looks_local

    if cfg.model is None:
        return []
    problems = []
    path = Path(cfg.model.path).expanduser()
    if not path.is_dir() and (path.exists() or looks_local(cfg.model.path)):
        problems.append(("model.path", f"local model folder '{cfg.model.path}' {'is not a folder' if path.exists() else 'not found'}"))
    adapter = cfg.model.adapter_path
    if adapter and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        problems.append(("model.adapter_path", f"no adapter (adapter_config.json) in '{adapter}'"))
    return problems


def _record_problems(cfg, allowed: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """Datasets whose records the method cannot train on (``allowed``: record type names; default SFT's:
    conversations, prompt/completion pairs and text, not preference pairs or rankings)."""
    from oa_data.loading import SFT_RECORDS, record_type_name

    allowed = allowed or SFT_RECORDS
    problems = []
    for group in ("datasets", "eval_datasets"):
        for i, spec in enumerate(getattr(cfg, group)):
            record_type = record_type_name(spec.format)
            if record_type is not None and record_type not in allowed:
                problems.append((f"{group}.{i}.format", f"'{spec.format}' gives {record_type} records, which method "
                                 f"'{cfg.method}' does not train on (it takes {', '.join(allowed)})"))
    return problems


def model_positions(cfg) -> int | None:
    """The longest sequence the configured model takes (from a local folder's config.json), None if unknown."""
    if cfg.model is None:
        return None
    config = Path(cfg.model.path).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a hub id, or no readable config: the model loader reports it
    data = data.get("text_config", data)
    return next((int(data[k]) for k in POSITION_KEYS if isinstance(data.get(k), int)), None)


def _length_problems(cfg) -> list[tuple[str, str]]:
    from oa_data.settings import DataSettings
    from oa_train.grpo.config import GRPOConfig

    if isinstance(cfg.train, GRPOConfig):
        return []  # its lengths are max_prompt_length and max_completion_length (oa_train.grpo.checks)
    limit = model_positions(cfg)
    if limit is None or not (cfg.datasets or cfg.eval_datasets):
        return []
    data = cfg.section("data", DataSettings)
    lengths = [("data.max_length", data.max_length)]
    lengths += [(f"{group}.{i}.max_length", spec.max_length) for group in ("datasets", "eval_datasets")
                for i, spec in enumerate(getattr(cfg, group)) if spec.max_length]
    if data.pose is not None:
        return []  # PoSE trains short rows for a longer context on purpose
    return [(key, f"{n} exceeds the model's {limit} positions (model.path config.json); set it to at most {limit}")
            for key, n in lengths if n > limit]
