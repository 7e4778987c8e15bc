"""Add new (special) tokens and initialise their embedding rows (input and untied output)."""

from __future__ import annotations

from collections.abc import Sequence

from oa_core.errors import OAError
from oa_infer.models import resize_embeddings
from oa_train.model.settings import NewToken, NewTokenSettings


def _source_ids(tokenizer, spec: NewToken, key: str, old_len: int) -> list[int] | None:
    """Token ids (of the tokenizer before this run) whose rows initialise ``spec.token``; None for the mean of all."""
    if spec.init == "mean_all":
        return None
    if spec.init == "copy":
        tid = tokenizer.convert_tokens_to_ids(spec.source)
        if tid is None or (tid == tokenizer.unk_token_id and spec.source != tokenizer.unk_token):
            raise OAError(
                f"{key}.source: '{spec.source}' is not a single token of the tokenizer",
                hint="use init: mean_of to average the tokens of a string",
            )
        ids = [tid]
    else:
        ids = tokenizer(spec.source, add_special_tokens=False)["input_ids"]
        if not ids:
            raise OAError(f"{key}.source: '{spec.source}' tokenizes to nothing", hint="give a non-empty string")
    if any(i >= old_len for i in ids):
        raise OAError(f"{key}.source: '{spec.source}' holds a token this run adds, whose row is not trained yet",
                      hint="initialise from tokens the model already has")
    return ids


def add_new_tokens(model, tokenizer, settings: NewTokenSettings, added: Sequence[str] = ()) -> dict[str, dict]:
    """Add ``settings.tokens`` to ``tokenizer``, resize the embeddings and initialise the row of every token the
    run adds: a listed token by its rule — also when the tokenizer step already added it (``added``: the chat
    template's tokens, ``data.add_special_tokens``, a pad) — and the other tokens of ``added`` by
    ``settings.default_init``. Output rows are initialised the same way when they are not tied to the input.

    Returns ``token -> {"id", "init"}`` for the manifest: every listed token (``"existing"`` when the tokenizer
    had it before this run: its row is kept) and every token of ``added``.
    """
    import torch

    added = list(added)
    old_len = len(tokenizer) - len(added)  # the tokenizer before this run added anything
    listed = {t.token: (i, t) for i, t in enumerate(settings.tokens)}
    vocab = tokenizer.get_vocab()
    fresh = [t.token for t in settings.tokens if t.token not in vocab]
    new = [*added, *fresh]
    rules = {token: listed[token][1].init if token in listed else settings.default_init for token in new}
    sources = {token: _source_ids(tokenizer, listed[token][1], f"new_tokens.tokens.{listed[token][0]}", old_len)
               for token in new if token in listed}  # checked before the tokenizer changes
    if fresh:
        tokenizer.add_tokens(fresh, special_tokens=settings.special)
    resize_embeddings(model, len(tokenizer), settings.pad_to_multiple_of)
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(out.weight)
    with torch.no_grad():
        for token in new:
            if rules[token] == "random":
                continue  # the model's own initialisation of new rows
            tid, src = tokenizer.convert_tokens_to_ids(token), sources.get(token)
            for weight in matrices:
                rows = weight[:old_len] if src is None else weight[src]
                weight[tid] = rows.float().mean(dim=0).to(weight.dtype)
    report = {t.token: {"id": tokenizer.convert_tokens_to_ids(t.token), "init": "existing"} for t in settings.tokens}
    report |= {token: {"id": tokenizer.convert_tokens_to_ids(token), "init": rules[token]} for token in new}
    return report
