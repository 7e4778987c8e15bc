"""The ``train:`` section of ``method: rm`` (reward models): the loop's options plus the ranking loss and its
data. Pure pydantic: no torch at import."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from oa_core.config import RegistryRef
from oa_train.training.config import LoopConfig


class RMConfig(LoopConfig):
    """Options of reward-model training: a scalar score per reply, trained to rank replies as people did."""

    loss: Annotated[str, RegistryRef("loss")] = Field(
        "kwise", description="a registered loss of family 'reward' (oa plugins list --kind loss): kwise (Open-Assistant: "
        "mean over each prompt's pairs, then over prompts), pairwise_mean (all pairs pooled), pairwise (Bradley–Terry "
        "with margin and centering, as TRL)")
    beta: float = Field(0.001, ge=0, description="kwise, pairwise_mean: weight of the L2 term β·½(s_i² + s_j²) that "
                        "keeps scores near 0")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="pairwise: weight c of the centering term c·mean((r_c + r_r)²) (TRL's "
        "center_rewards_coefficient; null: off)")
    use_margin: bool = Field(
        False, description="pairwise: subtract each pair's margin (the preference format's margin column) inside the "
        "sigmoid; preference pairs without one are dropped and counted (rankings have none: 0)")
    max_replies: int = Field(5, ge=2, description="replies kept per prompt, the best first (Open-Assistant's "
                             "max_replies); a prompt with K gives C(K, 2) pairs")
    min_prompt_length: int | None = Field(
        None, ge=0, description="tokens of the prompt (its end) kept at least when a sequence is over max_length; "
        "the replies are cut from the right after that (default: max_length // 2)")
    padding_free: bool = Field(
        True, description="every reply of the micro-batch's prompts in one packed row (position ids restarting per "
        "sequence, no padding; flex attention on a GPU unless model.attn_implementation says otherwise); false: a "
        "padded batch")
