"""The Python example of the package README runs as written (from the repository root)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(repo_root, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(repo_root)
    exec(compile(blocks[0], "packages/oa-oasst/README.md", "exec", dont_inherit=True), {})
    out = capsys.readouterr().out
    assert "records: 98" in out and " pairs\n" in out
