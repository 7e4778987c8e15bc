"""The built-in augmenters: each a small module with its options, its prompt template and ``augment(record, ctx)``.

| name | makes |
|---|---|
| ``answer`` | an answer to each prompt |
"""

from __future__ import annotations

from oa_core.extensions import Augmenter


def builtin_augmenters() -> dict[str, Augmenter]:
    from oa_augment.augmenters import answer

    return {m.NAME: m.AUGMENTER for m in (answer,)}
