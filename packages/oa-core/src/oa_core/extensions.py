"""The objects plugins register through the hooks in :mod:`oa_core.hookspecs`.

Heavy libraries (torch, transformers) are imported inside ``parse``/``apply``/``run``, never at module
import time, so that ``oa plugins list`` and ``oa config validate`` stay fast and torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class DatasetFormat:
    """Turns raw rows into core records.

    ``parse(row)`` (or ``parse(row, options)`` when the format declares an ``options`` model, which
    validates the dataset's ``options:`` in the run config) gets the row with its columns already renamed
    by the dataset's ``field_map`` to the canonical ``fields``, and returns a dict or record of
    ``record_type`` — or, with ``many=True``, a list of them (e.g. one OASST tree -> many threads).
    Formats that must see a whole file at once (e.g. a flat message-per-line export) give
    ``read(path, options) -> Iterable[record]`` instead of, or besides, ``parse``.
    """

    record_type: type[BaseModel]
    parse: Callable[..., Any] | None = None
    fields: tuple[str, ...] = ()
    description: str = ""
    options: type[BaseModel] | None = None
    many: bool = False
    read: Callable[[str, Any], Iterable[Any]] | None = None


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
