"""The objects plugins register through the hooks in :mod:`oa_core.hookspecs`, one type per hook.

All are frozen dataclasses with no heavy imports: torch, transformers or jinja load inside the functions a
plugin gives (``parse``, ``apply``, ``objective``, ``fn`` ...), never when a plugin registers, so that
``oa plugins list`` and ``oa config validate`` stay fast and torch-free.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class DatasetFormat:
    """Turns raw rows into core records (``register_dataset_formats``).

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
class ChatTemplate:
    """A chat template (``register_chat_templates``): jinja text with Hugging Face's conventions
    (``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``), rendered by oa-data in jinja2's
    immutable sandbox.

    ``end_of_turn`` is the string that closes a turn and is supervised with the answer (``None``: inferred
    from the rendering). ``special_tokens`` are strings the tokenizer must know as single tokens (added
    before the model is built). ``variables`` are extra names the jinja text uses (turbo-style templates).
    """

    name: str
    jinja: str
    end_of_turn: str | None = None
    special_tokens: tuple[str, ...] = ()
    description: str = ""
    variables: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class PatchResult:
    """What applying a :class:`ModelPatch` did (``apply`` may also return a plain description string).

    ``applied`` is False when the patch left the model as it was (e.g. a kernel failed its self-test and
    fell back). ``provides`` names capabilities the patched model now has, for the trainers to use:

    - ``"linear_ce"``: ``fn(hidden (N, H), weight (V, H), labels (N,), reduction) -> Tensor``, the
      cross-entropy of ``hidden @ weight.T`` against ``labels`` (-100 ignored; ``reduction`` ``"sum"``, or
      ``"none"`` for per-token values, 0 where ignored) without materialising the logits. oa-train then
      computes label log-probabilities through it instead of through the LM head's logits.
    """

    description: str
    applied: bool = True
    provides: Mapping[str, Callable[..., Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelPatch:
    """Swaps modules/functions of a loaded model in place (``register_model_patches``).

    ``architectures`` are ``config.model_type`` values (``("*",)`` for any); ``apply(model, **options)``
    returns a short description of what it changed, or a :class:`PatchResult`. A patch named
    ``<section>.<name>`` (e.g. ``kernels.rope``) gets the fields of the run config's ``<section>:`` as options.
    """

    apply: Callable[..., str | PatchResult]
    architectures: tuple[str, ...] = ("*",)
    description: str = ""

    def supports(self, model_type: str) -> bool:
        return "*" in self.architectures or model_type in self.architectures


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class Method:
    """A training method (``register_methods``): ``config``, the pydantic model of the ``train:`` section
    (extend oa-train's ``LoopConfig``), and ``objective``, a zero-argument callable (e.g. the class) that
    returns the method's objective for oa-train's shared loop (``oa_train.training.Objective``: its data,
    the loss of one micro-batch, its evaluation). The loop gives every method resume, checkpoints,
    logging, evaluation scheduling and multi-GPU training."""

    config: type[BaseModel]
    objective: Callable[[], Any]
    description: str = ""


@dataclass(frozen=True)
class Loss:
    """A training loss (``register_losses``) that methods select by name.

    ``fn``'s signature is fixed per ``family`` (the kind of method that calls it, e.g. ``"preference"``);
    its docstring should give the paper, the formula and the tensor shapes. ``needs_reference``: the loss
    uses a frozen reference model's log-probabilities.
    """

    fn: Callable[..., Any]
    family: str
    description: str = ""
    needs_reference: bool = False


@dataclass(frozen=True)
class RewardFunction:
    """Scores completions (``register_reward_functions``):
    ``fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]``, one score per
    completion (None: no score for this one). ``columns`` names the dataset columns it needs (e.g.
    ``("reference",)``); ``options`` validates its settings."""

    fn: Callable[..., list[float | None]]
    description: str = ""
    columns: tuple[str, ...] = ()
    options: type[BaseModel] | None = None


# ---------------------------------------------------------------- generation and augmentation


@dataclass(frozen=True)
class Generator:
    """A text-generation backend (``register_generators``): ``load(settings) -> Engine`` (see
    :mod:`oa_core.generation`: prompts and :class:`~oa_core.generation.GenerationParams` in, completions out).
    ``options`` is the settings model (a :class:`~oa_core.generation.GeneratorSettings` subclass)."""

    load: Callable[..., Any]
    description: str = ""
    options: type[BaseModel] | None = None


@dataclass(frozen=True)
class Augmenter:
    """Writes new records from input records (``register_augmenters``), one input record at a time:
    ``augment(record, ctx) -> Iterable[record]`` yields the records made from ``record`` (core records, or dicts
    with their ``kind``), none when it makes nothing (``ctx.drop(reason)`` says why). ``ctx`` is an
    :class:`AugmentContext`: the generator, the prompt template, the options, a random generator and a seed of
    this record's own. ``oa augment`` gives every record it writes the provenance (augmenter, ``version``,
    options, template, generator, model, sampling, seed, source record), journals it and resumes.

    ``options`` validates the augmenter's settings (``options:`` of the config). ``template`` is its default
    prompt template (jinja, rendered in a sandbox by ``ctx.render``); users replace it (``template:``), and may
    use the names in ``variables``. ``needs_generator`` (a bool, or ``fn(options) -> bool``): whether it
    calls ``ctx.generate`` (a config without a generator is refused before anything runs); ``needs_reward``:
    whether it calls ``ctx.score``.
    """

    augment: Callable[[Any, Any], Iterable[Any]]
    description: str = ""
    options: type[BaseModel] | None = None
    version: str = "1"
    template: str | None = None
    variables: tuple[str, ...] = ()
    needs_generator: bool | Callable[[Any], bool] = True
    needs_reward: bool | Callable[[Any], bool] = False


class AugmentContext(Protocol):
    """What an :class:`Augmenter` gets with each input record (``oa augment`` makes it)."""

    index: int  # the record's position in the input (0-based)
    id: str  # its id: ``metadata.id`` when it has one, else its index
    seed: int  # derived from the run's seed, the augmenter's name and ``id``: the same in every run
    rng: random.Random  # seeded with ``seed``: draw every random choice from it
    options: Any  # the validated options (``Augmenter.options``), or a dict
    pool: Sequence[Any]  # every input record (e.g. demonstrations to sample from)

    def generate(self, prompts: Sequence[Any], **params: Any) -> list[list[Any]]:
        """Completions (:class:`~oa_core.generation.Completion`) of ``prompts`` (texts or conversations), with the
        config's generation parameters, ``params`` changed (e.g. ``n=4``) and a seed of this record and call."""
        ...

    def render(self, **variables: Any) -> str:
        """The prompt template (the user's, or the augmenter's ``template``) with ``variables``."""
        ...

    def score(self, prompt: Any, completions: Sequence[str]) -> list[float | None]:
        """The configured reward function's (or reward model's) score of each completion of ``prompt``."""
        ...

    def drop(self, reason: str) -> None:
        """Say why this record made nothing (counted by reason in the summary)."""
        ...


# registry kind -> the type its entries must have (config sections are pydantic model classes)
TYPES: dict[str, type] = {
    "dataset_format": DatasetFormat,
    "chat_template": ChatTemplate,
    "model_patch": ModelPatch,
    "method": Method,
    "loss": Loss,
    "reward_function": RewardFunction,
    "generator": Generator,
    "augmenter": Augmenter,
}
