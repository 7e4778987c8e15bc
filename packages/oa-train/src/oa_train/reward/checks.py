"""Config-time rules of ``method: rm`` and ``method: classification`` (oa-train's ``check_config`` hook): what
would fail after the model and data are loaded is reported before, with the key to change. Reads the config
only."""

from __future__ import annotations

RECORDS = {"rm": ("PreferencePair", "RankedReplies"), "classification": ("Classification",)}
FAMILY = {"rm": "reward", "classification": "classification"}


def check_scored_method(cfg) -> list[tuple[str, str]]:
    """The rules of the reward-model and classification methods (nothing for other methods)."""
    from oa_train.classify.config import ClassificationConfig
    from oa_train.reward.config import RMConfig

    train = cfg.train
    if not isinstance(train, RMConfig | ClassificationConfig):
        return []
    method = "rm" if isinstance(train, RMConfig) else "classification"
    problems = _common(cfg, method)
    if isinstance(train, RMConfig):
        problems += _rm(cfg, train)
    else:
        problems += _classification(cfg, train)
    return problems


def _common(cfg, method: str) -> list[tuple[str, str]]:
    from oa_data.settings import DataSettings
    from oa_train.checks import _record_problems

    problems = []
    if cfg.model is not None and cfg.model.type != "seq_cls":
        problems.append(("model.type", f"method '{cfg.method}' trains a sequence classifier (a score head on the "
                         "model): set model.type: seq_cls"))
    if cfg.section("data", DataSettings).packing:
        problems.append(("data.packing", f"method '{cfg.method}' packs each micro-batch itself (train.padding_free); "
                         "remove data.packing"))
    problems += _record_problems(cfg, RECORDS[method])
    family = _loss_family(cfg.train.loss)
    if family is not None and family != FAMILY[method]:
        problems.append(("train.loss", f"'{cfg.train.loss}' is a '{family}' loss; method '{cfg.method}' takes a "
                         f"'{FAMILY[method]}' loss"))
    return problems


def _rm(cfg, train) -> list[tuple[str, str]]:
    from oa_data.settings import DataSettings

    problems = []
    if train.center_rewards_coefficient is not None and train.loss != "pairwise" and _builtin(train.loss):
        problems.append(("train.center_rewards_coefficient", f"only the pairwise loss centers rewards, not "
                         f"'{train.loss}'"))
    if train.use_margin and train.loss != "pairwise" and _builtin(train.loss):
        problems.append(("train.use_margin", f"only the pairwise loss uses margins, not '{train.loss}'"))
    if train.min_prompt_length is not None:
        lengths = [("data.max_length", cfg.section("data", DataSettings).max_length)]
        lengths += [(f"{g}.{i}.max_length", s.max_length) for g in ("datasets", "eval_datasets")
                    for i, s in enumerate(getattr(cfg, g)) if s.max_length]
        problems += [("train.min_prompt_length", f"{train.min_prompt_length} leaves no tokens for the replies within "
                      f"{key} {n}") for key, n in lengths if train.min_prompt_length >= n]
    return problems


def _classification(cfg, train) -> list[tuple[str, str]]:
    problems = []
    if train.problem_type == "single_label" and train.num_labels < 2:
        problems.append(("train.num_labels", "single_label classification needs at least 2 classes (a single score: "
                         "method rm, or problem_type: multi_label)"))
    if train.class_weights is not None and len(train.class_weights) != train.num_labels:
        problems.append(("train.class_weights", f"{len(train.class_weights)} weights for {train.num_labels} classes "
                         "(train.num_labels)"))
    wanted = _loss_problem_type(train.loss)
    if wanted is not None and wanted != train.problem_type:
        problems.append(("train.loss", f"'{train.loss}' is a {wanted} loss, train.problem_type is {train.problem_type}"))
    for group in ("datasets", "eval_datasets"):
        for i, spec in enumerate(getattr(cfg, group)):
            names = spec.options.get("label_names")
            if isinstance(names, list) and len(names) != train.num_labels:
                problems.append((f"{group}.{i}.options.label_names", f"{len(names)} names for {train.num_labels} "
                                 "classes (train.num_labels)"))
    return problems


def _entry(kind: str, name: str):
    from oa_core.errors import OAError
    from oa_core.plugins import get_registry

    try:
        return get_registry().get(kind, name)
    except OAError:
        return None  # an unknown name is reported by the name check



def _loss_family(name: str) -> str | None:
    loss = _entry("loss", name)
    return loss.family if loss is not None else None


def _loss_problem_type(name: str) -> str | None:
    loss = _entry("loss", name)
    return getattr(loss.fn, "problem_type", None) if loss is not None else None


def _builtin(name: str) -> bool:
    from oa_train.reward.losses import LOSSES

    return name in LOSSES
