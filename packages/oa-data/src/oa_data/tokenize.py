"""Records -> token ids and labels.

Loss masks are derived twice (three times for templates with generation markers) and must agree:

1. from message boundaries: the conversation is rendered once with a marker in place of each message's
   content, which locates every message in the real rendering; a supervised span runs from the content
   to the end of the end-of-turn string that follows it;
2. from incremental prefix rendering: ``render(messages[:i], add_generation_prompt=True)`` ends where
   answer ``i`` starts (after any whitespace the template itself puts before the content), and the
   end-of-turn string that ends ``render(messages[:i + 1])`` closes it;
3. for templates with ``{% generation %}`` ... ``{% endgeneration %}`` blocks (Hugging Face's assistant
   markers): apart from whitespace, the blocks hold exactly every assistant message's content and end of turn.

A span starts with the content as rendered, leading whitespace included (as Hugging Face's and TRL's
assistant masks do). Character spans become token masks through the tokenizer's offsets (a token is
supervised when it overlaps a span).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from types import SimpleNamespace
from typing import Any

import numpy as np

from oa_core.errors import OAError, RecordError
from oa_core.schema import Conversation, Message, PreferencePair, PromptCompletion, Text
from oa_data.templates import (
    ChatTemplate,
    TemplateError,
    has_generation_markers,
    render,
    render_generation,
    template_variables,
    with_end_of_turn,
)

IGNORE_INDEX = -100
_MARK = "\ue000{}\ue001"
_MARK_RE = re.compile("\ue000(\\d+)\ue001")
_DUMMY = ("\ue002", "\ue003")
_RESERVED = re.compile("[\ue000-\ue005]")  # ours, and the generation marks


@dataclass
class Encoded:
    """Token ids, labels (``IGNORE_INDEX`` where not supervised), and the token span of each
    message's turn (header, content, end of turn; tokens outside every turn, e.g. a leading bos, belong
    to no message)."""

    input_ids: list[int]
    labels: list[int]
    turns: list[tuple[int, int]] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_supervised(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


def where(source: str | None, index: int | None) -> str:
    """``source: record i`` for error messages."""
    src = source or "<data>"
    return src if index is None else f"{src}: record {index}"


def supervision_flags(messages: Sequence[Message | Mapping], settings: Any) -> list[bool]:
    """Whether each message is trained on: its ``train`` flag, else the policy of ``settings``
    (``train_on_inputs``: all; ``only_answer_loss``: the last assistant message; default: assistants)."""
    roles = [_get(m, "role") for m in messages]
    last_answer = max((i for i, r in enumerate(roles) if r == "assistant"), default=-1)
    flags = []
    for i, m in enumerate(messages):
        train = _get(m, "train")
        if train is not None:
            flags.append(bool(train))
        elif settings.train_on_inputs:
            flags.append(True)
        elif settings.only_answer_loss:
            flags.append(i == last_answer)
        else:
            flags.append(roles[i] == "assistant")
    return flags


@dataclass
class Rendering:
    """A rendered conversation and the character spans of its supervised (``base`` False) or
    unsupervised (``base`` True, i.e. ``train_on_inputs``) messages, by both methods."""

    text: str
    boundary_spans: dict[int, tuple[int, int]]
    prefix_spans: dict[int, tuple[int, int]]
    turn_ends: list[int]
    base: bool


def render_with_spans(messages: Sequence[Message | Mapping], tokenizer: Any, template: ChatTemplate,
                      settings: Any, cross_check: bool = True) -> Rendering:
    """Render ``messages`` and derive the spans whose mask differs from the policy's base, twice
    (``cross_check=False``: once, from message boundaries; the turn ends are then unknown)."""
    msgs = [_as_dict(m) for m in messages]
    flags = supervision_flags(messages, settings)
    base = bool(settings.train_on_inputs)
    marked = [i for i, f in enumerate(flags) if f != base]
    eot = template.end_of_turn or with_end_of_turn(template, tokenizer).end_of_turn
    variables = template_variables(tokenizer)
    text = render(template, msgs, **variables)
    found = _locate_messages(template, msgs, text, variables)
    spans_a = _spans_from_boundaries(template, msgs, text, found, marked, eot)
    if not cross_check:
        return Rendering(text, spans_a, spans_a, [], base)
    spans_b, bounds = _spans_from_prefixes(template, msgs, text, marked, eot, variables)
    if has_generation_markers(template):
        _check_generation_blocks(template, msgs, text, found, eot, variables)
    return Rendering(text, spans_a, spans_b, bounds, base)


def encode_messages(
    messages: Sequence[Message | Mapping],
    tokenizer: Any,
    template: ChatTemplate,
    settings: Any,
    *,
    index: int | None = None,
    source: str | None = None,
    check: bool = True,
) -> Encoded:
    """Render ``messages`` with ``template``, tokenize, and mask: see the module docstring.
    ``check``: fail on samples with no (or, without ``train_on_inputs``, only) supervised tokens."""
    at = where(source, index)
    r = _render(messages, tokenizer, template, settings, at)
    ids, offsets = _tokenize(tokenizer, [r.text])[0]
    return _masked(r, ids, offsets, messages, at, check)


def _render(messages, tokenizer, template, settings, at: str, cross_check: bool = True) -> Rendering:
    try:
        return render_with_spans(messages, tokenizer, template, settings, cross_check)
    except OAError as e:
        raise RecordError(f"{at}: {e.message}", hint=e.hint) from None


def _masked(r: Rendering, ids: list[int], offsets, messages, at: str, check: bool) -> Encoded:
    """The :class:`Encoded` of a rendering: token masks from both span sets, which must agree."""
    text, spans_a, spans_b, bounds, base = r.text, r.boundary_spans, r.prefix_spans, r.turn_ends, r.base
    mask_a = _token_mask(offsets, spans_a.values(), base, len(text))
    mask_b = _token_mask(offsets, spans_b.values(), base, len(text))
    if not np.array_equal(mask_a, mask_b):
        k = int(np.argmax(mask_a != mask_b))
        msg = next((i for i, s in [*spans_a.items(), *spans_b.items()] if _overlaps(tuple(offsets[k]), s)), None)
        raise RecordError(
            f"{at}: loss masks from message boundaries and from prefix rendering disagree at token {k} "
            f"({text[offsets[k][0]:offsets[k][1]]!r}, message {msg})",
            hint="the chat template renders a turn differently depending on its context; use another template",
        )
    tok = np.searchsorted(offsets[:, 0], bounds, side="left").tolist() if len(offsets) else [0] * len(bounds)
    labels = np.where(mask_a, np.asarray(ids), IGNORE_INDEX).tolist()
    enc = Encoded(ids, labels, [(tok[i], tok[i + 1]) for i in range(len(bounds) - 1)], [_get(m, "role") for m in messages])
    if check:
        _check_sample(enc, at, base)
    return enc


def encode_records(records: Sequence[Any], tokenizer: Any, template: ChatTemplate | None, settings: Any, *,
                   origins: Sequence[tuple[str | None, int | None]] | None = None,
                   cross_check: Sequence[bool] | None = None) -> list[Encoded]:
    """:func:`encode_record` for many records at once: renders each, then tokenizes all texts in one
    batched (multi-threaded) tokenizer call. ``origins[k]`` is ``(source, index)`` of ``records[k]``
    for error messages; ``cross_check[k]`` False skips the prefix-rendering check of record ``k`` (its
    ``turns`` are then empty: encode it again with the check before truncating it by turns)."""
    origins = origins or [(None, k) for k in range(len(records))]
    cross_check = cross_check or [True] * len(records)
    texts, plans = [], []
    for record, (source, index), check in zip(records, origins, cross_check, strict=True):
        at = where(source, index)
        if isinstance(record, Text):
            texts.append(record.text)
            plans.append((None, None, at))
            continue
        messages = _messages_of(record, settings)
        if messages is None:
            raise _not_encodable(record, at)
        rendering = _render(messages, tokenizer, template, settings, at, check)
        texts.append(rendering.text)
        plans.append((rendering, messages, at))
    out = []
    for (rendering, messages, at), (ids, offsets) in zip(plans, _tokenize(tokenizer, texts), strict=True):
        out.append(_text_encoded(ids, tokenizer) if rendering is None else _masked(rendering, ids, offsets, messages, at, True))
    return out


@dataclass(frozen=True)
class Reencoder:
    """``reencode(kept)``: the encoding of the messages numbered ``kept``, for ``truncate(..., reencode=...)``:
    truncation by whole messages that renders exactly what the template gives the shorter chat."""

    messages: list
    tokenizer: Any
    template: ChatTemplate
    settings: Any
    index: int | None = None
    source: str | None = None

    def __call__(self, kept: list[int]) -> Encoded:
        return encode_messages([self.messages[i] for i in kept], self.tokenizer, self.template, self.settings,
                               index=self.index, source=self.source, check=False)

    @property
    def answers(self) -> list[int]:
        """The assistant messages that the policy trains on when they end the conversation: where a cut
        leaves a sample ending on a supervised answer."""
        return [i for i, m in enumerate(self.messages) if _get(m, "role") == "assistant"
                and supervision_flags(self.messages[:i + 1], self.settings)[-1]]


def reencoder(source_messages: Any, tokenizer: Any, template: ChatTemplate, settings: Any, *,
              index: int | None = None, source: str | None = None) -> Reencoder | None:
    """The :class:`Reencoder` of a record (``Conversation``, ``PromptCompletion``) or message list;
    ``None`` for other records."""
    messages = _messages_of(source_messages, settings)
    return None if messages is None else Reencoder(messages, tokenizer, template, settings, index, source)


def encode_text(record: Text, tokenizer: Any) -> Encoded:
    """Plain text: ``bos`` (when distinct from eos) + text + ``eos``, every token supervised."""
    return _text_encoded(list(tokenizer(record.text, add_special_tokens=False)["input_ids"]), tokenizer)


def _text_encoded(ids: list[int], tokenizer: Any) -> Encoded:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and bos != eos:
        ids.insert(0, bos)
    if eos is not None:
        ids.append(eos)
    return Encoded(ids, list(ids), [(0, len(ids))], ["text"])


def encode_record(record: Any, tokenizer: Any, template: ChatTemplate, settings: Any, *,
                  index: int | None = None, source: str | None = None) -> Encoded:
    """Encode a ``Conversation``, ``Text`` or ``PromptCompletion`` (the completion is supervised)."""
    if isinstance(record, Text):
        return encode_text(record, tokenizer)
    messages = _messages_of(record, settings)
    if messages is None:
        raise _not_encodable(record, where(source, index))
    return encode_messages(messages, tokenizer, template, settings, index=index, source=source)


def _not_encodable(record: Any, at: str) -> RecordError:
    return RecordError(f"{at}: a '{getattr(record, 'kind', type(record).__name__)}' record "
                       "cannot be encoded for supervised training",
                       hint="use conversation, text or prompt_completion records (preference pairs: encode_preference)")


def encode_preference(record: PreferencePair, tokenizer: Any, template: ChatTemplate, settings: Any, *,
                      index: int | None = None, source: str | None = None) -> dict[str, list[int]]:
    """A preference pair as ``prompt_input_ids`` (ending with the generation prompt) and the
    ``chosen``/``rejected`` continuations' ``*_input_ids`` and ``*_labels``. The prompt is never trained on,
    whatever the policy of ``settings`` (kept for a signature uniform with :func:`encode_record`)."""
    out: dict[str, list[int]] = {}
    answers_only = SimpleNamespace(train_on_inputs=False, only_answer_loss=False)
    prompt = [m.model_copy(update={"train": False}) for m in record.prompt]
    for key in ("chosen", "rejected"):
        answer = [m if m.train is not None else m.model_copy(update={"train": True}) for m in getattr(record, key)]
        enc = encode_messages(prompt + answer, tokenizer, template, answers_only, index=index, source=source)
        cut = next(k for k, label in enumerate(enc.labels) if label != IGNORE_INDEX)
        if out.setdefault("prompt_input_ids", enc.input_ids[:cut]) != enc.input_ids[:cut]:
            raise RecordError(f"{where(source, index)}: the prompt tokenizes differently before chosen and rejected",
                              hint="the chat template renders the prompt depending on the answer")
        out[f"{key}_input_ids"], out[f"{key}_labels"] = enc.input_ids[cut:], enc.labels[cut:]
    return out


@dataclass
class SupervisionReport:
    """Counts supervised tokens over a dataset; :meth:`check` fails on 0% or 100% supervision."""

    samples: int = 0
    tokens: int = 0
    supervised: int = 0
    text_tokens: int = 0

    def add(self, enc: Encoded) -> None:
        self.samples += 1
        if enc.roles == ["text"]:
            self.text_tokens += len(enc)
            return
        self.tokens += len(enc)
        self.supervised += enc.num_supervised

    @property
    def fraction(self) -> float:
        return self.supervised / self.tokens if self.tokens else 0.0

    def summary(self) -> str:
        return f"{self.samples} samples, {self.supervised}/{self.tokens} chat tokens supervised ({self.fraction:.1%})"

    def check(self, name: str, train_on_inputs: bool = False) -> None:
        if self.tokens and self.supervised == 0:
            raise OAError(f"{name}: no token of any sample is supervised",
                          hint="the data has no assistant answers, or every message has train: false")
        if self.tokens and self.supervised == self.tokens and not train_on_inputs:
            raise OAError(f"{name}: every token is supervised although train_on_inputs is false",
                          hint="check the chat template: it renders no prompt text")


# ---------------------------------------------------------------- helpers


def _get(message: Message | Mapping, key: str) -> Any:
    return message.get(key) if isinstance(message, Mapping) else getattr(message, key)


def _as_dict(message: Message | Mapping) -> dict[str, Any]:
    out = {"role": _get(message, "role"), "content": _get(message, "content")}
    name = _get(message, "name") if isinstance(message, Message) or "name" in message else None
    if name is not None:
        out["name"] = name
    return out


def _messages_of(record: Any, settings: Any) -> list | None:
    """The messages to encode for a record (or a message list); ``None`` for other records."""
    if isinstance(record, (list, tuple)):
        return list(record)
    if isinstance(record, Conversation):
        return list(record.messages)
    if isinstance(record, PromptCompletion):
        return _prompt_then_answer(record.prompt, record.completion, settings)
    return None


def _prompt_then_answer(prompt: list[Message], answer: list[Message], settings: Any) -> list[Message]:
    """The prompt (not trained on unless ``train_on_inputs``) followed by the supervised answer."""
    default = None if settings.train_on_inputs else False
    head = [m if m.train is not None else m.model_copy(update={"train": default}) for m in prompt]
    return head + [m if m.train is not None else m.model_copy(update={"train": True}) for m in answer]


def _label(i: int, msgs: list[dict]) -> str:
    return f"message {i} ({msgs[i]['role']})"


def _no_end_of_turn(i: int, msgs: list[dict], eot: str) -> TemplateError:
    return TemplateError(f"{_label(i, msgs)}: no end-of-turn {eot!r} follows the message",
                         hint="set data.end_of_turn to the string that closes a turn in this template")


def _locate_messages(template, msgs, text, variables) -> dict[int, tuple[int, int, str]]:
    """Where each rendered message's content is in ``text``: ``i -> (start, end, text up to the next content)``,
    found through a rendering with a marker in place of every content."""
    for i, m in enumerate(msgs):
        if _RESERVED.search(m["content"]):
            raise TemplateError(f"{_label(i, msgs)}: the content holds a reserved character (U+E000..U+E005)",
                                hint="remove these private-use characters from the data")
    probe = render(template, [{**m, "content": _MARK.format(i)} for i, m in enumerate(msgs)], **variables)
    parts = _MARK_RE.split(probe)
    pieces, ids = parts[0::2], [int(x) for x in parts[1::2]]
    if not text.startswith(pieces[0]) or (not ids and text != pieces[0]):
        raise TemplateError(f"chat template '{template.name}' renders text that depends on the message contents",
                            hint="use a template that renders message['content'] as is or trimmed")
    found: dict[int, tuple[int, int, str]] = {}
    cursor = len(pieces[0])
    for k, i in enumerate(ids):
        after, last = pieces[k + 1], k == len(ids) - 1
        content = msgs[i]["content"]
        for cand in dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip())):
            end = cursor + len(cand)
            if text.startswith(cand, cursor) and (text[end:] == after if last else text.startswith(after, end)):
                break
        else:
            raise TemplateError(f"{_label(i, msgs)}: the chat template changes the message text beyond trimming",
                                hint="use a template that renders message['content'] as is or trimmed")
        found.setdefault(i, (cursor, end, after))
        cursor = end + len(after)
    return found


def _spans_from_boundaries(template, msgs, text, found, marked, eot) -> dict[int, tuple[int, int]]:
    """Method 1: from each marked message's content through the end-of-turn string after it."""
    spans = {}
    for i in marked:
        if i not in found:
            raise TemplateError(f"{_label(i, msgs)}: the chat template '{template.name}' does not render this message",
                                hint="the template drops it; set train: false on it or use another template")
        start, end, after = found[i]
        if eot not in after:
            raise _no_end_of_turn(i, msgs, eot)
        spans[i] = (start, end + after.index(eot) + len(eot))
    return spans


