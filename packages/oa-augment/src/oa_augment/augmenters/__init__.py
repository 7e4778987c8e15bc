"""The built-in augmenters: each a small module with its options, its prompt template and ``augment(record, ctx)``.

| name | makes |
|---|---|
| ``self_instruct`` | new instruction/answer tasks from seed tasks (Self-Instruct / Alpaca) |
| ``answer`` | an answer to each prompt |
| ``paraphrase`` | the prompt (or the answer) said in other words |
| ``translate`` | the whole record in another language |
| ``revision`` | "fix this text" pairs: a text corrupted by rules -> the original (no generator) |
| ``best_of_n`` | n answers ranked by a reward (rejection sampling): ranked replies, preference pairs or the best |
| ``judge`` | the records an LLM judge rates at least ``min_score`` (LLM-as-judge filtering) |
"""

from __future__ import annotations

from oa_core.extensions import Augmenter


def builtin_augmenters() -> dict[str, Augmenter]:
    from oa_augment.augmenters import answer, best_of_n, judge, paraphrase, revision, self_instruct, translate

    return {m.NAME: m.AUGMENTER for m in (self_instruct, answer, paraphrase, translate, revision, best_of_n, judge)}
