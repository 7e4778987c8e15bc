"""The GRPO family's losses equal TRL 1.16's ``GRPOTrainer._compute_loss`` on identical log-probs and advantages:
summed over the micro-batches of a step (gradient accumulation) and averaged over processes as DDP averages
gradients, against oa's loss summed over the same micro-batches and divided by the step's units on all processes
(what the shared loop does). Values and gradients, every loss type, token and sequence importance sampling, with
and without the KL term and old log-probs (num_iterations > 1)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from oa_core import Loss, hookimpl
from oa_core.plugins import add_plugin, get_registry, remove_plugin
from oa_train.grpo.config import GRPOConfig
from oa_train.grpo.losses import PolicyTerms, clipped_surrogate, num_units, policy_tallies

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")


def micro_batch(g: torch.Generator, b: int, t: int, *, old: bool, ref: bool):
    """Random log-probs (B, T), a right-padded completion mask (one completion fully masked, as
    mask_truncated_completions leaves it), advantages with both signs."""
    logps = (-torch.rand(b, t, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).double()
    mask[-1] = 0.0
    out = {"logps": logps, "mask": mask, "advantages": torch.randn(b, generator=g, dtype=torch.float64)}
    out["old"] = (logps.detach() + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)) if old else None
    out["ref"] = (logps.detach() + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)) if ref else None
    return out


def trl_loss(mb: dict, *, loss_type, level, beta, eps, eps_high, accumulation, processes, num_items, max_len):
    """TRL's own ``_compute_loss`` on a stand-in trainer whose log-probs are ``mb['logps']``."""
    b, t = mb["logps"].shape
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (mb["logps"], torch.zeros(b, t, dtype=torch.float64), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=level, beta=beta, args=SimpleNamespace(use_bias_correction_kl=False, delta=None,
                                                                         steps_per_generation=accumulation),
        loss_type=loss_type, epsilon_low=eps, epsilon_high=eps_high, use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=accumulation, max_completion_length=max_len,
        accelerator=SimpleNamespace(num_processes=processes, reduce=lambda x, reduction: x, gather=lambda x: x),
        _entropy_bonus_enabled=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mb["mask"].long(),
              "advantages": mb["advantages"], "num_items_in_batch": torch.tensor(float(num_items))}
    if mb["old"] is not None:
        inputs["old_per_token_logps"] = mb["old"]
    if mb["ref"] is not None:
        inputs["ref_per_token_logps"] = mb["ref"]
    return trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs), fake._metrics["train"]


def terms(mb: dict) -> PolicyTerms:
    old = mb["logps"].detach() if mb["old"] is None else mb["old"]
    return PolicyTerms(mb["logps"], old, mb["advantages"], mb["mask"], mb["ref"])


CASES = [(loss, level, beta, old) for loss in ("grpo", "bnpo", "dr_grpo", "dapo") for level in ("token", "sequence")
         for beta, old in ((0.0, False), (0.04, True))]