def _spans_from_prefixes(template, msgs, text, marked, eot, variables):
    """Method 2: render growing prefixes; returns the spans and the character end of every turn
    (``bounds[0]``: the end of what the template renders before any message)."""

    def rendered(ms, generation=False):
        return render(template, ms, generation, **variables)

    preamble = _preamble(template, tuple(sorted(variables.items())))
    bounds = [len(preamble) if text.startswith(preamble) else 0]
    spans = {}
    for i, m in enumerate(msgs):
        upto = rendered(msgs[: i + 1])
        if not text.startswith(upto):
            raise TemplateError(f"{_label(i, msgs)}: the chat template renders it differently when more messages "
                                "follow, so its loss mask cannot be cross-checked",
                                hint="use a template whose rendering of a conversation extends that of its prefixes")
        bounds.append(len(upto))
        if i not in marked:
            continue
        if m["role"] == "assistant":
            head = rendered(msgs[:i], True)
            if not upto.startswith(head):
                raise TemplateError(f"{_label(i, msgs)}: the generation prompt of the chat template does not "
                                    "start the rendered answer", hint="fix the template's add_generation_prompt branch")
            start = len(head) + _space_before(rendered([*msgs[:i], {**m, "content": _DUMMY[0]}]), len(head))
        else:
            a, b = (rendered([*msgs[:i], {**m, "content": d}]) for d in _DUMMY)
            start = len(os.path.commonprefix([a, b]))
        stop = upto.rfind(eot)
        if stop < start:
            raise _no_end_of_turn(i, msgs, eot)
        spans[i] = (start, stop + len(eot))
    return spans, bounds


