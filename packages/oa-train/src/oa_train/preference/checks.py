"""Config-time rules of the preference methods (part of oa-train's ``check_config`` hook)."""

from __future__ import annotations

PAIR_RECORDS = ("PreferencePair",)
UNPAIRED_RECORDS = ("UnpairedFeedback", "PreferencePair")


def check_preference_config(cfg) -> list[tuple[str, str]]:
    from oa_core.errors import OAError
    from oa_core.plugins import get_registry
    from oa_data.settings import DataSettings
    from oa_train.checks import _record_problems
    from oa_train.preference.config import DPOConfig, KTOConfig, PreferenceConfig, loss_family

    train = cfg.train
    if not isinstance(train, PreferenceConfig):
        return []
    kto = isinstance(train, KTOConfig)
    problems = _record_problems(cfg, UNPAIRED_RECORDS if kto else PAIR_RECORDS)
    if cfg.section("data", DataSettings).packing:
        problems.append(("data.packing", f"method '{cfg.method}' packs the sequences of a micro-batch itself: set "
                         "train.padding_free: true instead"))
    family = loss_family(train)
    names = [train.loss_type] if kto else list(train.loss_type) if isinstance(train, DPOConfig) else []
    for i, name in enumerate(names):
        try:
            loss = get_registry().get("loss", name)
        except OAError:
            continue  # an unknown name is reported by the name check
        if loss.family != family:
            key = "train.loss_type" if kto else f"train.loss_type.{i}"
            problems.append((key, f"'{name}' is a {loss.family} loss; method '{cfg.method}' takes {family} losses"))
    if "exo_pair" in names and train.label_smoothing == 0:
        problems.append(("train.label_smoothing", "exo_pair needs label_smoothing > 0 (the EXO paper: 1e-3)"))
    reference = getattr(train, "reference", None)
    if reference is not None and reference.source == "adapters_off":
        peft = getattr(cfg, "peft", None)
        if getattr(peft, "method", "none") == "none" and not (cfg.model and cfg.model.adapter_path):
            problems.append(("train.reference.source", "adapters_off needs a PEFT adapter (set peft.method, e.g. lora, "
                             "or reference.source: copy)"))
    return problems
