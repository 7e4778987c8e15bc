"""Tokenizer preparation: add the template's and the config's special tokens; make pad distinct from eos
(a pad equal to eos lets collators that ignore pad also ignore the end of every answer)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from oa_data.templates import ChatTemplate
from oa_data.templates.resolve import special_token_strings

PAD = "<pad>"


@dataclass
class TokenizerChanges:
    """What :func:`prepare_tokenizer` changed; ``vocab_size`` is the size the model's embeddings need."""

    added: list[str] = field(default_factory=list)
    pad_token: str | None = None
    notes: list[str] = field(default_factory=list)
    vocab_size: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.pad_token)


def add_special_tokens(tokenizer: Any, tokens: Iterable[str]) -> list[str]:
    """Add ``tokens`` the tokenizer does not know as special tokens; returns the ones added."""
    known = set(special_token_strings(tokenizer))
    new = [t for t in dict.fromkeys(tokens) if t and t not in known]
    if new:
        params = inspect.signature(tokenizer.add_special_tokens).parameters
        keep = {k: False for k in ("replace_extra_special_tokens", "replace_additional_special_tokens") if k in params}
        tokenizer.add_special_tokens({"additional_special_tokens": new}, **keep)
    return new


def prepare_tokenizer(tokenizer: Any, tokens: Iterable[str] = (), template: ChatTemplate | None = None) -> TokenizerChanges:
    """Add ``template.special_tokens`` and ``tokens`` (e.g. ``DataSettings.add_special_tokens``), then
    give the tokenizer a pad token distinct from eos (its unk when that differs from eos, else a new
    ``<pad>``). Changes the tokenizer in place and says what changed."""
    changes = TokenizerChanges()
    wanted = [*(template.special_tokens if template else ()), *tokens]
    changes.added = add_special_tokens(tokenizer, wanted)
    if changes.added:
        changes.notes.append(f"added special tokens {', '.join(changes.added)}")
    pad, eos, unk = tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token
    if pad is None or pad == eos:
        why = "the tokenizer had no pad token" if pad is None else f"pad was the eos token {eos!r}"
        if unk is not None and unk != eos:
            tokenizer.pad_token = unk
        else:
            tokenizer.add_special_tokens({"pad_token": PAD})
            changes.added.append(PAD)
        changes.pad_token = tokenizer.pad_token
        changes.notes.append(f"{why}: pad is now {tokenizer.pad_token!r}")
    eot = template.end_of_turn if template else None
    if eot and len(tokenizer(eot, add_special_tokens=False)["input_ids"]) > 1:
        changes.notes.append(f"the end of turn {eot!r} is several tokens; add it with data.add_special_tokens "
                             "to make it one")
    changes.vocab_size = len(tokenizer)
    return changes
