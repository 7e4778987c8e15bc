"""`oa train`: config problems and missing pieces are one-line errors (exit 2); workers are launched
through accelerate with the same arguments."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from oa_cli.main import main
from oa_train.launch import launch_command, launch_env


def _empty(folder):
    """An empty data file: configs name real paths (they are checked), these tests never read it."""
    path = folder / "empty.jsonl"
    path.write_text("")
    return path


def _write(tmp_path, doc) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize(
    ("doc", "args", "message"),
    [
        ({"method": "sft", "model": {"path": "x"}, "train": {"learning_rat": 1e-4}}, [],
         "train.learning_rat: unknown key (did you mean 'learning_rate'?)"),
        ({"method": "sft", "train": {"warmup_ratio": 0.1, "warmup_steps": 5}}, [],
         "train: give at most one of 'warmup_ratio' and 'warmup_steps'"),
        ({"method": "sft", "train": {"lr_scheduler": "constant", "warmup_steps": 5}}, [],
         "train: lr_scheduler 'constant' has no warm-up: use 'constant_with_warmup'"),
        ({"method": "stf"}, [], "unknown method 'stf' (did you mean 'sft'?)"),
        ({"method": "sft", "model": {"path": "x"}}, [], "datasets: no training datasets configured"),
        ({"method": "pretrain", "train": {"report_to": "tensorboardx"}}, [], "train.report_to.0: Input should be"),
        ({"method": "sft"}, ["--set", "train.metric_for_best=loss"], "metric_for_best must name an eval metric"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, doc, args, message):
    code = main(["train", _write(tmp_path, {"output_dir": str(tmp_path / "out"), **doc}), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_resume_option_becomes_an_override_and_is_checked(tmp_path, capsys, tiny_model_dir):
    cfg = _write(tmp_path, {"method": "sft", "model": {"path": tiny_model_dir}, "datasets": [],
                            "output_dir": str(tmp_path / "out")})
    code = main(["train", cfg, "--resume", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and f"train.resume_from: '{tmp_path / 'nowhere'}' is not a complete checkpoint" in err


def test_launch_command_runs_the_same_command_in_each_worker():
    cmd = launch_command(["-m", "oa_cli.main", "train", "run.yaml", "--set", "seed=1"], num_processes=2)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert cmd[-6:] == ["-m", "oa_cli.main", "train", "run.yaml", "--set", "seed=1"]
    preset = launch_command(["x.py"], num_processes=8, accelerate_config="zero3.yaml")
    assert preset[preset.index("--config_file") + 1] == "zero3.yaml" and "--multi_gpu" not in preset


def test_without_a_gpu_deepspeed_presets_run_without_accelerates_cpu_flag(monkeypatch, repo_root):
    """ACCELERATE_USE_CPU makes accelerate drop DeepSpeed (plain DDP); DeepSpeed's CPU accelerator runs instead."""
    import torch

    presets = repo_root / "examples" / "configs" / "accelerate"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert launch_env()["ACCELERATE_USE_CPU"] == "true"
    assert launch_env(str(presets / "ddp.yaml"))["ACCELERATE_USE_CPU"] == "true"
    for name in ("zero2.yaml", "zero3.yaml"):
        assert "ACCELERATE_USE_CPU" not in launch_env(str(presets / name))


