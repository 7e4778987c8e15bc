"""`oa data oasst export` through the oa CLI (in process, and once as a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from oa_cli.main import main


def test_export_sft_with_lang(small_path, tmp_path, capsys):
    out = tmp_path / "sub" / "sft.jsonl"
    assert main(["data", "oasst", "export", small_path, str(out), "--to", "sft", "--lang", "en,de", "--top-k", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["metadata"]["message_ids"] for r in rows] == [["P0", "A1", "P2", "A4"]]
    assert rows[0]["kind"] == "conversation"
    err = capsys.readouterr().err
    assert "messages: 15 in = 4 used + 7 unused" in err and f"wrote {out} (1 sft records)" in err
    assert [p.name for p in out.parent.iterdir()] == ["sft.jsonl"]  # no temp file left behind
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_export_pairs_and_label_filter(small_path, tmp_path):
    out = tmp_path / "pairs.jsonl"
    code = main(["data", "oasst", "export", small_path, str(out), "--to", "pairs", "--pairs", "all",
                 "--min-label", "quality=0.5", "--lang", "en"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["metadata"]["chosen_id"], r["metadata"]["rejected_id"]) for r in rows] == [("A1", "A7"), ("A4", "A3")]


def test_user_errors_are_one_line(small_path, tmp_path, capsys, write_lines):
    out = tmp_path / "x.jsonl"
    cases = [
        (["--to", "pairs", "--system-tag"], "error: --system-tag does not apply to --to pairs"),
        (["--to", "sft", "--tag-dropout", "2"], "error: --tag-dropout: Input should be less than or equal to 1"),
        (["--to", "sft", "--min-label", "quality"], "error: --min-label 'quality': expected NAME=NUMBER"),
    ]
    for flags, message in cases:
        assert main(["data", "oasst", "export", small_path, str(out), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    bad = write_lines(['{"message_tree_id": "T", "prompt": {"message_id": "T", "role": "bot", "text": "hi"}}'])
    assert main(["data", "oasst", "export", bad, str(out), "--to", "sft", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:1: field 'prompt.role': Input should be 'prompter' or 'assistant'")
    assert "(hint: " in err and err.count("\n") == 1 and not out.exists()
    assert not list(tmp_path.glob(".x.jsonl.*"))  # the temp file is removed
    assert main(["data", "oasst", "export", bad, str(out), "--to", "sft"]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipped {bad}:1: field 'prompt.role'" in err and "1 in = 0 used + 0 unused (no record needs them) + 1 in bad" in err
    assert out.read_text() == ""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["data", "oasst", "export", small_path, str(blocker / "out.jsonl"), "--to", "sft"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {blocker}") and err.count("\n") == 1


def test_oa_executable(small_path, tmp_path):
    oa = Path(sys.executable).with_name("oa")
    out = tmp_path / "ranked.jsonl"
    proc = subprocess.run([str(oa), "data", "oasst", "export", small_path, str(out), "--to", "ranked"],
                          capture_output=True, text=True, env={**os.environ, "OA_DEBUG": "0"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["replies"][0] for line in out.read_text().splitlines()] == ["4", "By counting."]
    assert "records: 2" in proc.stderr
    proc = subprocess.run([str(oa), "data", "oasst", "export", str(tmp_path / "missing.jsonl"), str(out), "--to", "sft"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "file not found" in proc.stderr


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_refuses_to_overwrite_its_input(small_path, tmp_path, capsys):
    src = tmp_path / "trees.jsonl"
    src.write_bytes(Path(small_path).read_bytes())
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    for out in (src, link):
        assert main(["data", "oasst", "export", str(src), str(out), "--to", "sft"]) == 2
        err = one_line_error(capsys)
        assert err.startswith(f"error: {out}: is the same file as the input IN ({src}); writing it would destroy")
        assert src.read_bytes() == Path(small_path).read_bytes() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "trees.jsonl"]


def test_not_an_oasst_export(tmp_path, capsys, write_lines, jsonl, small_path):
    alpaca = {"instruction": "Add.", "input": "2+2", "output": "4"}
    cases = [
        ([alpaca, alpaca], ":1: not an OASST export: neither a message tree (no 'prompt') nor a message "
                           "(no 'message_id'); keys: instruction, input, output"),
        (["", alpaca], ":2: not an OASST export: neither a message tree"),
        ([jsonl(small_path)], ":1: not an OASST export: expected a JSON object, got list"),
        (["[", json.dumps(jsonl(small_path)[0]), "]"], ":1: not an OASST export: malformed JSON line"),
        ([], ": empty file: no message trees or messages"),
        (["", "  "], ": empty file: no message trees or messages"),
    ]
    out = tmp_path / "out" / "x.jsonl"
    for i, (lines, problem) in enumerate(cases):
        path = write_lines(lines, f"case{i}.jsonl")
        assert main(["data", "oasst", "export", path, str(out), "--to", "sft"]) == 2
        err = one_line_error(capsys)
        assert err.startswith(f"error: {path}{problem}") and "(hint: give an Open-Assistant export" in err
        assert not out.exists() and not list(out.parent.glob("*"))
