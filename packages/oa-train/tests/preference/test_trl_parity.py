"""Every registered preference loss against TRL 1.16 on the same tiny model and batch: the loss value and the
gradient of every model parameter.

TRL computes its side with its own trainers' loss code on its own collated inputs of the same token ids:
``DPOTrainer._compute_loss`` (all DPO loss types, ``loss_type`` lists with ``loss_weights``, and its
``sigmoid_norm`` against the example plugin's ``example.sigmoid_norm``),
``KTOTrainer._compute_loss`` (``kto``, ``apo_zero_unpaired``), the experimental ``ORPOTrainer`` and
``CPOTrainer``'s ``get_batch_loss_metrics`` (ORPO; CPO and SimPO with and without ``cpo_alpha``), and
``CPOTrainer.cpo_loss`` with ``label_smoothing`` on DPO log-ratios for ``cdpo`` (TRL 1.16's DPO has no label
smoothing of the sigmoid loss any more). Reference log-probs are the same numbers on both sides (TRL's
``precompute_ref_log_probs`` inputs, oa's cached reference), from a second model, so that the log-ratios are not 0.

Both sides compute policy log-probs in float32 their own way (TRL through its fused LM head in tiles, oa through
the logits), which differ by ~1e-5 relative: losses agree to rtol 1e-4, gradients to rtol 1e-3 / atol 1e-6.
NLL terms (``sft``, ORPO, CPO) use chosen replies of equal length: TRL averages over all chosen tokens of the batch,
oa per pair (equal when the lengths are equal); ORPO uses one-token prompts: TRL's NLL includes the prompt tokens,
oa's (as the paper) only the reply's (a first token is never a target).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from oa_train.preference.batches import model_part, pair_batch, sequence_sums
from oa_train.training.logprobs import LabelLogProbs

pytest.importorskip("trl")
LOSS_RTOL, GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-3, 1e-6


@pytest.fixture(scope="module")
def trl_trainers(llama_tokenizer_dir, tiny_llama_config):
    """One TRL trainer per kind, each on its own copy of the same tiny model (built once per module)."""
    import datasets
    from transformers import AutoTokenizer, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")
    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    tok.pad_token = tok.unk_token  # id 0
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=256, tie_word_embeddings=False)).float()
    pairs = datasets.Dataset.from_list([{"prompt": "a b", "chosen": " c", "rejected": " d"}] * 2)
    unpaired = datasets.Dataset.from_list([{"prompt": "a", "completion": " c", "label": i % 2 == 0} for i in range(4)])
    common = dict(report_to="none", use_cpu=True, per_device_train_batch_size=2, disable_tqdm=True)
    out = {"weights": copy.deepcopy(model.state_dict())}
    out["dpo"] = DPOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), train_dataset=pairs,
                            processing_class=tok, args=DPOConfig(output_dir="/tmp/oa-trl-dpo", **common))
    out["kto"] = KTOTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), train_dataset=unpaired,
                            processing_class=tok, args=KTOConfig(output_dir="/tmp/oa-trl-kto", **common))
    out["orpo"] = ORPOTrainer(model=copy.deepcopy(model), train_dataset=pairs, processing_class=tok,
                              args=ORPOConfig(output_dir="/tmp/oa-trl-orpo", **common))
    out["cpo"] = CPOTrainer(model=copy.deepcopy(model), train_dataset=pairs, processing_class=tok,
                            args=CPOConfig(output_dir="/tmp/oa-trl-cpo", **common))
    for kind in ("dpo", "kto"):
        out[kind].precompute_ref_logps = True  # reference log-probs come with the inputs
    return out


def _ours(tiny_lm, trl_trainers):
    model = tiny_lm()
    model.load_state_dict(trl_trainers["weights"])
    return model


def _reference(tiny_lm, rows, kind="pair"):
    """Per-example reference log-probs from another model: (B, 2)."""
    ref, plain = tiny_lm(seed=1), LabelLogProbs()
    with torch.no_grad():
        if kind == "pair":
            batch = model_part(pair_batch(rows, 0, packed=False))
            return sequence_sums(plain.tokens(ref, batch), batch)[0].view(len(rows), 2)
        from oa_train.preference.batches import unpaired_batch

        batch = unpaired_batch(rows, 0, packed=False)
        return torch.stack([sequence_sums(plain.tokens(ref, model_part(batch, p)), model_part(batch, p))[0]
                            for p in ("", "kl_")], -1)


def _compare(want, want_model, objective, model, batch):
    want_model.zero_grad()
    want.backward()
    out = objective.loss(model, batch)
    got = out.loss / objective.num_units(batch)
    got.backward()
    torch.testing.assert_close(got, want.detach(), rtol=LOSS_RTOL, atol=1e-6)
    grads = dict(want_model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=name)
    return out


DPO_LOSSES = [(["sigmoid"], None, {}), (["hinge"], None, {}), (["ipo"], None, {}),
              (["robust"], None, {"label_smoothing": 0.2}), (["bco_pair"], None, {}), (["sppo_hard"], None, {}),
              (["nca_pair"], None, {}), (["apo_zero"], None, {}), (["apo_down"], None, {}),
              (["exo_pair"], None, {"label_smoothing": 1e-3}), (["sft"], None, {}),
              (["sigmoid", "sft"], [1.0, 0.2], {}), (["sigmoid", "ipo", "bco_pair"], [0.5, 0.3, 1.0], {}),
              (["example.sigmoid_norm"], None, {})]  # TRL's sigmoid_norm, a third-party loss (plugins/oa-plugin-example)


@pytest.mark.parametrize(("loss_type", "weights", "options"), DPO_LOSSES, ids=["+".join(c[0]) for c in DPO_LOSSES])
def test_dpo_loss_types_equal_trl(loss_type, weights, options, trl_trainers, tiny_lm, pairs, objective):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    rows = pairs(4, seed=3, chosen=5 if "sft" in loss_type else (1, 7))
    ref = _reference(tiny_lm, rows)
    trainer = trl_trainers["dpo"]
    trainer.loss_types = [name.removeprefix("example.") for name in loss_type]
    trainer.loss_weights = weights or [1.0] * len(loss_type)
    trainer.beta, trainer.label_smoothing = 0.1, options.get("label_smoothing", 0.0)
    inputs = DataCollatorForPreference(pad_token_id=0)([{"prompt_ids": r["prompt_input_ids"], "chosen_ids": r["chosen_input_ids"],
                                                         "rejected_ids": r["rejected_input_ids"]} for r in rows])
    inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref[:, 0], ref[:, 1]
    trainer.model.train()
    want = trainer._compute_loss(trainer.model, inputs, False)

    ours = objective("dpo", loss_type=loss_type, loss_weights=weights, beta=0.1, **options)
    batch = ours.collate(rows) | {"ref_logps": ref}
    out = _compare(want, trainer.model, ours, _ours(tiny_lm, trl_trainers), batch)
    metrics = trainer._metrics["train"]
    torch.testing.assert_close(out.metrics["rewards/margins"][0].item() / 4, metrics["rewards/margins"][-1], rtol=1e-3, atol=1e-5)
    assert out.metrics["rewards/accuracies"][0].item() / 4 == metrics["rewards/accuracies"][-1]


def test_cdpo_equals_trl_label_smoothed_sigmoid(trl_trainers):
    """cDPO on the same log-ratios as TRL's label-smoothed sigmoid loss (``CPOTrainer.cpo_loss``)."""
    from oa_core.plugins import get_registry
    from oa_train.preference.losses import PairLogProbs, PreferenceParams

    g = torch.Generator().manual_seed(0)
    logps = [(torch.randn(6, generator=g) * 3 - 20).requires_grad_() for _ in range(4)]
    trainer = trl_trainers["cpo"]
    trainer.loss_type, trainer.label_smoothing, trainer.beta, trainer.alpha = "sigmoid", 0.2, 0.3, 0.0
    want, _, _ = trainer.cpo_loss(logps[0] - logps[2], logps[1] - logps[3])
    ones = torch.ones(6)
    got = get_registry().get("loss", "cdpo").fn(PairLogProbs(logps[0], logps[1], ones, ones, logps[2], logps[3]),
                                                PreferenceParams(beta=0.3, label_smoothing=0.2))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    want_grads = torch.autograd.grad(want.sum(), logps)
    for a, b in zip(torch.autograd.grad(got.sum(), logps), want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_kto_equals_trl(loss_type, trl_trainers, tiny_lm, unpaired, objective):
    rows = unpaired(6, seed=2)
    ref = _reference(tiny_lm, rows, kind="unpaired")
    trainer = trl_trainers["kto"]
    trainer.loss_type, trainer.beta, trainer.desirable_weight, trainer.undesirable_weight = loss_type, 0.1, 1.0, 1.5
    inputs = trainer.data_collator([{"prompt_ids": r["prompt_input_ids"], "completion_ids": r["completion_input_ids"],
                                     "KL_completion_ids": r["kl_input_ids"], "label": r["label"],
                                     "ref_logps": float(ref[i, 0]), "ref_KL_logps": float(ref[i, 1])}
                                    for i, r in enumerate(rows)])
    trainer.model.train()
    want = trainer._compute_loss(trainer.model, inputs, False)

    ours = objective("kto", loss_type=loss_type, beta=0.1, desirable_weight=1.0, undesirable_weight=1.5)
    batch = ours.collate(rows) | {"ref_logps": ref}
    out = _compare(want, trainer.model, ours, _ours(tiny_lm, trl_trainers), batch)
    torch.testing.assert_close(out.metrics["kl"][0].item(), trainer._metrics["train"]["kl"][-1], rtol=1e-3, atol=1e-5)


def _trl_pair_batch(rows):
    """TRL's ORPO/CPO batch: prompt + reply right-padded, labels -100 on the prompt and the padding."""
    out = {}
    for kind in ("chosen", "rejected"):
        seqs = [r["prompt_input_ids"] + r[f"{kind}_input_ids"] for r in rows]
        width = max(map(len, seqs))
        out[f"{kind}_input_ids"] = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        out[f"{kind}_attention_mask"] = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        out[f"{kind}_labels"] = torch.tensor([[-100] * len(r["prompt_input_ids"]) + r[f"{kind}_input_ids"] +
                                              [-100] * (width - len(s)) for r, s in zip(rows, seqs, strict=True)])
    return out


@pytest.mark.parametrize(("method", "options"), [
    ("orpo", {"beta": 0.25}),
    ("cpo", {"beta": 0.1, "cpo_alpha": 1.0, "label_smoothing": 0.1}),
    ("simpo", {"beta": 2.0, "gamma": 0.5, "cpo_alpha": 0.0}),
    ("simpo", {"beta": 2.0, "gamma": 0.5, "cpo_alpha": 0.5, "label_smoothing": 0.1}),
])
def test_reference_free_methods_equal_trl(method, options, trl_trainers, tiny_lm, pairs, objective):
    rows = pairs(4, seed=5, prompt=1 if method == "orpo" else (2, 6), chosen=5)
    if method == "orpo":
        trainer = trl_trainers["orpo"]
        trainer.beta = options["beta"]
    else:
        trainer = trl_trainers["cpo"]
        trainer.loss_type = "sigmoid" if method == "cpo" else "simpo"
        trainer.beta, trainer.cpo_alpha, trainer.alpha = options["beta"], options["cpo_alpha"], 0.0
        trainer.label_smoothing, trainer.simpo_gamma = options.get("label_smoothing", 0.0), options.get("gamma", 0.0)
    trainer.model.train()
    want, metrics = trainer.get_batch_loss_metrics(trainer.model, _trl_pair_batch(rows))
    ours = objective(method, **options)
    out = _compare(want, trainer.model, ours, _ours(tiny_lm, trl_trainers), ours.collate(rows))
    torch.testing.assert_close(out.metrics["rewards/margins"][0].item() / 4, metrics["rewards/margins"], rtol=1e-3, atol=1e-5)