def test_without_a_gpu_the_fsdp_preset_is_refused_not_run_as_ddp(tmp_path, monkeypatch, capsys, repo_root):
    """accelerate runs FSDP on GPUs only and would quietly train plain DDP on CPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    preset = repo_root / "examples" / "configs" / "accelerate" / "fsdp.yaml"
    config = _write(tmp_path, {"method": "sft", "output_dir": str(tmp_path / "run"), "model": {"path": "unused"},
                               "datasets": [{"path": str(_empty(tmp_path)), "format": "alpaca"}]})
    assert main(["train", config, "--num-processes", "2", "--accelerate-config", str(preset)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fsdp.yaml: FSDP runs on GPUs only" in err[0] and "ddp.yaml" in err[0]
    assert not (tmp_path / "run").exists()


def test_oa_train_end_to_end_through_the_data_pipeline(tmp_path, capsys, tiny_model_dir, alpaca_seed):
    """`oa train CONFIG` on alpaca rows: chatml template (new tokens: embeddings grow), packing, eval."""
    import json

    from safetensors import safe_open
    from transformers import AutoTokenizer

    rows = alpaca_seed.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(rows[:8]) + "\n")
    (tmp_path / "eval.jsonl").write_text("\n".join(rows[8:10]) + "\n")
    out = tmp_path / "out"
    cfg = _write(tmp_path, {
        "method": "sft", "output_dir": str(out), "model": {"path": tiny_model_dir, "dtype": "float32"},
        "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
        "eval_datasets": [{"path": str(tmp_path / "eval.jsonl"), "format": "alpaca"}],
        "data": {"chat_template": "chatml", "max_length": 256, "packing": True, "cache_dir": str(tmp_path / "cache")},
        "train": {"max_steps": 2, "per_device_batch_size": 2, "save_steps": 1, "logging_steps": 1},
    })
    assert main(["train", cfg, "--set", "train.learning_rate=0.001"]) == 0, capsys.readouterr().err
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert "<|im_start|>" in tok.get_vocab() and len(tok) > 32000
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"  # the training template, saved
    from transformers import AutoModelForCausalLM, GenerationConfig

    stop = GenerationConfig.from_pretrained(out / "model").eos_token_id  # generate and vLLM stop at the end of a turn
    assert stop == [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    ckpt = out / "checkpoints" / "checkpoint-1"  # an intermediate checkpoint loads in plain transformers
    loaded = AutoModelForCausalLM.from_pretrained(ckpt)
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
    assert AutoTokenizer.from_pretrained(ckpt).apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False) == prompt
    with safe_open(str(out / "model" / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.embed_tokens.weight").get_shape()[0] >= len(tok)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["model"]["resized_embeddings_to"] == len(tok)
    import hashlib  # the reproducibility record: versions, config source, data checksums, realised counts

    assert manifest["environment"]["packages"]["oa-train"] and manifest["config_source"]["file"] == cfg
    assert manifest["data"]["files"] == {str(tmp_path / n): hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()
                                         for n in ("train.jsonl", "eval.jsonl")}
    assert (manifest["data"]["train_samples"], manifest["data"]["eval_samples"]) == (8, 2)
    assert manifest["data"]["train_rows"] < 8  # packed
    assert [d["samples"] for d in manifest["data"]["datasets"]["train"]] == [8]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and "eval_loss" in records[-1]
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()


def test_plugin_registers_methods_without_heavy_imports():
    import json
    import subprocess

    code = (
        "import sys; from oa_core.plugins import get_registry; reg = get_registry(); "
        "assert not reg.failures, reg.failures; "
        "import json; print(json.dumps([reg.names('method'), [m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    methods, heavy = json.loads(out)
    assert {"sft", "pretrain"} <= set(methods) and heavy == []


def test_per_epoch_resample_draws_a_new_mix_every_epoch(tmp_path, monkeypatch, tiny_model_dir, alpaca_seed):
    """data.per_epoch_resample: epochs 1 and 2 train on fresh, reproducible draws of a 50% sample."""
    import oa_data.pipeline as pipeline
    from oa_core.config import load_config
    from oa_train.sft import run_sft

    (tmp_path / "train.jsonl").write_text("\n".join(alpaca_seed.read_text().splitlines()[:16]) + "\n")
    cfg = load_config(_write(tmp_path, {
        "method": "sft", "output_dir": str(tmp_path / "out"), "model": {"path": tiny_model_dir, "dtype": "float32"},
        "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca", "sample_rate": 0.5}],
        "data": {"chat_template": "chatml", "max_length": 256, "per_epoch_resample": True,
                 "cache_dir": str(tmp_path / "cache")},
        "train": {"num_epochs": 3, "per_device_batch_size": 8, "logging_steps": 1},
    }))
    drawn = {}
    real = pipeline.prepare_splits

    def recording(c, run_tokenizer, epoch=0, **kw):
        train, evaluation = real(c, run_tokenizer, epoch=epoch, **kw)
        drawn[epoch] = sorted(tuple(r["input_ids"]) for r in train.dataset)
        return train, evaluation

    monkeypatch.setattr(pipeline, "prepare_splits", recording)
    final = run_sft(cfg)
    assert final["step"] == 3 and sorted(drawn) == [0, 1, 2]
    assert all(len(rows) == 8 for rows in drawn.values())
    assert len({tuple(rows) for rows in drawn.values()}) == 3  # three different draws
    from oa_data.tokenizer import prepare_run_tokenizer

    again = real(cfg.config, prepare_run_tokenizer(cfg.config), epoch=1)[0].dataset
    assert sorted(tuple(r["input_ids"]) for r in again) == drawn[1]  # reproducible


def test_a_broken_accelerate_config_is_a_one_line_error(tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text("distributed_type: [\n")
    config = _write(tmp_path, {"method": "sft", "output_dir": str(tmp_path / "run"), "model": {"path": "unused"},
                               "datasets": [{"path": str(_empty(tmp_path)), "format": "alpaca"}]})
    assert main(["train", config, "--num-processes", "2", "--accelerate-config", str(preset)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{preset}:2:1: invalid YAML" in err[0]


def test_a_lora_checkpoint_is_a_loadable_adapter(tmp_path, tiny_model_dir, alpaca_seed, capsys):
    """An intermediate checkpoint of a LoRA run loads with peft as it is; at the last step it is the final adapter."""
    from peft import AutoPeftModelForCausalLM

    (tmp_path / "train.jsonl").write_text("\n".join(alpaca_seed.read_text().splitlines()[:6]) + "\n")
    out = tmp_path / "out"
    cfg = _write(tmp_path, {
        "method": "sft", "output_dir": str(out), "model": {"path": tiny_model_dir, "dtype": "float32"},
        "datasets": [{"path": str(tmp_path / "train.jsonl"), "format": "alpaca"}],
        "data": {"chat_template": "chatml", "max_length": 256, "cache_dir": str(tmp_path / "cache")},
        "peft": {"method": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 2, "per_device_batch_size": 3, "learning_rate": 1e-2, "save_steps": 1},
    })
    assert main(["train", cfg]) == 0, capsys.readouterr().err
    ids = torch.tensor([[1, 450, 4996, 29871, 2]])
    with torch.no_grad():
        final = AutoPeftModelForCausalLM.from_pretrained(out / "model")(input_ids=ids).logits
        at_2 = AutoPeftModelForCausalLM.from_pretrained(out / "checkpoints" / "checkpoint-2")(input_ids=ids).logits
        at_1 = AutoPeftModelForCausalLM.from_pretrained(out / "checkpoints" / "checkpoint-1")(input_ids=ids).logits
    torch.testing.assert_close(at_2, final)
    assert not torch.allclose(at_1, final)

    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    assert main(["merge", "--adapter", str(out / "model"), "--output", str(tmp_path / "merged")]) == 0  # oa-infer
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt",
                                   return_dict=True)["input_ids"]  # with the tokens the run added
    assert chat.max() >= 32000
    with torch.no_grad():
        adapter_logits = AutoPeftModelForCausalLM.from_pretrained(out / "model")(input_ids=chat).logits
        torch.testing.assert_close(merged(input_ids=chat).logits, adapter_logits, atol=1e-5, rtol=1e-4)
    stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    assert GenerationConfig.from_pretrained(tmp_path / "merged").eos_token_id == stop


def test_more_processes_than_gpus_is_refused(monkeypatch, tmp_path, capsys, alpaca_seed):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    config = _write(tmp_path, {"method": "sft", "output_dir": str(tmp_path / "run"), "model": {"path": "unused"},
                               "datasets": [{"path": str(alpaca_seed), "format": "alpaca"}],
                               "data": {"chat_template": "chatml"}})
    assert main(["train", config, "--num-processes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --num-processes 2: this machine has 1 GPU (hint: use --num-processes 1 or fewer (one process "
                   "per GPU))"]


def test_packed_rows_default_to_flex_attention_on_a_gpu(monkeypatch, tiny_model_dir):
    from oa_core.config import ModelSettings
    from oa_train.model import default_attention

    class Config:
        def __init__(self, **data):
            from oa_data.settings import DataSettings

            self.data = DataSettings(**data)

        def section(self, name, model):
            return self.data

    packed, model = Config(packing=True), ModelSettings(path=tiny_model_dir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_attention(packed, model)[0].attn_implementation == "flex_attention"
    assert default_attention(Config(packing=False), model)[0].attn_implementation is None
    pose = Config(packing=True, pose={"max_context_len": 64})
    assert default_attention(pose, model)[0].attn_implementation is None  # PoSE rows carry their own mask
    chosen = model.model_copy(update={"attn_implementation": "sdpa"})
    assert default_attention(packed, chosen) == (chosen, "sdpa")
    unpacked = Config(packing=False)  # a method that packs its own rows (reward models: padding_free) says so
    assert default_attention(unpacked, model, packed_rows=True)[0].attn_implementation == "flex_attention"
    assert default_attention(packed, model, packed_rows=False)[0].attn_implementation is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_attention(packed, model)[0].attn_implementation is None


def test_kernels_are_on_by_default_on_a_gpu_only(monkeypatch):
    from oa_core.plugins import get_registry
    from oa_train.model import default_patches

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_patches(get_registry()) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_patches(get_registry()) == ["kernels.all"]
