import subprocess
import sys

import pytest
import yaml

from oa_core.config import load_config
from oa_core.errors import ConfigError
from oa_train.model.settings import FreezeSettings, NewTokenSettings, PeftSettings


def _write(tmp_path, doc):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_sections_validate_from_a_config_file(tmp_path, sections_registry):
    doc = {
        "method": "noop",
        "model": {"path": "m"},
        "peft": {"method": "lora", "r": 4, "target_modules": ["q_proj"], "use_dora": True},
        "freeze": {"embeddings": True, "layers_not_to_freeze": [1]},
        "new_tokens": {"tokens": [{"token": "<|x|>", "init": "copy", "source": "</s>"}, {"token": "<|y|>"}]},
    }
    cfg = load_config(_write(tmp_path, doc), registry=sections_registry).config
    assert isinstance(cfg.peft, PeftSettings) and cfg.peft.r == 4 and cfg.peft.use_dora
    assert isinstance(cfg.freeze, FreezeSettings) and cfg.freeze.active
    assert isinstance(cfg.new_tokens, NewTokenSettings) and cfg.new_tokens.tokens[1].init == "mean_all"


@pytest.mark.parametrize(
    "section,expected",
    [
        ({"peft": {"method": "lora", "alpah": 4}}, "peft.alpah: unknown key (did you mean 'alpha'?)"),
        ({"peft": {"method": "adapterx"}}, "peft.method: Input should be"),
        (
            {"freeze": {"first_n_layers": -1}},
            "freeze.first_n_layers: Input should be greater than or equal to 0",
        ),
        (
            {"new_tokens": {"tokens": [{"token": "<a>", "init": "copy"}]}},
            "new_tokens.tokens.0: init 'copy' needs 'source'",
        ),
        (
            {"new_tokens": {"tokens": [{"token": "<a>"}, {"token": "<a>"}]}},
            "new_tokens: token listed twice: <a>",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path, sections_registry, section, expected):
    path = _write(tmp_path, {"method": "noop", **section})
    with pytest.raises(ConfigError) as err:
        load_config(path, registry=sections_registry)
    assert f"{path}: {expected}" in str(err.value)


def test_settings_import_is_light():
    code = "import sys, oa_train.model, oa_train.model.settings; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
