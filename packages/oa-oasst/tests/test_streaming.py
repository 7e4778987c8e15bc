"""Tree-per-line files are streamed: peak memory does not grow with the file."""

import json
import tracemalloc

from oa_oasst.export import export
from oa_oasst.options import PairOptions

TEXT = "lorem ipsum dolor sit amet " * 200  # ~5 KB per message


def write_trees(path, n):
    def msg(mid, parent, role, rank=None, replies=()):
        return {"message_id": mid, "parent_id": parent, "text": TEXT, "role": role, "lang": "en",
                "review_result": True, "deleted": False, "synthetic": False, "rank": rank, "replies": list(replies)}

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            t = f"t{i}"
            tree = msg(t, None, "prompter", replies=[msg(f"{t}a", t, "assistant", 0), msg(f"{t}b", t, "assistant", 1)])
            f.write(json.dumps({"message_tree_id": t, "tree_state": "ready_for_export", "prompt": tree}) + "\n")


def peak_export(src, dst):
    tracemalloc.start()
    try:
        summary = export(str(src), str(dst), "pairs", PairOptions())
        return tracemalloc.get_traced_memory()[1], summary
    finally:
        tracemalloc.stop()


def test_peak_memory_is_independent_of_file_size(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_trees(small, 200)
    write_trees(large, 2_000)
    peak_export(small, tmp_path / "warmup.jsonl")  # first-call costs (schema builds, imports)
    peak_small, _ = peak_export(small, tmp_path / "small.out.jsonl")
    peak_large, summary = peak_export(large, tmp_path / "large.out.jsonl")
    assert summary.records == 2_000 and summary.messages == summary.used == 6_000
    assert large.stat().st_size > 30_000_000
    assert peak_large < 2 * peak_small + 200_000 and peak_large < 2_000_000