def _space_before(probe: str, at: int) -> int:
    """How much whitespace the template itself renders from ``at`` to the content (``_DUMMY[0]``) in ``probe``."""
    k = probe.find(_DUMMY[0], at)
    return k - at if k > at and probe[at:k].isspace() else 0


def _check_generation_blocks(template, msgs, text, found, eot, variables) -> None:
    """Method 3: apart from whitespace, the ``{% generation %}`` blocks hold exactly the content and end of
    turn of every assistant message."""
    tracked, blocks = render_generation(template, msgs, **variables)
    if tracked != text:
        raise TemplateError(f"chat template '{template.name}': its {{% generation %}} blocks do not render in place",
                            hint="put {% generation %} ... {% endgeneration %} around the output of assistant messages, "
                                 "outside macros and set blocks")
    answers = [_answer_span(found[i], eot) for i, m in enumerate(msgs) if m["role"] == "assistant" and i in found]
    expected, marked = _char_mask(len(text), answers), _char_mask(len(text), blocks)
    differ = (expected != marked) & ~np.fromiter(map(str.isspace, text), dtype=bool, count=len(text))
    if differ.any():
        k = int(np.argmax(differ))
        raise _blocks_disagree(text, k, differ, bool(expected[k]), answers if expected[k] else blocks, found, msgs)


