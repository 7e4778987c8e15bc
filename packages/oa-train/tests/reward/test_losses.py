"""Every reward and classification loss equals a direct implementation of its formula (float64), the pairwise
loss and its gradients equal TRL's RewardTrainer on the same tiny model and batch, the K-wise loss on two
replies is the pairwise one, and the order of the replies of a ranking changes nothing."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from oa_train.reward.batching import collate_groups
from oa_train.reward.config import RMConfig
from oa_train.reward.losses import RewardPairs, kwise, pairwise, pairwise_mean

GROUPS = [[0, 1, 2, 3], [0, 1], [0, 1, 1], [0, 1, 2]]  # ranks best first; the third has a tie


def rows(ranks_per_group, margins=None):
    """Candidate rows with distinct token ids (only the pair structure matters here)."""
    out = []
    for g, ranks in enumerate(ranks_per_group):
        out.append({"prompt_input_ids": [1, 3 + g], "candidate_input_ids": [[10 + g, 20 + k] for k in range(len(ranks))],
                    "ranks": ranks, "margin": None if margins is None else margins[g]})
    return out


def pairs_of(batch, scores):
    return RewardPairs(scores[batch["pair_better"]], scores[batch["pair_worse"]], batch["pair_group"],
                       batch["pair_margin"].double())


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_kwise_is_the_mean_over_prompts_of_the_mean_over_their_pairs():
    batch = collate_groups(rows(GROUPS), 0, packed=True)
    scores = torch.randn(len(batch["sequence_group"]), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    beta = 0.05
    expected, start = [], 0
    for ranks in GROUPS:
        s = scores[start:start + len(ranks)].tolist()
        terms = [-math.log(sigmoid(s[i] - s[j])) + beta * 0.5 * (s[i] ** 2 + s[j] ** 2)
                 for i, j in itertools.permutations(range(len(ranks)), 2) if ranks[i] < ranks[j]]
        expected.append(sum(terms) / len(terms))
        start += len(ranks)
    assert len(batch["pair_better"]) == 6 + 1 + 2 + 3  # C(4,2) + 1 + (3 pairs - 1 tie) + C(3,2)
    loss = kwise(pairs_of(batch, scores), RMConfig(beta=beta))
    assert loss.item() == pytest.approx(sum(expected), rel=1e-12)  # summed over prompts; the loop divides by 4
    pooled = pairwise_mean(pairs_of(batch, scores), RMConfig(beta=beta))
    assert pooled.item() == pytest.approx(sum(e * n for e, n in zip(expected, [6, 1, 2, 3], strict=True)), rel=1e-12)
    assert (kwise.unit, pairwise_mean.unit, pairwise.unit) == ("prompts", "pairs", "pairs")


def test_pairwise_is_bradley_terry_with_margin_and_centering():
    chosen, rejected = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64), torch.tensor([0.1, 0.4, 2.5], dtype=torch.float64)
    margin = torch.tensor([0.5, 0.0, -1.0], dtype=torch.float64)
    pairs = RewardPairs(chosen, rejected, torch.arange(3), margin)
    c = 0.01
    expected = sum(-math.log(sigmoid(a - b - m)) + c * (a + b) ** 2
                   for a, b, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist(), strict=True))
    assert pairwise(pairs, RMConfig(loss="pairwise", center_rewards_coefficient=c)).item() == pytest.approx(expected, rel=1e-12)
    plain = sum(-math.log(sigmoid(a - b - m)) for a, b, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist(), strict=True))
    assert pairwise(pairs, RMConfig(loss="pairwise")).item() == pytest.approx(plain, rel=1e-12)


def test_kwise_on_two_replies_is_the_pairwise_loss():
    batch = collate_groups(rows([[0, 1]] * 5), 0, packed=True)
    scores = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    k = kwise(pairs_of(batch, scores), RMConfig(beta=0.0))
    p = pairwise(pairs_of(batch, scores), RMConfig(loss="pairwise"))
    torch.testing.assert_close(k, p, rtol=1e-14, atol=0)
    grads = [torch.autograd.grad(x, scores)[0] for x in (k, p)]
    torch.testing.assert_close(*grads, rtol=1e-14, atol=0)
    beta = RMConfig(beta=0.1)
    torch.testing.assert_close(kwise(pairs_of(batch, scores), beta), pairwise_mean(pairs_of(batch, scores), beta))


def test_permuting_the_replies_of_a_ranking_changes_nothing(rm_objective, classifier):
    """Replies stored in any order with their ranks: the same pairs, the same loss and gradients."""
    model = classifier()
    objective = rm_objective(beta=0.01)
    group = rows([[0, 1, 2, 3]])[0]
    losses = []
    for order in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]):
        shuffled = dict(group, candidate_input_ids=[group["candidate_input_ids"][k] for k in order],
                        ranks=[group["ranks"][k] for k in order])
        batch = collate_groups([rows([[0, 1]])[0], shuffled], 0, packed=True)
        model.zero_grad()
        loss = objective.loss(model, batch).loss
        loss.backward()
        losses.append((loss.detach(), model.score.weight.grad.clone()))
    for loss, grad in losses[1:]:
        torch.testing.assert_close(loss, losses[0][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, losses[0][1], rtol=1e-10, atol=1e-14)


def test_pairwise_loss_and_gradients_equal_trl_reward_trainer(rm_objective, classifier, tmp_path, llama_tok):
    """The same tiny model and pairs (with margins and centering): TRL 1.16's compute_loss on its padded batch,
    ours on a packed row."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    data = [{"chosen_ids": [1, 5, 9, 14, 30], "rejected_ids": [1, 5, 9, 17], "margin": 0.5},
            {"chosen_ids": [1, 40, 41, 2], "rejected_ids": [1, 40, 41, 42, 43, 44, 2], "margin": -0.25},
            {"chosen_ids": [1, 7, 8], "rejected_ids": [1, 7, 9], "margin": 1.0}]
    theirs, ours = classifier(), classifier()
    tokenizer = copy.deepcopy(llama_tok)
    tokenizer.pad_token = tokenizer.unk_token  # id 0, distinct from eos: TRL's pooling then reads the last token
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", center_rewards_coefficient=0.01,
                        max_length=None, per_device_train_batch_size=3)
    trainer = RewardTrainer(model=theirs, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    inputs = DataCollatorForPreference(pad_token_id=0)(data)
    trl_loss = trainer.compute_loss(theirs, inputs)
    trl_loss.backward()

    objective = rm_objective(loss="pairwise", center_rewards_coefficient=0.01, use_margin=True)
    prompt_free = [{"prompt_input_ids": [], "candidate_input_ids": [d["chosen_ids"], d["rejected_ids"]], "ranks": [0, 1],
                    "margin": d["margin"]} for d in data]
    batch = collate_groups(prompt_free, 0, packed=True)
    out = objective.loss(ours, batch)
    loss = out.loss / objective.num_units(batch)
    loss.backward()
    torch.testing.assert_close(loss, trl_loss.double(), rtol=1e-12, atol=0)
    grads = {n: p.grad for n, p in ours.named_parameters()}
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)
    assert out.metrics["accuracy"][1] == 3