@pytest.mark.parametrize("loss_type,level,beta,old", CASES)
@pytest.mark.parametrize("processes,accumulation", [(1, 1), (1, 3), (2, 2)])
def test_losses_equal_trl_on_the_same_log_probs(loss_type, level, beta, old, processes, accumulation):
    g = torch.Generator().manual_seed(hash((loss_type, level, beta, processes, accumulation)) % 2**31)
    config = GRPOConfig(loss_type=loss_type, importance_sampling_level=level, beta=beta, epsilon=0.2,
                        epsilon_high=0.28, max_completion_length=7)
    step = [[micro_batch(g, 4, 7, old=old, ref=beta != 0) for _ in range(accumulation)] for _ in range(processes)]
    num_items = sum(float(mb["mask"].sum()) for proc in step for mb in proc)
    fn = get_registry().get("loss", loss_type).fn

    trl_total = sum(trl_loss(mb, loss_type=loss_type, level=level, beta=beta, eps=0.2, eps_high=0.28,
                             accumulation=accumulation, processes=processes, num_items=num_items, max_len=7)[0]
                    for proc in step for mb in proc) / processes  # DDP averages the processes' gradients
    units = sum(num_units(fn.unit, mb["mask"]) for proc in step for mb in proc)
    oa_total = sum(fn(terms(mb), config) for proc in step for mb in proc) / units

    torch.testing.assert_close(oa_total, trl_total, rtol=1e-12, atol=1e-12)
    leaves = [mb["logps"] for proc in step for mb in proc]
    trl_grads = torch.autograd.grad(trl_total, leaves, retain_graph=True)
    oa_grads = torch.autograd.grad(oa_total, leaves)
    for a, b in zip(oa_grads, trl_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_clip_and_kl_metrics_equal_trl(level):
    g = torch.Generator().manual_seed(3)
    mb = micro_batch(g, 6, 5, old=True, ref=True)
    config = GRPOConfig(importance_sampling_level=level, beta=0.1, epsilon=0.1, epsilon_high=0.15)
    _, logged = trl_loss(mb, loss_type="dapo", level=level, beta=0.1, eps=0.1, eps_high=0.15, accumulation=1,
                         processes=1, num_items=float(mb["mask"].sum()), max_len=5)
    ours = {k: float(s / c) for k, (s, c) in policy_tallies(terms(mb), config).items()}
    assert ours["clip_ratio/low"] == pytest.approx(logged["clip_ratio/low_mean"][0])
    assert ours["clip_ratio/high"] == pytest.approx(logged["clip_ratio/high_mean"][0])
    assert ours["clip_ratio/region"] == pytest.approx(logged["clip_ratio/region_mean"][0])
    assert ours["kl"] == pytest.approx(logged["kl"][0])
    assert 0 < ours["clip_ratio/region"] < 1  # the test data clips some tokens, not all


def test_the_surrogate_by_hand():
    """One token: A > 0 gains at most (1 + ε_high)·A; A < 0 is clipped below at 1 - ε; k3 KL is ≥ 0."""
    config = GRPOConfig(epsilon=0.2, epsilon_high=0.28, beta=0.5)
    one = lambda lp, old, a, ref: PolicyTerms(torch.tensor([[lp]]), torch.tensor([[old]]), torch.tensor([a]),  # noqa: E731
                                              torch.ones(1, 1), torch.tensor([[ref]]))
    ratio = torch.exp(torch.tensor(0.5))
    assert float(clipped_surrogate(one(0.5, 0.0, 2.0, 0.5), config)) == pytest.approx(-1.28 * 2.0)
    assert float(clipped_surrogate(one(0.5, 0.0, -2.0, 0.5), config)) == pytest.approx(float(ratio) * 2.0)
    kl = float(clipped_surrogate(one(0.0, 0.0, 0.0, -1.0), config)) / 0.5
    assert kl == pytest.approx(float(torch.exp(torch.tensor(-1.0)) + 1 - 1))


def cispo(terms: PolicyTerms, config) -> torch.Tensor:
    """CISPO (MiniMax 2025, arXiv:2506.13585): -sg(min(r, ε_max)) · A · log π, summed over tokens (unit: tokens).
    terms: (B, T) → 0-d."""
    ratio = torch.exp(terms.logps - terms.old_logps)
    advantages = terms.advantages.unsqueeze(1)
    return (-(torch.clamp(ratio, max=config.clip_high).detach() * advantages * terms.logps) * terms.mask).sum()


cispo.unit = "tokens"


class ThirdPartyLoss:
    @hookimpl
    def register_losses(self, register):
        register("my.cispo", Loss(cispo, family="grpo", description="CISPO"))


def test_a_third_party_loss_is_picked_by_name_and_equals_trl():
    add_plugin(ThirdPartyLoss(), "my-cispo")
    try:
        g = torch.Generator().manual_seed(5)
        mb = micro_batch(g, 4, 6, old=True, ref=False)
        config = GRPOConfig(loss_type="my.cispo", epsilon_high=1.5)
        fn = get_registry().get("loss", config.loss_type).fn
        ours = fn(terms(mb), config) / num_units(fn.unit, mb["mask"])
        theirs, _ = trl_loss(mb, loss_type="cispo", level="token", beta=0.0, eps=0.2, eps_high=1.5, accumulation=1,
                             processes=1, num_items=float(mb["mask"].sum()), max_len=6)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    finally:
        remove_plugin("my-cispo")
