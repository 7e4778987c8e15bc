"""Preference optimisation on the shared loop: ``dpo`` (and its loss family), ``kto``, ``orpo``, ``simpo`` and
``cpo``. Configs in :mod:`~oa_train.preference.config`, losses (registered through ``register_losses``) in
:mod:`~oa_train.preference.losses`, the objectives in :mod:`~oa_train.preference.pairs` and
:mod:`~oa_train.preference.kto`, the reference model and its cache in :mod:`~oa_train.preference.reference` and
:mod:`~oa_train.preference.cache`. Importing this package loads no torch."""

from __future__ import annotations

from oa_train.preference.config import (
    CPOConfig,
    DPOConfig,
    KTOConfig,
    ORPOConfig,
    PreferenceConfig,
    ReferenceSettings,
    SimPOConfig,
)

__all__ = ["CPOConfig", "DPOConfig", "KTOConfig", "ORPOConfig", "PreferenceConfig", "ReferenceSettings",
           "SimPOConfig", "register_methods"]

METHODS = {
    "dpo": (DPOConfig, "pairwise", "direct preference optimisation and its loss family (loss_type), with a reference"),
    "orpo": (ORPOConfig, "pairwise", "odds-ratio preference optimisation: NLL + odds-ratio term, no reference"),
    "simpo": (SimPOConfig, "pairwise", "SimPO: length-normalised rewards with a target margin, no reference"),
    "cpo": (CPOConfig, "pairwise", "contrastive preference optimisation: DPO without reference + NLL"),
    "kto": (KTOConfig, "unpaired", "Kahneman-Tversky optimisation on desirable/undesirable completions"),
}


def _pairwise():
    from oa_train.preference.pairs import PairwiseObjective

    return PairwiseObjective()


def _unpaired():
    from oa_train.preference.kto import KTOObjective

    return KTOObjective()


def register_methods(register) -> None:
    from oa_core.extensions import Method

    objectives = {"pairwise": _pairwise, "unpaired": _unpaired}
    for name, (config, kind, description) in METHODS.items():
        register(name, Method(config, objectives[kind], description))
