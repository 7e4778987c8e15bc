"""Options of the OASST dataset formats (the dataset's ``options:`` in a run config, or CLI flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TagField = Literal["lang", "quality", "humor", "creativity", "length"]
TAG_FIELDS: tuple[str, ...] = ("lang", "quality", "humor", "creativity", "length")


class FilterOptions(BaseModel):
    """Which messages to keep. A dropped message drops its whole subtree."""

    model_config = ConfigDict(extra="forbid")

    langs: list[str] | None = Field(None, description="keep only messages in these languages (None: all)")
    tree_states: list[str] | None = Field(None, description="keep only trees in these states (None: all)")
    include_deleted: bool = Field(False, description="keep messages flagged deleted")
    include_synthetic: bool = Field(False, description="keep synthetic (model-written) messages")
    require_review: bool = Field(True, description="keep only messages whose review_result is true")
    min_labels: dict[str, float] = Field(default_factory=dict, description="drop messages with label value below")
    max_labels: dict[str, float] = Field(default_factory=dict, description="drop messages with label value above")
    strict: bool = Field(False, description="fail on the first bad tree instead of skipping it (with a warning)")

    @field_validator("langs", mode="before")
    @classmethod
    def _split_langs(cls, v):
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v


class TopKOptions(FilterOptions):
    """Filters, plus Open-Assistant's ``top_k``: which assistant replies a thread may go through."""

    top_k: int | None = Field(None, ge=1, description="follow only assistant replies ranked below k "
                              "(an unranked one only when it is its parent's only reply)")


class SftOptions(TopKOptions):
    """Threads (root to an assistant reply, Open-Assistant's rule) as conversations."""

    system_tag: bool = Field(False, description="add OA's metadata system message before each assistant reply")
    tag_dropout: float = Field(0.0, ge=0, le=1, description="probability to drop each system-tag field")
    tag_drop: dict[TagField, float] = Field(default_factory=dict, description="per-field drop probability")
    seed: int = Field(0, description="seed of the system-tag dropout (deterministic per message)")

    @field_validator("tag_drop")
    @classmethod
    def _probabilities(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: p for k, p in v.items() if not 0 <= p <= 1}
        if bad:
            raise ValueError(f"drop probabilities must be in [0, 1], got {bad}")
        return v

    def drop_probability(self, field: str) -> float:
        return self.tag_drop.get(field, self.tag_dropout)


class RankedOptions(TopKOptions):
    """Ranked sibling assistant replies (reward-model data); ``top_k`` limits the threads leading to them."""

    min_replies: int = Field(2, ge=2, description="skip forks with fewer ranked replies")


class PairOptions(RankedOptions):
    """Preference pairs from ranked sibling replies."""

    pairs: Literal["best", "all"] = Field("best", description="best vs each worse reply, or every ordered pair")
