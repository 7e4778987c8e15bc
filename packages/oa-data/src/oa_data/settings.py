"""The `data:` section of run configs (registered by oa-data as a config section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Strict):
    """How records become token sequences: template, loss mask, truncation, packing, mixing, cache."""