def test_classification_losses_equal_torch_with_class_weights():
    from types import SimpleNamespace

    from oa_train.classify.losses import sigmoid_bce, softmax_ce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 2, 2])
    weights = [0.5, 2.0, 1.0]
    cfg = SimpleNamespace(class_weights=weights)
    w = torch.tensor(weights, dtype=torch.float64)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=w)
    torch.testing.assert_close(softmax_ce(logits, labels, cfg) / w[labels].sum(), expected)
    targets = (torch.rand(6, 3, generator=g) > 0.5).double()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, weight=w)
    torch.testing.assert_close(sigmoid_bce(logits, targets, cfg) / targets.numel(), expected)
    by_hand = -(targets * torch.log(torch.sigmoid(logits)) + (1 - targets) * torch.log(1 - torch.sigmoid(logits)))
    torch.testing.assert_close(sigmoid_bce(logits, targets, cfg), (by_hand * w).sum())


def test_a_third_party_reward_loss_is_picked_by_name(rm_objective, tmp_path, tiny_model_dir):
    import yaml

    from oa_core import Loss, hookimpl
    from oa_core.config import load_config
    from oa_core.plugins import add_plugin, remove_plugin

    def hinge(pairs, config):
        """Pairwise hinge: max(0, 1 - (s_c - s_r)), summed over pairs. Shapes: (P,) -> 0-d."""
        return (1 - (pairs.chosen - pairs.rejected)).clamp(min=0).sum()

    hinge.unit = "pairs"

    class Plugin:
        @hookimpl
        def register_losses(self, register):
            register("acme.hinge", Loss(hinge, family="reward", description="pairwise hinge"))

    add_plugin(Plugin(), "hinge-loss")
    try:
        (tmp_path / "d.jsonl").write_text("")
        (tmp_path / "run.yaml").write_text(yaml.safe_dump({
            "method": "rm", "model": {"path": tiny_model_dir, "type": "seq_cls"},
            "datasets": [{"path": str(tmp_path / "d.jsonl"), "format": "preference"}],
            "data": {"chat_template": "chatml", "max_length": 64}, "train": {"loss": "acme.hinge"}}))
        assert load_config(tmp_path / "run.yaml").config.train.loss == "acme.hinge"
        objective = rm_objective(loss="acme.hinge")
        batch = collate_groups(rows([[0, 1], [0, 1, 2]]), 0, packed=True)
        scores = torch.tensor([0.5, 0.0, 2.0, 1.5, -1.0], dtype=torch.float64)
        expected = sum(max(0.0, 1 - d) for d in (0.5, 0.5, 3.0, 2.5))
        assert objective.loss_fn(pairs_of(batch, scores), objective.run.train).item() == pytest.approx(expected)
        assert objective.unit == "pairs" and objective.num_units(batch) == 4
    finally:
        remove_plugin("hinge-loss")
