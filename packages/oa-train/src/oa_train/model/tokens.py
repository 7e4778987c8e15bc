"""Add new (special) tokens and initialise their embedding rows (input and untied output)."""

from __future__ import annotations

from oa_core.errors import OAError
from oa_train.model.settings import NewToken, NewTokenSettings


def _source_ids(tokenizer, spec: NewToken, key: str) -> list[int] | None:
    """Existing token ids whose rows initialise ``spec.token``; None for the mean of all rows."""
    if spec.init == "mean_all":
        return None
    if spec.init == "copy":
        tid = tokenizer.convert_tokens_to_ids(spec.source)
        if tid is None or (tid == tokenizer.unk_token_id and spec.source != tokenizer.unk_token):
            raise OAError(
                f"{key}.source: '{spec.source}' is not a single token of the tokenizer",
                hint="use init: mean_of to average the tokens of a string",
            )
        return [tid]
    ids = tokenizer(spec.source, add_special_tokens=False)["input_ids"]
    if not ids:
        raise OAError(f"{key}.source: '{spec.source}' tokenizes to nothing", hint="give a non-empty string")
    return ids


def add_new_tokens(model, tokenizer, settings: NewTokenSettings | None) -> list[int]:
    """Add ``settings.tokens`` to ``tokenizer``, resize the embeddings and initialise the new rows.

    Returns the ids of the listed tokens; tokens already in the vocabulary keep their id and rows.
    Output rows are initialised the same way when the output embeddings are not tied to the input.
    """
    import torch

    if settings is None or not settings.tokens:
        return []
    old_vocab = set(tokenizer.get_vocab())
    fresh = [(i, t) for i, t in enumerate(settings.tokens) if t.token not in old_vocab]
    sources = {t.token: _source_ids(tokenizer, t, f"new_tokens.tokens.{i}") for i, t in fresh}
    if fresh:
        tokenizer.add_tokens([t.token for _, t in fresh], special_tokens=settings.special)
    ids = [tokenizer.convert_tokens_to_ids(t.token) for t in settings.tokens]
    old_rows = model.get_input_embeddings().weight.shape[0]
    resize_embeddings(model, len(tokenizer), settings.pad_to_multiple_of)
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(out.weight)
    with torch.no_grad():
        for _, spec in fresh:
            tid = tokenizer.convert_tokens_to_ids(spec.token)
            src = sources[spec.token]
            for weight in matrices:
                rows = weight[:old_rows] if src is None else weight[src]
                weight[tid] = rows.float().mean(dim=0).to(weight.dtype)
    return ids


def resize_embeddings(model, num_tokens: int, pad_to_multiple_of: int | None = None) -> bool:
    """Grow the input (and output) embeddings to ``num_tokens`` rows; False when they are large enough."""
    if model.get_input_embeddings().weight.shape[0] >= num_tokens:
        return False
    model.resize_token_embeddings(num_tokens, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    return True
