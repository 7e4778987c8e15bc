"""Hook implementations of the example plugin."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from oa_core import hookimpl
from oa_core.extensions import DatasetFormat, Loss, RewardFunction
from oa_core.schema import PromptWithReference

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class ExampleOptions(BaseModel):
    """Options of the example plugin (config section ``example:``)."""

    model_config = ConfigDict(extra="forbid")
    tolerance: float = Field(0.0, ge=0, description="absolute tolerance of numeric_answer")


def final_number(text: str) -> float | None:
    """The number after the last ``####`` marker, else the last number in the text."""
    tail = text.rsplit("####", 1)[-1]
    found = NUMBER.findall(tail) or NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def numeric_answer(prompts: list[str], completions: list[str], reference: list[str], tolerance: float = 0.0, **_) -> list[float]:
    """1.0 where the completion's final number equals the reference's, else 0.0."""
    out = []
    for completion, ref in zip(completions, reference, strict=True):
        got, want = final_number(completion), final_number(ref)
        out.append(float(got is not None and want is not None and abs(got - want) <= tolerance))
    return out


def parse_gsm8k(row: dict) -> dict:
    answer = row["answer"]
    if "####" not in answer:
        raise ValueError("field 'answer' has no '#### <number>' final answer")
    return {"prompt": row["question"], "reference": answer.rsplit("####", 1)[1].strip()}


@hookimpl
def register_dataset_formats(register):
    register(
        "example.gsm8k",
        DatasetFormat(PromptWithReference, parse_gsm8k, fields=("question", "answer"),
                      description="GSM8K {question, answer '... #### N'} -> prompt + reference"),
    )


@hookimpl
def register_reward_functions(register):
    register("example.numeric_answer", RewardFunction(
        numeric_answer, description="1 when the completion's final number equals the reference's", columns=("reference",),
        options=ExampleOptions))


def sigmoid_norm(pairs, params):
    """Length-normalised DPO (TRL 1.16's ``sigmoid_norm``): the DPO loss on the log-ratios averaged per reply token,
    so that long replies do not dominate; cf. the length normalisation of SimPO (Meng et al., 2024,
    https://arxiv.org/abs/2405.14734) and R-DPO (Park et al., 2024, https://arxiv.org/abs/2403.19159).

        L = −log σ(β (r_c / n_c − r_r / n_r)),   r = log π_θ(y|x) − log π_ref(y|x),   n = supervised tokens of y

    Args: ``pairs`` (oa_train's ``PairLogProbs``: (B,) policy and reference log-probs and token counts) and
    ``params`` (``PreferenceParams``: ``beta``). Returns: (B,) losses.
    """
    import torch.nn.functional as F  # only oa-train calls this, and it has torch

    chosen = pairs.chosen_logratios / pairs.chosen_tokens.clamp(min=1)
    rejected = pairs.rejected_logratios / pairs.rejected_tokens.clamp(min=1)
    return -F.logsigmoid(params.beta * (chosen - rejected))


@hookimpl
def register_losses(register):
    register("example.sigmoid_norm", Loss(sigmoid_norm, family="preference", needs_reference=True,
                                          description="DPO on log-ratios averaged per reply token"))


@hookimpl
def register_config_sections(register):
    register("example", ExampleOptions)
