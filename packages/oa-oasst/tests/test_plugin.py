"""The entry point: registered formats, light import, run-config use."""

import subprocess
import sys

import pytest
from pydantic import ConfigDict, create_model

from oa_core.config import load_config
from oa_core.errors import ConfigError
from oa_core.extensions import Method
from oa_core.plugins import Entry, PluginManager, Provider, get_registry
from oa_core.schema import Conversation, PreferencePair, RankedReplies


def test_formats_are_registered():
    reg = get_registry()
    types = {name: reg.get("dataset_format", name).record_type for name in ("oasst.sft", "oasst.ranked", "oasst.pairs")}
    assert types == {"oasst.sft": Conversation, "oasst.ranked": RankedReplies, "oasst.pairs": PreferencePair}
    assert reg.entry("dataset_format", "oasst.sft").provider.distribution == "oa-oasst"


def test_read_yields_one_list_per_tree(small_path):
    fmt = get_registry().get("dataset_format", "oasst.ranked")
    assert fmt.many and fmt.parse is None
    per_tree = list(fmt.read(small_path, fmt.options(langs=["en"])))
    assert [[r.metadata["parent_id"] for r in records] for records in per_tree] == [["P0", "P2"], []]


def test_plugin_import_is_light():
    code = ("import sys, oa_oasst.plugin; heavy = [m for m in ('tqdm', 'click', 'torch', 'oa_oasst.formats') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_config_names_the_format(tmp_path, sample_dir):
    registry = PluginManager().registry()
    train = create_model("Train", __config__=ConfigDict(extra="forbid"))
    registry.add(Entry("method", "oasst_test", Method(config=train, objective=print), Provider("test", "test", "")))
    cfg = tmp_path / "run.yaml"
    dataset = f"  - path: {sample_dir / 'en_100_tree.jsonl'}\n    options: {{langs: [en], top_k: 1}}\n"
    cfg.write_text(f"method: oasst_test\ndatasets:\n{dataset}    format: oasst.sft\n")
    assert load_config(cfg, registry=registry).config.datasets[0].format == "oasst.sft"
    cfg.write_text(f"method: oasst_test\ndatasets:\n{dataset}    format: oasst.stf\n")
    with pytest.raises(ConfigError, match="did you mean 'oasst.sft'"):
        load_config(cfg, registry=registry)


def test_loads_through_oa_data(sample_dir):
    loading = pytest.importorskip("oa_data.loading")
    from oa_core.config import DatasetSpec

    spec = DatasetSpec(path=str(sample_dir / "en_100_messages.jsonl.gz"), format="oasst.pairs",
                       options={"langs": ["en"], "pairs": "all"})
    loaded = loading.load_records(spec)
    assert loaded.n_rows == 100 and not loaded.errors
    assert all(isinstance(r, PreferencePair) for r in loaded.records)
    best = loading.load_records(spec.model_copy(update={"options": {"langs": ["en"]}}))
    assert len(best.records) == 417 < len(loaded.records)
