"""The objects plugins register through the hooks in :mod:`oa_core.hookspecs`.

Heavy libraries (torch, transformers) are imported inside ``parse``/``apply``/``run``, never at module
import time, so that ``oa plugins list`` and ``oa config validate`` stay fast and torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class DatasetFormat:
    """Turns one raw row into one core record.

    ``parse(row)`` gets the row with its columns already renamed by the dataset's ``field_map`` to the
    canonical ``fields`` and returns a dict (or record) validated as ``record_type``.
    """

    record_type: type[BaseModel]
    parse: Callable[[dict[str, Any]], Any]
    fields: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ModelPatch:
    """Swaps modules/functions of a loaded model in place.

    ``architectures`` are ``config.model_type`` values (``("*",)`` for any); ``apply(model, **options)``
    returns a short description of what it changed (for the run manifest and logs).
    """

    apply: Callable[..., str]
    architectures: tuple[str, ...] = ("*",)
    description: str = ""

    def supports(self, model_type: str) -> bool:
        return "*" in self.architectures or model_type in self.architectures


@dataclass(frozen=True)
class Method:
    """A training method: the pydantic model of its ``train:`` section and the function that runs it."""

    config: type[BaseModel]
    run: Callable[..., Any]
    description: str = ""
