"""Mixing sources: exact amounts, determinism in the seed, per-epoch resampling, the report."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.config import DatasetSpec
from oa_core.errors import OAError
from oa_core.schema import Text
from oa_data.loading import LoadedSource
from oa_data.mixing import draw, mix


def source(name, n, invalid=0, **amount):
    records = [Text(text=f"{name}{i}") for i in range(n)]
    spec = DatasetSpec(path=f"{name}.jsonl", format="pretraining", **amount)
    return spec, LoadedSource(records, [f"{name}.jsonl: record {i}: bad" for i in range(invalid)], f"{name}.jsonl", n + invalid)


def names(records):
    return [r.text for r in records]


def test_exact_counts_per_source():
    sources = [source("a", 100, invalid=3, sample_rate=0.25), source("b", 40, num_samples=10), source("c", 7)]
    records, report = mix(sources, seed=1)
    taken = {p: sum(n.startswith(p) for n in names(records)) for p in "abc"}
    assert taken == {"a": 25, "b": 10, "c": 7} and len(records) == report.total == 42
    assert [(s.source, s.rule, s.rows, s.available, s.taken, s.dropped_invalid) for s in report.sources] == [
        ("a.jsonl", "sample_rate=0.25", 103, 100, 25, 3), ("b.jsonl", "num_samples=10", 40, 40, 10, 0), ("c.jsonl", "all", 7, 7, 7, 0)]
    assert len(set(names(records))) == 42  # no repeats when taking less than available
    assert set(names(records)) >= {f"c{i}" for i in range(7)}


def test_amounts_above_available_repeat_the_source():
    records, report = mix([source("a", 4, num_samples=10), source("b", 4, sample_rate=1.5)], seed=0)
    counts = {n: names(records).count(n) for n in set(names(records))}
    assert sorted(v for k, v in counts.items() if k.startswith("a")) == [2, 2, 3, 3]
    assert sorted(v for k, v in counts.items() if k.startswith("b")) == [1, 1, 2, 2]
    assert [s.taken for s in report.sources] == [10, 6]


def test_deterministic_in_the_seed_and_different_across_seeds():
    sources = [source("a", 200, sample_rate=0.1), source("b", 50, num_samples=20)]
    first, _ = mix(sources, seed=7)
    again, _ = mix(sources, seed=7)
    other, _ = mix(sources, seed=8)
    assert names(first) == names(again)
    assert set(names(first)) != set(names(other))


def test_the_draw_does_not_depend_on_where_the_data_lies():
    here = [source("a", 200, sample_rate=0.1)]
    spec, loaded = source("a", 200, sample_rate=0.1)
    there = [(spec.model_copy(update={"path": "/elsewhere/a.jsonl"}), loaded)]
    assert names(mix(here, seed=3)[0]) == names(mix(there, seed=3)[0])


def test_per_epoch_resample_differs_across_epochs_but_is_reproducible():
    sources = [source("a", 200, sample_rate=0.1), source("b", 30)]
    fixed = [set(names(mix(sources, seed=3, epoch=e)[0])) for e in range(3)]
    assert fixed[0] == fixed[1] == fixed[2]  # without resampling every epoch sees the same subset
    resampled = [names(mix(sources, seed=3, epoch=e, per_epoch_resample=True)[0]) for e in range(3)]
    assert len({frozenset(r) for r in resampled}) == 3
    assert resampled[1] == names(mix(sources, seed=3, epoch=1, per_epoch_resample=True)[0])
    assert all(sum(n.startswith("a") for n in r) == 20 and sum(n.startswith("b") for n in r) == 30 for r in resampled)


def test_report_prints_a_table_with_totals():
    _, report = mix([source("alpha", 10, invalid=2, num_samples=4), source("b", 3)], seed=0, epoch=2)
    lines = str(report).splitlines()
    assert lines[0].split() == ["source", "format", "rule", "rows", "available", "taken", "dropped_invalid"]
    assert lines[1].split() == ["alpha.jsonl", "pretraining", "num_samples=4", "12", "10", "4", "2"]
    assert lines[-1].split() == ["total", "15", "13", "7", "2"]
    assert len({len(line) for line in lines[:-1]}) <= 2  # aligned columns
    assert report.to_dict()["total"] == 7 and report.to_dict()["epoch"] == 2


def test_a_source_without_valid_records_cannot_give_samples():
    with pytest.raises(OAError, match=r"dataset 'a.jsonl': num_samples=5 but no valid records.*hint: 4 rows were invalid"):
        mix([source("a", 0, invalid=4, num_samples=5)], seed=0)
    records, report = mix([source("a", 0, invalid=4)], seed=0)
    assert records == [] and report.sources[0].dropped_invalid == 4


def test_draw_samples_without_replacement_then_repeats():
    import random

    idx = draw(10, 4, random.Random(0))
    assert len(set(idx)) == 4 and idx == sorted(idx) and all(0 <= i < 10 for i in idx)
    repeated = draw(3, 7, random.Random(0))
    assert len(repeated) == 7 and repeated[:6] == [0, 1, 2, 0, 1, 2] and repeated[6] in (0, 1, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.one_of(st.none(), st.floats(0.05, 3.0), st.integers(1, 90))), min_size=1, max_size=4),
       st.integers(0, 2**31), st.integers(0, 5), st.booleans())
def test_mix_amounts_are_exact_for_any_sources(specs, seed, epoch, resample):
    sources = []
    for i, (n, amount) in enumerate(specs):
        kw = {} if amount is None else {"sample_rate": amount} if isinstance(amount, float) else {"num_samples": amount}
        sources.append(source(f"s{i}_", n, **kw))
    records, report = mix(sources, seed=seed, epoch=epoch, per_epoch_resample=resample)
    for i, ((n, amount), row) in enumerate(zip(specs, report.sources, strict=True)):
        want = n if amount is None else round(amount * n) if isinstance(amount, float) else amount
        got = [r for r in names(records) if r.startswith(f"s{i}_")]
        assert row.taken == len(got) == want
        counts = [got.count(f"s{i}_{j}") for j in range(n)]
        assert max(counts) - min(counts) <= 1  # repeats are spread evenly: whole copies, then distinct extras
    assert names(records) == names(mix(sources, seed=seed, epoch=epoch, per_epoch_resample=resample)[0])
