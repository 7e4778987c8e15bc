"""The OASST dataset formats (``oasst.sft``, ``oasst.ranked``, ``oasst.pairs``) and the pipeline they
share: read -> filter -> convert, counting every message in a :class:`Summary`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from oa_core.extensions import DatasetFormat
from oa_core.schema import Conversation, PreferencePair, RankedReplies
from oa_oasst import convert
from oa_oasst.filters import prune
from oa_oasst.options import FilterOptions, PairOptions, RankedOptions, SftOptions
from oa_oasst.reader import read_trees
from oa_oasst.schema import OasstTree
from oa_oasst.summary import Summary


@dataclass(frozen=True)
class Conversion:
    record_type: type[BaseModel]
    options: type[FilterOptions]
    convert: Callable[[str, Any, Any], tuple[list, set[str]]]
    description: str


CONVERSIONS: dict[str, Conversion] = {
    "sft": Conversion(Conversation, SftOptions, convert.threads,
                      "OASST message trees -> one conversation per thread (optionally top-k by rank)"),
    "ranked": Conversion(RankedReplies, RankedOptions, convert.ranked,
                         "OASST message trees -> ranked sibling replies best-first (reward-model data)"),
    "pairs": Conversion(PreferencePair, PairOptions, convert.pairs,
                        "OASST message trees -> preference pairs from ranked sibling replies"),
}


def convert_tree(tree: OasstTree, kind: str, options: FilterOptions, summary: Summary) -> list:
    """Filter one tree and convert it; counts its messages as used, unused or dropped."""
    root, kept = prune(tree, options, summary.dropped)
    if root is None:
        return []
    records, used = CONVERSIONS[kind].convert(tree.message_tree_id, root, options)
    summary.used += len(used)
    summary.unused += kept - len(used)
    summary.records += len(records)
    return records


def iter_tree_records(path: str, kind: str, options: FilterOptions, summary: Summary | None = None,
                      progress: bool = False) -> Iterator[list]:
    """The records of each tree of an export file (one list per valid tree), streamed tree by tree;
    flat message files are grouped by tree first."""
    summary = summary if summary is not None else Summary()
    for tree in read_trees(str(path), summary, strict=options.strict, progress=progress):
        yield convert_tree(tree, kind, options, summary)


def iter_records(path: str, kind: str, options: FilterOptions, summary: Summary | None = None,
                 progress: bool = False) -> Iterator:
    """The records of an export file, one by one."""
    for records in iter_tree_records(path, kind, options, summary, progress):
        yield from records


def _read(kind: str):
    def read(path: str, options: FilterOptions | None = None) -> Iterator[list]:
        summary = Summary()
        yield from iter_tree_records(path, kind, options or CONVERSIONS[kind].options(), summary, progress=True)
        if summary.bad_trees:
            from tqdm import tqdm

            tqdm.write(summary.text(), file=sys.stderr)

    return read


def dataset_formats() -> dict[str, DatasetFormat]:
    """``oasst.<kind>`` -> format. ``read`` takes a whole file (trees, nested root messages or flat
    messages; plain or .gz) and yields the records of each tree as one list (``many=True``); there is no
    row-wise ``parse``, because generic JSON readers mangle the trees' free-form dicts (labels, emojis)."""
    return {
        f"oasst.{kind}": DatasetFormat(
            record_type=c.record_type, description=c.description, options=c.options, many=True, read=_read(kind),
        )
        for kind, c in CONVERSIONS.items()
    }
