"""Precomputed reference log-probs: equal to the live reference, cached and reused across runs without loading a
reference, keyed by weights, data and settings (never reused for others), resumable after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import oa_train.preference.cache as cache_module
import oa_train.preference.objective as objective_module
from oa_train.preference.cache import CacheEntry
from oa_train.preference.pairs import PairwiseObjective
from oa_train.training.loop import train

TRAIN = dict(max_steps=3, per_device_batch_size=4)


def _manifest(loaded) -> dict:
    return json.loads((Path(loaded.config.output_dir) / "run_manifest.json").read_text())


def _same_weights(a, b, weights) -> bool:
    wa, wb = weights(Path(a.config.output_dir) / "model"), weights(Path(b.config.output_dir) / "model")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _count_rows(monkeypatch) -> list[int]:
    computed = []
    original = PairwiseObjective.reference_rows

    def counting(self, reference, model, rows):
        computed.append(len(rows))
        return original(self, reference, model, rows)

    monkeypatch.setattr(PairwiseObjective, "reference_rows", counting)
    return computed


def test_the_cached_reference_trains_like_the_live_one_and_is_reused_without_a_reference(
        run_config, weights, capsys, monkeypatch):
    live = run_config("live", **TRAIN)
    train(live)
    first = run_config("first", **TRAIN, reference={"precompute": True, "batch_size": 4})
    train(first)
    assert "reference log-probs [train]: cache miss, computed before step 1" in capsys.readouterr().out
    manifest = _manifest(first)["data"]["reference"]
    assert manifest["source"] == "copy" and manifest["train"]["cache"] == "miss" and manifest["eval"]["cache"] == "miss"
    assert _same_weights(live, first, weights)  # cached == live, exactly

    def no_reference(*args, **kwargs):
        raise AssertionError("a reference model was built although the cache is complete")

    monkeypatch.setattr(objective_module, "frozen_starting_model", no_reference)
    computed = _count_rows(monkeypatch)
    again = run_config("again", **TRAIN, reference={"precompute": True})
    train(again)
    out = capsys.readouterr().out
    assert "reference log-probs [train]: cache hit" in out and "reference log-probs [eval]: cache hit" in out
    assert computed == [] and _manifest(again)["data"]["reference"]["train"]["cache"] == "hit"
    assert _manifest(again)["data"]["reference"]["train"]["key"] == manifest["train"]["key"]
    assert _same_weights(first, again, weights)


def test_other_weights_or_data_get_another_entry(run_config, write_jsonl, toy_pairs, tiny_model_dir):
    def key(loaded):
        train(loaded)
        reference = _manifest(loaded)["data"]["reference"]["train"]
        return reference["key"], reference["cache"]

    options = dict(max_steps=1, reference={"precompute": True})
    random_init = {"path": tiny_model_dir, "dtype": "float32", "attn_implementation": "sdpa", "random_init": True}
    base, cache = key(run_config("a", model=random_init, **options))
    assert cache == "miss"
    assert key(run_config("b", model=random_init, **options)) == (base, "hit")
    other_weights = key(run_config("c", model=random_init, overrides=["seed=4"], **options))  # another random init
    more = [{"path": write_jsonl("more.jsonl", toy_pairs(25)), "format": "preference"}]
    other_data = key(run_config("d", model=random_init, datasets=more, **options))
    other_dtype = key(run_config("e", model=random_init | {"dtype": "bfloat16"}, **options))
    assert {other_weights[1], other_data[1], other_dtype[1]} == {"miss"}
    assert len({base, other_weights[0], other_data[0], other_dtype[0]}) == 4


def test_a_chunk_made_for_another_key_is_computed_again(tmp_path):
    """A chunk file whose metadata names another key, rows or width is never read as this entry's."""
    from types import SimpleNamespace

    one = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, wait_for_everyone=lambda: None,
                          gather=lambda t: t)
    entry = CacheEntry.at(tmp_path, "a" * 32, rows=3, width=2)
    table = entry.fill(lambda idx: torch.tensor([[float(i), -float(i)] for i in idx]), one, batch_size=2, about={},
                       desc="x")
    assert entry.status()["cache"] == "hit" and torch.equal(entry.read(0), table)
    other = CacheEntry(entry.folder, "b" * 32, rows=3, width=2)  # the same file name, another key
    assert other.read(0) is None and other.status()["cache"] == "miss"
    calls = []
    other.fill(lambda idx: calls.append(idx) or torch.zeros(len(idx), 2), one, batch_size=2, about={}, desc="x")
    assert calls == [[0, 1], [2]] and torch.equal(other.read(0), torch.zeros(3, 2)) and entry.read(0) is None