def _blocks_disagree(text, k, differ, supervised, spans, found, msgs) -> TemplateError:
    """The error for the first character ``k`` where the generation blocks and oa's answer spans differ."""
    stop = k
    while stop < len(text) and differ[stop]:
        stop += 1
    span = next(s for s in spans if s[0] <= k < s[1])
    where = f"{_label(_owner(found, k, span), msgs)}: " if found else ""
    shown = repr(text[k:stop][:40])
    what = (f"leave out {shown}, which oa supervises as part of the answer" if supervised
            else f"hold {shown}, which oa does not supervise")
    return TemplateError(f"{where}the template's {{% generation %}} blocks {what} (character {k})",
                         hint="the markers and oa's loss mask disagree: a block should hold an assistant answer and its "
                              "end of turn (set data.end_of_turn if oa's is wrong)")


def _owner(found: dict[int, tuple[int, int, str]], k: int, span: tuple[int, int]) -> int:
    """The message whose content starts inside ``span`` (which holds character ``k``), else the last one
    starting before ``k``."""
    inside = [i for i, (start, _, _) in found.items() if span[0] <= start < span[1]]
    if inside:
        return inside[0]
    before = [i for i, (start, _, _) in found.items() if start <= k]
    return max(before, key=lambda i: found[i][0]) if before else min(found)


