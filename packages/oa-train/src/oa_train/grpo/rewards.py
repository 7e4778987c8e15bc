"""Calling reward functions on a step's completions without letting one of them stop the run.

Each function (``oa_core.extensions.RewardFunction``) is called once per step with every completion of this
process: ``fn(prompts, completions, **columns, **options) -> list[float | None]``. What can go wrong is reported
by the function's name with the record it happened on, the completions concerned get no score from that function
(NaN: :mod:`oa_train.grpo.advantages` leaves them out of its advantage term) and counted, and the run goes on:

- it raises, or returns something that is not a list of the right length: the call is repeated record by record
  (one prompt's completions at a time), so that only the records it fails on lose their scores;
- it takes longer than ``reward_timeout`` seconds: that call's completions lose their scores (the call is left
  running in a background thread; a function that hangs for good keeps one thread);
- a score is None, not a number, or not finite: that completion loses its score.

A function object may have ``prepare(**options)``: it is called once before the first step (e.g. to load a reward
model), outside the time limit.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

SHOWN = 5  # problem lines printed per function (all are counted)


@dataclass
class Samples:
    """The completions of one step on this process, ``group`` consecutive ones per record."""

    prompts: list[str]  # the prompt of each completion, as text
    completions: list[str]
    columns: dict[str, list[Any]]  # column -> one value per completion
    where: list[str]  # the record of each completion (file:LINE)
    group: int

    def select(self, idx: Sequence[int]) -> Samples:
        return Samples([self.prompts[i] for i in idx], [self.completions[i] for i in idx],
                       {k: [v[i] for i in idx] for k, v in self.columns.items()}, [self.where[i] for i in idx],
                       self.group)


@dataclass
class RewardCall:
    """One configured reward function."""

    name: str  # the label its metrics use
    fn: Any
    weight: float
    options: dict[str, Any]
    columns: tuple[str, ...]


@dataclass
class Problems:
    """What went wrong with a reward function: completions left out by reason, and the first lines."""

    counts: dict[str, int] = field(default_factory=dict)
    shown: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Timeout(Exception):
    pass


def call_with_timeout(fn, args: tuple, kwargs: dict, timeout: float | None):
    """``fn(*args, **kwargs)``, or :class:`Timeout` after ``timeout`` seconds (the call goes on in a daemon thread)."""
    if timeout is None:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True, name="oa-reward")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise Timeout()
    if "error" in box:
        raise box["error"]
    return box["value"]


class RewardScorer:
    """Scores a step's completions with every configured function: an (N, F) float64 tensor, NaN where a function
    gave no score. ``problems[name]`` counts what was left out; ``report`` gets one line per problem shown."""

    def __init__(self, calls: list[RewardCall], timeout: float | None, report=print):
        self.calls, self.timeout, self.report = calls, timeout, report
        self.problems = {c.name: Problems() for c in calls}
        self.step_excluded = {c.name: 0 for c in calls}

    def prepare(self) -> None:
        for call in self.calls:
            prepare = getattr(call.fn, "prepare", None)
            if callable(prepare):
                prepare(**call.options)

    def __call__(self, samples: Samples) -> torch.Tensor:
        out = torch.full((len(samples.completions), len(self.calls)), float("nan"), dtype=torch.float64)
        for j, call in enumerate(self.calls):
            self.step_excluded[call.name] = 0
            for i, value in enumerate(self._scores(call, samples)):
                out[i, j] = value
        return out

    def _scores(self, call: RewardCall, samples: Samples) -> list[float]:
        n = len(samples.completions)
        try:
            raw = self._call(call, samples)
        except Timeout:
            self._left_out(call, "timed out", range(n), samples,
                           f"took longer than reward_timeout {self.timeout:g} s on {n} completions of "
                           f"{n // samples.group} records")
            return [math.nan] * n
        except Exception as e:
            kind, why = "raised", _describe(e)
        else:
            kind, why = "wrong result", _shape_problem(raw, n)
            if why is None:
                return self._values(call, raw, samples)
        if n == samples.group:  # one record: nothing to narrow down
            self._left_out(call, kind, range(n), samples, why)
            return [math.nan] * n
        values: list[float] = []  # record by record, to keep the scores of the records it does score
        for start in range(0, n, samples.group):
            values += self._scores(call, samples.select(range(start, start + samples.group)))
        return values

    def _call(self, call: RewardCall, samples: Samples):
        columns = {c: samples.columns[c] for c in call.columns}
        return call_with_timeout(call.fn, (list(samples.prompts), list(samples.completions)),
                                 {**columns, **call.options}, self.timeout)

    def _values(self, call: RewardCall, raw, samples: Samples) -> list[float]:
        values = []
        for k, value in enumerate(raw):
            number = _number(value)
            if number is None:
                self._left_out(call, "None" if value is None else "not a number", [k], samples, f"returned {_short(value)} for completion "
                               f"{k % samples.group + 1} of {samples.group}")
                number = math.nan
            values.append(number)
        return values

    def _left_out(self, call: RewardCall, kind: str, idx, samples: Samples, why: str) -> None:
        idx = list(idx)
        problems = self.problems[call.name]
        problems.counts[kind] = problems.counts.get(kind, 0) + len(idx)
        self.step_excluded[call.name] += len(idx)
        if problems.shown < SHOWN:
            problems.shown += 1
            more = " (further problems of this function are counted, not shown)" if problems.shown == SHOWN else ""
            self.report(f"warning: reward '{call.name}': {samples.where[idx[0]]}: {why}; left out of this function's "
                        f"advantage ({problems.total} completions so far){more}")


def _shape_problem(raw, n: int) -> str | None:
    if isinstance(raw, str | bytes) or not hasattr(raw, "__len__") or not hasattr(raw, "__iter__"):
        return f"returned {type(raw).__name__}, not a list of {n} scores"
    if len(raw) != n:
        return f"returned {len(raw)} scores for {n} completions"
    return None


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value) if isinstance(value, int | float) or hasattr(value, "__float__") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"raised {type(e).__name__}" + (f": {text[:160]}" if text else "")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
