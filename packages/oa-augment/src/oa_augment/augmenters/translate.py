"""``translate``: the whole record (every message, reply or text) translated into another language, one
generator call per text, so that a conversation keeps its turns."""

from __future__ import annotations

from pydantic import Field

from oa_augment.augmenters.common import Options, clean
from oa_augment.records import map_texts, texts
from oa_core.extensions import Augmenter

NAME = "translate"
VARIABLES = ("text", "language")
TEMPLATE = ("Translate the following text into {{ language }}. Keep its formatting, code and names as they are. "
            "Reply with the translation only.\n\n{{ text }}")


class TranslateOptions(Options):
    language: str = Field(description="the language to translate into, as the prompt names it (e.g. German)")


def augment(record, ctx):
    originals = texts(record)
    results = ctx.generate([ctx.render(text=t, language=ctx.options.language) for t in originals])
    if any(c.finish_reason == "length" for (c,) in results):
        ctx.drop("translation truncated (max_new_tokens)")
        return
    translated = {t: clean(c.text) for t, (c,) in zip(originals, results, strict=True)}
    if not all(translated.values()):
        ctx.drop("empty translation")
        return
    new = map_texts(record, lambda t: translated[t])
    new.metadata["language"] = ctx.options.language
    yield new


AUGMENTER = Augmenter(augment, "the whole record in another language", TranslateOptions, "1", template=TEMPLATE,
                      variables=VARIABLES)
