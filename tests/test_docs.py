"""docs/plugins.md is runnable: every Python block, in order, in one namespace (from the repository root)."""

from __future__ import annotations

import re


def test_every_plugin_example_in_the_docs_runs(repo_root, monkeypatch, capsys):
    from oa_core.plugins import get_plugin_manager, remove_plugin

    text = (repo_root / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 12
    hooks = set(re.findall(r"^### `(\w+)`", text, flags=re.M))
    from oa_core import hookspecs

    assert hooks == {name for name in dir(hookspecs) if name.startswith(("register_", "check_config"))}
    monkeypatch.chdir(repo_root)
    before = set(get_plugin_manager().providers)
    namespace: dict = {}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"docs/plugins.md block {i}", "exec", dont_inherit=True), namespace)
    finally:
        for name in set(get_plugin_manager().providers) - before:
            remove_plugin(name)
    assert "hello oa" in capsys.readouterr().out
