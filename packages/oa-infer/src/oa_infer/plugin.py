"""Hook implementations of oa-infer (registered through the ``oa`` entry point). Nothing heavy is imported here."""

from __future__ import annotations
