"""Config-time rules of ``method: grpo`` (oa-train's ``check_config`` hook): the batch arithmetic, the loss, the
reward functions and their options, the data and the model — every problem at once, before anything loads."""

from __future__ import annotations

import importlib.util

from oa_data.loading import record_type_name
from oa_train.reward.checks import _entry

NO_REFERENCE = ("Text", "Classification")  # records that never have a reference answer


def check_grpo(cfg) -> list[tuple[str, str]]:
    from oa_train.grpo.config import GRPOConfig

    train = cfg.train
    if not isinstance(train, GRPOConfig):
        return []
    return (_batch(train) + _loss(train) + _rewards(cfg, train) + _data(cfg) + _model(cfg, train)
            + _generator(cfg, train))


def _batch(train) -> list[tuple[str, str]]:
    per_process = train.per_device_batch_size * train.gradient_accumulation_steps
    group = train.num_generations
    if per_process % group == 0:
        return []
    size = next(x for x in range(train.per_device_batch_size, train.per_device_batch_size + group + 1)
                if x * train.gradient_accumulation_steps % group == 0)
    divisors = [g for g in range(group, 1, -1) if per_process % g == 0]
    alternative = f", or num_generations {divisors[0]}" if divisors else ""
    return [("train.num_generations",
             f"per_device_batch_size {train.per_device_batch_size} × gradient_accumulation_steps "
             f"{train.gradient_accumulation_steps} = {per_process} completions per process per step is not a multiple "
             f"of num_generations {group}: each process generates, scores and normalises whole groups of "
             f"num_generations completions of a prompt, (per_device_batch_size × gradient_accumulation_steps) / "
             f"num_generations prompts per step (e.g. per_device_batch_size {size}{alternative})")]


def _loss(train) -> list[tuple[str, str]]:
    from oa_train.grpo.losses import UNITS

    loss = _entry("loss", train.loss_type)
    if loss is None:
        return []  # an unknown name is reported by the name check
    if loss.family != "grpo":
        return [("train.loss_type", f"'{train.loss_type}' is a '{loss.family}' loss; method 'grpo' takes a 'grpo' loss "
                 "(grpo, bnpo, dr_grpo, dapo, or a plugin's)")]
    if getattr(loss.fn, "unit", None) not in UNITS:
        return [("train.loss_type", f"loss '{train.loss_type}' declares no unit (its function's .unit must be one of "
                 f"{', '.join(UNITS)})")]
    return []


def _rewards(cfg, train) -> list[tuple[str, str]]:
    from pydantic import ValidationError

    if not train.rewards:
        return [("train.rewards", "no reward function: list at least one, e.g. [{function: numeric_answer}] "
                 "(oa plugins list --kind reward_function)")]
    problems, seen = [], {}
    for i, spec in enumerate(train.rewards):
        key = f"train.rewards.{i}"
        if spec.label in seen:
            problems.append((f"{key}.name", f"'{spec.label}' names train.rewards.{seen[spec.label]} too; give each a "
                             "distinct name"))
        seen.setdefault(spec.label, i)
        entry = _entry("reward_function", spec.function)
        if entry is None:
            continue
        if entry.options is None and spec.options:
            problems.append((f"{key}.options", f"reward function '{spec.function}' takes no options"))
        elif entry.options is not None:
            try:
                entry.options.model_validate(spec.options)
            except ValidationError as e:
                for err in e.errors():
                    where = ".".join(str(p) for p in err["loc"])
                    message = err["msg"].removeprefix("Value error, ")
                    if err["type"] == "missing":
                        message = "required option is missing"
                    elif err["type"] == "extra_forbidden":
                        message = f"unknown option (allowed: {', '.join(entry.options.model_fields)})"
                    problems.append((f"{key}.options{'.' + where if where else ''}", message))
        if "reference" in entry.columns:
            for group in ("datasets", "eval_datasets"):
                for j, ds in enumerate(getattr(cfg, group)):
                    record_type = record_type_name(ds.format)
                    if record_type in NO_REFERENCE:
                        problems.append((f"{group}.{j}.format", f"'{ds.format}' gives {record_type} records, which "
                                         f"have no reference answer for reward '{spec.label}' ({spec.function})"))
    return problems


def _data(cfg) -> list[tuple[str, str]]:
    from oa_data.settings import DataSettings

    if cfg.section("data", DataSettings).packing:
        return [("data.packing", "method 'grpo' batches its own completions; remove data.packing")]
    return []


def _model(cfg, train) -> list[tuple[str, str]]:
    from oa_train.checks import model_positions

    problems = []
    if cfg.model is not None and cfg.model.type != "causal":
        problems.append(("model.type", "method 'grpo' trains a causal language model (model.type: causal)"))
    limit = model_positions(cfg)
    if limit is not None:
        if train.max_completion_length >= limit:
            problems.append(("train.max_completion_length", f"{train.max_completion_length} leaves no room for a "
                             f"prompt within the model's {limit} positions"))
        elif train.max_prompt_length is not None and train.max_prompt_length + train.max_completion_length > limit:
            problems.append(("train.max_prompt_length", f"{train.max_prompt_length} + max_completion_length "
                             f"{train.max_completion_length} exceeds the model's {limit} positions"))
    return problems


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _generator(cfg, train) -> list[tuple[str, str]]:
    problems = []
    if train.generator == "vllm":
        if not vllm_installed():
            problems.append(("train.generator", "vllm is not installed (pip install 'oa-infer[vllm]' on a CUDA machine, "
                             "or generator: hf)"))
        if cfg.model is not None and cfg.model.random_init:
            problems.append(("train.generator", "vllm loads the weights saved at model.path, and model.random_init "
                             "is on (use generator: hf)"))
    return problems