def test_a_run_killed_while_precomputing_continues_where_it_stopped(run_config, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cache_module, "CHUNK_ROWS", 4)  # 24 train pairs: 6 chunks
    write, written = CacheEntry.write, []

    def killed_after_two(self, i, table, about):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(i)
        write(self, i, table, about)

    monkeypatch.setattr(CacheEntry, "write", killed_after_two)
    options = dict(max_steps=1, reference={"precompute": True, "batch_size": 2})
    with pytest.raises(KeyboardInterrupt):
        train(run_config("killed", **options))
    folder = Path(_manifest(run_config("killed", **options))["data"]["reference"]["train"]["path"])
    assert sorted(p.name for p in folder.glob("chunk-*")) == ["chunk-00000.safetensors", "chunk-00001.safetensors"]
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("chunk-*")}

    monkeypatch.setattr(CacheEntry, "write", write)
    computed = _count_rows(monkeypatch)
    capsys.readouterr()
    resumed = run_config("killed", **options)  # the same command again
    train(resumed)
    assert "cache partly there (2 of 6 chunks), the rest computed before step 1" in capsys.readouterr().out
    assert sum(computed) == 24 - 8 + 4  # the 4 missing train chunks and the eval split
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("chunk-0000[01]*")} == kept
    assert _manifest(resumed)["status"] == "done"

    fresh = run_config("fresh", overrides=[f"data.cache_dir={tmp_path / 'other-cache'}"], **options)
    train(fresh)
    other = Path(_manifest(fresh)["data"]["reference"]["train"]["path"])
    entry = CacheEntry(folder, folder.name.removeprefix("reference-logps-"), 24, 2)
    same = CacheEntry(other, other.name.removeprefix("reference-logps-"), 24, 2)
    assert entry.key == same.key and all(torch.equal(entry.read(i), same.read(i)) for i in range(6))


def test_precomputing_with_several_processes_splits_every_chunk_and_gathers_it_in_order(tmp_path, monkeypatch):
    """Each process computes its block of a chunk (the last one padded with repeats, so every process runs the
    same number of forwards); the gathered rows are the chunk's rows in order, written once."""
    monkeypatch.setattr(cache_module, "CHUNK_ROWS", 5)
    value = lambda i: [float(i), float(-i)]  # noqa: E731
    world, asked, written = 3, {}, []

    class Rank:
        def __init__(self, rank):
            self.process_index, self.num_processes, self.is_main_process = rank, world, rank == 0

        def wait_for_everyone(self):
            pass

        def gather(self, values):  # what every process computed for this chunk, in rank order
            start = self.chunk * 5
            per = -(-min(5, 7 - start) // world)
            blocks = [[min(start + r * per + j, min(start + 5, 7) - 1) for j in range(per)] for r in range(world)]
            assert torch.equal(values, torch.tensor([value(i) for i in blocks[self.process_index]]))
            return torch.tensor([value(i) for block in blocks for i in block])

    monkeypatch.setattr(CacheEntry, "write", lambda self, i, table, about: written.append(i))
    for rank in range(world):
        acc = Rank(rank)

        def compute(indices, acc=acc, rank=rank):
            acc.chunk = indices[0] // 5
            asked.setdefault(rank, []).append(list(indices))
            return torch.tensor([value(i) for i in indices])

        table = CacheEntry.at(tmp_path, "c" * 32, rows=7, width=2).fill(compute, acc, batch_size=1, about={}, desc="x")
        assert torch.equal(table, torch.tensor([value(i) for i in range(7)]))
    assert written == [0, 1]  # by the first process only
    assert asked == {0: [[0], [1], [5]], 1: [[2], [3], [6]], 2: [[4], [4], [6]]}  # 2 forwards each per chunk


def test_the_weights_digest_of_adapters_off_ignores_the_adapter(tiny_lm):
    from peft import LoraConfig, get_peft_model

    from oa_train.preference.reference import weights_digest

    model = get_peft_model(tiny_lm(), LoraConfig(r=2, target_modules=["q_proj"]))
    frozen, whole = weights_digest(model, frozen_only=True), weights_digest(model, frozen_only=False)
    with torch.no_grad():
        model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.add_(1.0)
    assert weights_digest(model, frozen_only=True) == frozen and weights_digest(model, frozen_only=False) != whole
    with torch.no_grad():
        model.base_model.model.model.norm.weight.add_(1.0)
    assert weights_digest(model, frozen_only=True) != frozen


def test_a_resumed_run_reads_the_cache_and_ends_like_an_uninterrupted_one(run_config, weights, monkeypatch):
    options = dict(max_steps=4, save_steps=2, reference={"precompute": True})
    full = run_config("full", **options)
    train(full)

    def interrupt_at_3(step, record):
        if step == 3:
            raise KeyboardInterrupt

    cut = run_config("cut", **options)
    with pytest.raises(KeyboardInterrupt):
        train(cut, callbacks=[interrupt_at_3])
    computed = _count_rows(monkeypatch)
    resumed = run_config("cut", overrides=["train.resume_from=auto"], **options)
    train(resumed)
    manifest = _manifest(resumed)
    assert manifest["resumed_from"].endswith("checkpoint-2") and manifest["data"]["reference"]["train"]["cache"] == "hit"
    assert computed == [] and _same_weights(full, resumed, weights)
