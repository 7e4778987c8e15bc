"""GRPO (``method: grpo``) on the shared loop.

Per optimizer step the loop draws ``per_device_batch_size × gradient_accumulation_steps / num_generations``
prompts on each process (:meth:`GRPOObjective.data_plan`); :meth:`GRPOObjective.make_batches` turns them into the
step's micro-batches: ``num_generations`` completions per prompt from the current policy
(:mod:`oa_train.grpo.rollout`), their rewards (:mod:`oa_train.grpo.rewards`), group-relative advantages
(:mod:`oa_train.grpo.advantages`), and — when needed — the log-probs of the generating policy (``num_iterations >
1``) and of the reference (``beta > 0``), computed through the same label log-prob route as the loss (the fused
linear-CE kernel when patched). The generation batch is reused for ``num_iterations`` steps; it is part of the
checkpoint, and each generation is seeded from ``(seed, step, process)``, so a resumed run continues exactly.

:meth:`GRPOObjective.loss` computes the policy's log-probs of the completion tokens and hands them to the loss
``train.loss_type`` names (family ``grpo``, :mod:`oa_train.grpo.losses`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from oa_core.errors import OAError
from oa_train.grpo.advantages import group_advantages, nanstd
from oa_train.grpo.losses import PolicyTerms, num_units, policy_tallies
from oa_train.grpo.rewards import RewardCall, RewardScorer, Samples
from oa_train.training.batching import IGNORE, micro_batches
from oa_train.training.frozen import frozen_starting_model
from oa_train.training.objective import DataPlan, Evaluation, Objective, StepLoss
from oa_train.training.sharding import whole_weights

MODEL_KEYS = ("input_ids", "attention_mask", "labels")
UNIT_NAMES = {"sequences": "completions", "tokens": "tokens", "micro_batches": "micro_batches"}


def _say(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)


class GRPOObjective(Objective):
    """Group-relative policy optimisation and its variants (module docstring)."""

    unit = "completions"

    def __init__(self, *, rollout=None):
        self._rollout_override = rollout  # tests: a rollout object instead of the one train.generator names

    # ------------------------------------------------------------------ set-up

    def check(self, config) -> None:
        if not config.datasets:
            raise OAError("datasets: no prompts configured", hint="add at least one entry under datasets:")

    def setup(self, run) -> None:
        from accelerate.utils import DistributedType

        from oa_core.plugins import get_registry
        from oa_train.grpo.rollout import make_rollout

        if run.accelerator.distributed_type == DistributedType.FSDP:  # generate() would hang on per-layer gathers
            raise OAError("method grpo: not supported under FSDP (the processes generate different numbers of tokens, "
                          "and FSDP gathers each layer's weights collectively)",
                          hint="use DDP (no --accelerate-config) or a DeepSpeed preset (zero2.yaml, zero3.yaml)")
        super().setup(run)
        tc, registry = run.train, get_registry()
        self.loss_fn = registry.get("loss", tc.loss_type).fn
        unit = getattr(self.loss_fn, "unit", None)
        if unit not in UNIT_NAMES:
            raise OAError(f"train.loss_type: loss '{tc.loss_type}' declares no unit (fn.unit: one of "
                          f"{', '.join(UNIT_NAMES)})", hint="see oa_train.grpo.losses")
        self.loss_unit, self.unit = unit, UNIT_NAMES[unit]
        calls = []
        for spec in tc.rewards:
            entry = registry.get("reward_function", spec.function)
            options = entry.options.model_validate(spec.options).model_dump() if entry.options else {}
            calls.append(RewardCall(spec.label, entry.fn, spec.weight, options, tuple(entry.columns)))
        self.scorer = RewardScorer(calls, tc.reward_timeout, report=_say)
        self.weights = torch.tensor([c.weight for c in calls], dtype=torch.float64)
        self.rollout = self._rollout_override or make_rollout(run)
        self.measure_mismatch = tc.logprob_mismatch == "on" or (tc.logprob_mismatch == "auto" and tc.generator == "vllm")
        self.measure_mismatch = self.measure_mismatch and tc.temperature == 1.0
        self.reference = None
        if tc.beta != 0.0 and not _is_peft(run.model):  # the initial weights (taken before a resume loads others)
            self.reference = frozen_starting_model(run, run.label_logprobs.linear_ce, self.model_options(run.config),
                                                   key="train.beta")
        self.buffer: list[dict[str, torch.Tensor]] | None = None
        self.buffer_step: int | None = None
        self.values: dict[str, float] = {}  # the step's metrics from the rollout
        self.mismatch: list[float] | None = None  # this step's [gap sum, tokens, max gap] (logprob mismatch)
        self.data_report = {}

    def data_plan(self, train) -> DataPlan:
        """Prompts, not completions: one draw of ``per_device_batch_size × gradient_accumulation_steps /
        num_generations`` prompts per process for every ``num_iterations`` steps."""
        prompts = train.per_device_batch_size * train.gradient_accumulation_steps // train.num_generations
        return DataPlan(batch_size=max(prompts, 1), micro_batches=1, steps_per_draw=train.num_iterations)

    def prepare_data(self):
        from oa_train.checks import model_positions
        from oa_train.grpo.data import prepare_prompts
        from oa_train.sft.objective import data_file_digests

        run, tc = self.run, self.run.train
        limit = tc.max_prompt_length
        if limit is None and (positions := _positions(run.model) or model_positions(run.config)) is not None:
            limit = max(positions - tc.max_completion_length, 1)
        columns = {c.name: c.columns for c in self.scorer.calls}
        splits = {name: prepare_prompts(run.config, run.tokenizer, name, columns=columns, max_prompt_length=limit)
                  for name in ("train", "eval")}
        splits = {name: split for name, split in splits.items() if split is not None}
        self.data_report = {f"{name}_prompts": len(split.rows) for name, split in splits.items()}
        self.data_report["datasets"] = {name: {source: r.to_dict() for source, r in split.reports.items()}
                                        for name, split in splits.items()}
        self.data_report["files"] = data_file_digests(run.config)
        self.data_report["max_prompt_length"] = limit
        self.data_report["reward_problems"] = {c.name: self.scorer.problems[c.name].counts for c in self.scorer.calls}
        if run.accelerator.is_main_process:
            print("\n".join(line for name, split in splits.items() for line in split.lines(name)))
        self.scorer.prepare()
        return splits["train"].rows, splits["eval"].rows if "eval" in splits else []

    # ------------------------------------------------------------------ rollouts

    def make_batches(self, model, examples, step):
        tc = self.run.train
        if step % tc.num_iterations == 0 or self.buffer is None:
            if step % tc.num_iterations != 0:
                _say(f"warning: step {step + 1} continues a generation batch that is not in the checkpoint; "
                     "generating a new one")
            self.buffer, self.buffer_step = self._rollout(model, examples[0], step), step
            return self.buffer
        self.values = {}
        return [{k: v for k, v in b.items() if k != "sampling_logps"} for b in self.buffer]

    def _seed(self, step: int, rank: int) -> int:
        key = f"{self.run.config.seed}:{step}:{rank}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF

    def generation_params(self, n: int, seed: int, *, temperature: float | None = None, logprobs: bool = False):
        from oa_core.generation import GenerationParams

        tc = self.run.train
        return GenerationParams(max_new_tokens=tc.max_completion_length, n=n, seed=seed, stop=list(tc.stop),
                                temperature=tc.temperature if temperature is None else temperature, top_p=tc.top_p,
                                top_k=tc.top_k, repetition_penalty=tc.repetition_penalty, logprobs=logprobs)

    @torch.no_grad()
    def _rollout(self, model, rows: list[dict], step: int) -> list[dict[str, torch.Tensor]]:
        tc, acc = self.run.train, self.run.accelerator
        group = tc.num_generations
        net = acc.unwrap_model(model)
        params = self.generation_params(group, self._seed(step, acc.process_index), logprobs=self.measure_mismatch)
        with whole_weights(model, acc), acc.autocast():
            generated = self.rollout.generate(net, [r["prompt"] for r in rows], params)
        completions = [c for per_prompt in generated for c in per_prompt]
        owners = [r for r in rows for _ in range(group)]
        samples = Samples([r["text"] for r in owners], [c.text for c in completions],
                          {k: [r["columns"][k] for r in owners] for k in rows[0]["columns"]},
                          [r["where"] for r in owners], group)
        scores = self.scorer(samples)
        adv = group_advantages(scores, self.weights, group, tc.scale_rewards, gather=lambda t: _gather(acc, t))
        truncated = [c.finish_reason == "length" for c in completions]
        batches = []
        size = tc.per_device_batch_size
        for start in range(0, len(completions), size):
            part = range(start, min(start + size, len(completions)))
            batch = self._collate([owners[i]["prompt_ids"] for i in part], [completions[i] for i in part],
                                  [truncated[i] for i in part], adv.values[list(part)])
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            if tc.num_iterations > 1:  # the generating policy's log-probs: the old policy of later steps
                batch["old_logps"] = self._logps(model, batch)
            if tc.beta != 0.0:
                batch["ref_logps"] = self._reference_logps(model, batch)
            batches.append(batch)
        self.values = self._rollout_metrics(scores, adv, completions, truncated)
        if self.measure_mismatch and tc.num_iterations > 1:  # the generating policy's log-probs are computed already
            self._mismatch([(b["old_logps"], b["sampling_logps"], b["completion_mask"]) for b in batches])
        self._log_completions(step, samples, scores, adv)
        self.rollout.updated()  # the next generation follows this step's update
        return batches

    def _collate(self, prompts: list[list[int]], completions: list, truncated: list[bool],
                 advantages: torch.Tensor) -> dict[str, torch.Tensor]:
        """Right-padded rows ``prompt + completion`` with the completion tokens as labels, and the (B, T)
        completion-aligned index into the (B·(S-1)) label log-probs, mask and advantages."""
        tc = self.run.train
        rows = [list(p) + list(c.token_ids) for p, c in zip(prompts, completions, strict=True)]
        width = max(len(r) for r in rows)
        longest = max(max(len(c.token_ids) for c in completions), 1)
        b = len(rows)
        input_ids = torch.full((b, width), self.run.pad_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE, dtype=torch.long)
        attention = torch.zeros((b, width), dtype=torch.long)
        index = torch.zeros((b, longest), dtype=torch.long)
        mask = torch.zeros((b, longest), dtype=torch.float32)
        sampling = torch.zeros((b, longest), dtype=torch.float32)
        for i, (p, c, row) in enumerate(zip(prompts, completions, rows, strict=True)):
            n, k = len(row), len(c.token_ids)
            input_ids[i, :n] = torch.tensor(row)
            attention[i, :n] = 1
            labels[i, len(p):n] = torch.tensor(list(c.token_ids), dtype=torch.long)
            index[i, :k] = i * (width - 1) + torch.arange(len(p) - 1, len(p) - 1 + k)
            mask[i, :k] = 0.0 if (truncated[i] and tc.mask_truncated_completions) else 1.0
            if c.logprobs is not None:
                sampling[i, :k] = torch.tensor(c.logprobs[:k], dtype=torch.float32)
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "completion_index": index,
               "completion_mask": mask, "advantages": advantages.float()}
        if self.measure_mismatch:
            out["sampling_logps"] = sampling
        return out

    def _token_logps(self, model, batch, *, entropy: bool = False, label_logprobs=None):
        lp = (label_logprobs or self.run.label_logprobs).tokens(
            model, {k: batch[k] for k in MODEL_KEYS}, temperature=self.run.train.temperature, entropy=entropy)
        index = batch["completion_index"]
        logps = lp.values.flatten()[index.flatten()].view_as(index)
        ent = lp.entropy.flatten()[index.flatten()].view_as(index) if lp.entropy is not None else None
        return logps, ent

    def _logps(self, model, batch) -> torch.Tensor:
        with self.run.accelerator.autocast():
            return self._token_logps(model, batch)[0].detach()

    def _reference_logps(self, model, batch) -> torch.Tensor:
        """The reference policy's log-probs: the model with its adapters disabled (PEFT), else the frozen copy of
        the initial model."""
        acc = self.run.accelerator
        if self.reference is None:
            with acc.unwrap_model(model).disable_adapter(), acc.autocast():
                return self._token_logps(model, batch)[0].detach()
        ref, label_logprobs = self.reference.ready()
        with acc.autocast():
            return self._token_logps(ref, batch, label_logprobs=label_logprobs)[0].detach()

    # ------------------------------------------------------------------ loss

    def num_units(self, batch) -> int:
        return num_units(self.loss_unit, batch["completion_mask"])

    def loss(self, model, batch) -> StepLoss:
        tc = self.run.train
        logps, entropy = self._token_logps(model, batch, entropy=True)
        mask = batch["completion_mask"]
        old = batch.get("old_logps")
        terms = PolicyTerms(logps, logps.detach() if old is None else old, batch["advantages"], mask,
                            batch.get("ref_logps"))
        metrics = dict(policy_tallies(terms, tc))
        if entropy is not None:
            metrics["entropy"] = ((entropy * mask).sum(), mask.sum())
        if "sampling_logps" in batch and old is None:  # first use of fresh completions: the trainer's own log-probs
            self._mismatch([(logps.detach(), batch["sampling_logps"], mask)])
        return StepLoss(self.loss_fn(terms, tc), metrics)

    def _mismatch(self, parts) -> None:
        """Add |trainer log-prob - generator log-prob| over the counted tokens of ``parts`` to this step's tally
        (reported by :meth:`step_metrics` for all processes: mean and max)."""
        tally = self.mismatch if self.mismatch is not None else [0.0, 0.0, 0.0]
        for trainer, sampler, mask in parts:
            gap = (trainer.float() - sampler.to(trainer.device).float()).abs() * mask
            tally[0] += float(gap.sum())
            tally[1] += float(mask.sum())
            tally[2] = max(tally[2], float(gap.max()) if gap.numel() else 0.0)
        self.mismatch = tally

    def step_metrics(self) -> dict[str, float]:
        values, self.values = self.values, {}
        if self.mismatch is not None:  # a generation step: every process measured (maybe nothing)
            total, count, top = _gather(self.run.accelerator, torch.tensor(
                [self.mismatch], dtype=torch.float64, device=self.run.device)).view(-1, 3).unbind(-1)
            if float(count.sum()):
                values["logprob_mismatch/mean"] = float(total.sum() / count.sum())
                values["logprob_mismatch/max"] = float(top.max())
            self.mismatch = None
        return values

    # ------------------------------------------------------------------ metrics and logs

    def _rollout_metrics(self, scores, adv, completions, truncated) -> dict[str, float]:
        acc = self.run.accelerator
        everything = _gather(acc, scores.to(acc.device)).double().cpu()
        rewards = _gather(acc, adv.rewards.to(acc.device)).double().cpu()
        advantages = _gather(acc, adv.values.to(acc.device)).double().cpu()
        zero = _gather(acc, adv.zero_std.to(acc.device)).double().cpu()
        lengths = _gather(acc, torch.tensor([float(len(c.token_ids)) for c in completions], device=acc.device)).cpu()
        cut = _gather(acc, torch.tensor([float(t) for t in truncated], device=acc.device)).cpu()
        left_out = _gather(acc, torch.tensor([float(n) for n in self.scorer.step_excluded.values()],
                                             device=acc.device).view(1, -1)).sum(0).cpu()
        out = {"reward": _finite(torch.nanmean(rewards)), "reward_std": _finite(nanstd(rewards))}
        for j, call in enumerate(self.scorer.calls):
            out[f"rewards/{call.name}/mean"] = _finite(torch.nanmean(everything[:, j]))
            out[f"rewards/{call.name}/std"] = _finite(nanstd(everything[:, j]))
            out[f"rewards/{call.name}/left_out"] = float(left_out[j])
        out |= {"advantages/std": _finite(advantages.std()), "advantages/min": float(advantages.min()),
                "advantages/max": float(advantages.max()), "frac_reward_zero_std": float(zero.mean()),
                "completions/mean_length": float(lengths.mean()), "completions/max_length": float(lengths.max()),
                "completions/min_length": float(lengths.min()), "completions/clipped_ratio": float(cut.mean())}
        return {k: v for k, v in out.items() if v is not None}

    def _log_completions(self, step: int, samples: Samples, scores, adv) -> None:
        """Every ``log_completions_steps`` steps: this process's completions into ``completions.jsonl`` (main
        process) and the first few on the terminal."""
        tc, run = self.run.train, self.run
        done = step + 1
        if not tc.log_completions_steps or done % tc.log_completions_steps != 0 or not run.accelerator.is_main_process:
            return
        names = [c.name for c in self.scorer.calls]
        rows = [{"step": done, "where": samples.where[i], "prompt": samples.prompts[i],
                 "completion": samples.completions[i],
                 "rewards": {n: None if math.isnan(v) else v for n, v in zip(names, scores[i].tolist(), strict=True)},
                 "reward": None if math.isnan(adv.rewards[i]) else float(adv.rewards[i]),
                 "advantage": float(adv.values[i])} for i in range(len(samples.completions))]
        path = Path(run.output_dir) / "completions.jsonl"
        from oa_core.io import atomic_write_text

        old = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
        kept = [line for line in old if json.loads(line)["step"] < done]  # a resumed run writes its steps again
        atomic_write_text(path, "".join(kept + [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]))
        for r in rows[: tc.num_completions_to_print]:
            reward = "n/a" if r["reward"] is None else f"{r['reward']:.3g}"
            _say(f"step {done} completion (reward {reward}, advantage {r['advantage']:+.2f}): "
                 f"{r['prompt'][-60:]!r} -> {r['completion'][:100]!r}")

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, model, examples) -> Evaluation:
        """One completion per eval prompt (``eval_temperature``; greedy by default), scored by every reward
        function: ``eval_reward`` (the weighted sum), ``eval_reward_<name>``, ``eval_completion_length``."""
        run, tc, acc = self.run, self.run.train, self.run.accelerator
        net = acc.unwrap_model(model)
        calls = self.scorer.calls
        totals = torch.zeros(3 + 2 * len(calls), dtype=torch.float64)  # reward sum, scored, length, per function
        size = tc.per_device_eval_batch_size or max(tc.per_device_batch_size // tc.num_generations, 1)
        samples_out = []
        for slots in micro_batches(len(examples), batch_size=size, num_processes=acc.num_processes,
                                   rank=acc.process_index, shuffle=False):
            rows = [examples[s.index] for s in slots]
            params = self.generation_params(1, run.config.seed, temperature=tc.eval_temperature)
            with acc.autocast():
                generated = self.rollout.generate(net, [r["prompt"] for r in rows], params)
            completions = [per_prompt[0] for per_prompt in generated]
            counted = [i for i, s in enumerate(slots) if s.counted]
            if not counted:
                continue
            rows, completions = [rows[i] for i in counted], [completions[i] for i in counted]
            samples = Samples([r["text"] for r in rows], [c.text for c in completions],
                              {k: [r["columns"][k] for r in rows] for k in rows[0]["columns"]},
                              [r["where"] for r in rows], 1)
            scores = self.scorer(samples)
            adv = group_advantages(scores, self.weights, 1, "none")
            scored = ~torch.isnan(adv.rewards)
            totals[0] += adv.rewards[scored].sum()
            totals[1] += scored.sum()
            totals[2] += sum(len(c.token_ids) for c in completions)
            for j in range(len(calls)):
                present = ~torch.isnan(scores[:, j])
                totals[3 + 2 * j] += scores[present, j].sum()
                totals[4 + 2 * j] += present.sum()
            if len(samples_out) < 4:
                samples_out += [{"prompt": r["text"], "prediction": c.text, "reference": str(r["columns"].get(
                    "reference") or "")} for r, c in zip(rows, completions, strict=True)][: 4 - len(samples_out)]
        totals = acc.reduce(totals.to(acc.device), reduction="sum").cpu().tolist()
        metrics = {"eval_reward": totals[0] / max(totals[1], 1), "eval_completion_length": totals[2] / max(
            len(examples), 1)}
        for j, call in enumerate(calls):
            metrics[f"eval_reward_{call.name}"] = totals[3 + 2 * j] / max(totals[4 + 2 * j], 1)
        return Evaluation(metrics, samples_out)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self):
        tensors = {}
        for i, batch in enumerate(self.buffer or []):
            tensors |= {f"buffer.{i}.{k}": v for k, v in batch.items()}
        meta = {"buffer_step": self.buffer_step, "batches": len(self.buffer or []),
                "reward_problems": {name: p.counts for name, p in self.scorer.problems.items()},
                "reward_problems_shown": {name: p.shown for name, p in self.scorer.problems.items()}}
        return tensors, meta

    def load_state_dict(self, tensors, meta) -> None:
        if meta.get("batches"):
            self.buffer = [{k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"buffer.{i}.")}
                           for i in range(meta["batches"])]
            self.buffer_step = meta["buffer_step"]
        for name, counts in meta.get("reward_problems", {}).items():
            if name in self.scorer.problems:
                self.scorer.problems[name].counts.clear()
                self.scorer.problems[name].counts.update(counts)
                self.scorer.problems[name].shown = meta.get("reward_problems_shown", {}).get(name, 0)


def _gather(acc, tensor: torch.Tensor) -> torch.Tensor:
    return acc.gather(tensor) if acc.num_processes > 1 else tensor


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _positions(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def run_grpo(loaded, *, callbacks=(), rollout=None) -> dict:
    """Train ``loaded`` (``method: grpo``) on the shared loop; returns the final record."""
    from oa_train.training.loop import Loop

    return Loop(loaded, GRPOObjective(rollout=rollout), callbacks=callbacks).run()
