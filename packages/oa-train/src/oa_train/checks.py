"""Config-time rules of oa-train (its ``check_config`` hook): what would fail after the model is loaded is
reported before, with the key to change. Reads files only (a local model's ``config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def check_run_config(cfg) -> list[tuple[str, str]]:
    from oa_train.sft.config import SFTConfig

    problems = _length_problems(cfg)
    train = cfg.train
    if isinstance(train, SFTConfig) and train.generation.num_samples and cfg.datasets and not cfg.eval_datasets:
        problems.append(("train.generation.num_samples", "needs eval data (add eval_datasets, or set it to 0)"))
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