def _answer_span(located: tuple[int, int, str], eot: str) -> tuple[int, int]:
    start, end, after = located
    return (start, end + after.index(eot) + len(eot)) if eot in after else (start, end)


def _char_mask(length: int, spans) -> np.ndarray:
    mask = np.zeros(length, dtype=bool)
    for s, e in spans:
        mask[s:e] = True
    return mask


_PREAMBLES: dict[tuple, str] = {}


def _preamble(template: ChatTemplate, variables: tuple) -> str:
    """What the template renders before any message (the same for every sample, so computed once)."""
    key = (template.jinja, repr(sorted(template.variables.items())), variables)
    if key not in _PREAMBLES:
        try:
            _PREAMBLES[key] = render(template, [], **dict(variables))
        except TemplateError:
            _PREAMBLES[key] = ""
    return _PREAMBLES[key]


def _tokenize(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], np.ndarray]]:
    """Token ids and ``(n, 2)`` character offsets of each text, in one batched call."""
    if not getattr(tokenizer, "is_fast", False):
        raise OAError("loss masks need a fast tokenizer (character offsets)", hint="set tokenizer.use_fast: true")
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: one multi-threaded call, no per-text conversion
        out = []
        for e in backend.encode_batch(texts, add_special_tokens=False):
            ids = e.ids
            flat = np.fromiter(chain.from_iterable(e.offsets), dtype=np.int64, count=2 * len(ids))
            out.append((ids, flat.reshape(-1, 2)))
        return out
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [(list(ids), np.asarray(offs, dtype=np.int64).reshape(-1, 2))
            for ids, offs in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]


def _overlaps(offset: tuple[int, int], span: tuple[int, int]) -> bool:
    a, b = offset
    s, e = span
    return max(a, s) < min(b, e) or (a == b and s <= a < e)


def _token_mask(offsets: np.ndarray, spans, base: bool, length: int) -> np.ndarray:
    """``base`` for every token, flipped for tokens that overlap a span (linear in text and tokens)."""
    marked = np.zeros(length + 1, dtype=bool)
    for s, e in spans:
        marked[s:e] = True
    before = np.concatenate(([0], np.cumsum(marked)))  # before[c]: marked characters in text[:c]
    a, b = offsets[:, 0], offsets[:, 1]
    hit = np.where(b > a, before[b] > before[a], marked[a])
    return hit != base


def _check_sample(enc: Encoded, at: str, train_on_inputs: bool) -> None:
    n = enc.num_supervised
    if n == 0:
        raise RecordError(f"{at}: no token is supervised (roles: {', '.join(enc.roles)})",
                          hint="the record has no assistant answer to learn, or all its messages have train: false")
    if n == len(enc) and not train_on_inputs:
        raise RecordError(f"{at}: every token is supervised although train_on_inputs is false",
                          hint="check the chat template: it renders no prompt text around the messages")
