import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SAMPLE_DIR = REPO / "examples" / "data" / "oasst"
SMALL = Path(__file__).parent / "data" / "small_trees.jsonl"


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def small_path():
    """Two hand-checked trees (drawn in test_threads.py)."""
    return str(SMALL)


@pytest.fixture
def sample_dir():
    """The shipped real sample: 100 English trees, as trees and as flat messages (.gz)."""
    return SAMPLE_DIR


@pytest.fixture
def jsonl():
    return read_jsonl


@pytest.fixture
def write_lines(tmp_path):
    """Write objects (dumped as JSON) or raw strings as lines of a file in tmp_path."""

    def write(lines, name="in.jsonl"):
        path = tmp_path / name
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
        return str(path)

    return write
