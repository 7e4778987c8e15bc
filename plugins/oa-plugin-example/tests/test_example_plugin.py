import json
from pathlib import Path

import pytest

from oa_core.plugins import PluginManager
from oa_core.schema import PromptWithReference, validate_record
from oa_plugin_example.plugin import final_number, numeric_answer, parse_gsm8k

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


@pytest.fixture(scope="module")
def registry():
    return PluginManager().registry()


def test_discovered_through_entry_point(registry):
    for kind, name in [("dataset_format", "example.gsm8k"), ("reward_function", "example.numeric_answer"),
                       ("config_section", "example"), ("loss", "example.sigmoid_norm")]:
        entry = registry.entry(kind, name)
        assert (entry.provider.plugin, entry.provider.distribution) == ("example", "oa-plugin-example")


def test_gsm8k_format_on_real_rows(registry):
    fmt = registry.get("dataset_format", "example.gsm8k")
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    records = [validate_record(fmt.parse(row), fmt.record_type, source=str(GSM8K), index=i) for i, row in enumerate(rows)]
    assert all(isinstance(r, PromptWithReference) for r in records)
    assert records[0].prompt[0].content == rows[0]["question"]
    assert records[0].reference == rows[0]["answer"].split("####")[-1].strip()


def test_gsm8k_row_without_final_answer_is_rejected():
    with pytest.raises(ValueError, match="no '#### <number>'"):
        parse_gsm8k({"question": "q", "answer": "no marker"})


def test_numeric_answer_reward():
    completions = ["so the answer is #### 1,234", "I think 7 then 12", "no idea", "#### 5.5"]
    refs = ["1234", "12", "3", "5.4"]
    assert numeric_answer([""] * 4, completions, reference=refs) == [1.0, 1.0, 0.0, 0.0]
    assert numeric_answer([""], ["#### 5.5"], reference=["5.4"], tolerance=0.2) == [1.0]
    assert final_number("a 1 b 2") == 2.0 and final_number("none") is None


def test_sigmoid_norm_loss_is_dpo_on_per_token_log_ratios():
    torch = pytest.importorskip("torch")
    pytest.importorskip("oa_train")
    from oa_train.preference.losses import PairLogProbs, PreferenceParams

    pairs = PairLogProbs(torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -2.0]), torch.tensor([2.0, 4.0]),
                         torch.tensor([1.0, 2.0]), torch.tensor([-3.5, -2.5]), torch.tensor([-3.5, -2.5]))
    got = PluginManager().registry().get("loss", "example.sigmoid_norm").fn(pairs, PreferenceParams(beta=0.5))
    delta = torch.tensor([0.5 / 2 - (-0.5) / 1, 0.5 / 4 - 0.5 / 2])
    torch.testing.assert_close(got, -torch.nn.functional.logsigmoid(0.5 * delta))
