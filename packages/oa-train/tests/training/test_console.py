"""The terminal during a run: library warnings and progress bars go to logs/libraries.log (and are counted), step
lines fit 120 columns (the end-of-run summary is tested with the SFT runs)."""

from __future__ import annotations

import logging
import warnings

from oa_train.training.console import WIDTH, LibraryLog, format_record


def test_library_warnings_are_collected_then_written_and_everything_is_restored(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.get_verbosity()  # transformers adds its console handler on first use
    before = logging.getLogger("transformers").handlers[:]
    with LibraryLog() as log:
        logging.getLogger("transformers.modeling_utils").warning("a transformers warning")
        warnings.warn("a python warning", UserWarning, stacklevel=1)
        log.to_file(tmp_path / "logs" / "libraries.log")
        logging.getLogger("accelerate.utils").warning("an accelerate warning")
    err = capsys.readouterr().err
    assert "a transformers warning" not in err and "an accelerate warning" not in err and "a python warning" not in err
    text = (tmp_path / "logs" / "libraries.log").read_text()
    assert all(m in text for m in ("a transformers warning", "a python warning", "an accelerate warning"))
    assert log.count == 3 and logging.getLogger("transformers").handlers == before


def test_step_lines_fit_the_terminal():
    record = {"step": 60, "epoch": 1.714, "loss": 6.876, "accuracy": 0.0603, "grad_norm": 0.585, "lr": 2.446e-06,
              "tokens": 1117, "skipped_steps": 0, "eval_loss": 6.92, "eval_accuracy": 0.0262, "eval_tokens": 1412,
              "eval_bleu": 0.0, "eval_rouge1": 0.0, "eval_rouge2": 0.0, "eval_rougeL": 0.0,
              **{f"eval_metric_with_a_long_name_{i}": 1.0 for i in range(6)}}
    lines = format_record(record, 60).splitlines()
    assert lines[0].startswith("step 60/60  ep 1.714  loss 6.876  acc 0.0603") and "skipped" not in lines[0]
    assert lines[1].startswith("  eval @60: loss 6.92  accuracy 0.0262")
    assert all(len(line) <= WIDTH for line in lines) and lines[1].endswith("…")
