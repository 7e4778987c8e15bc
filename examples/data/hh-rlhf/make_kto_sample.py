"""Write kto-harmless-base-test-300.jsonl.gz from harmless-base-test-300.jsonl.gz (see SOURCE.md).

Each pair is split by oa's hh_rlhf reader into its shared prefix (the prompt, as messages) and the two divergent
tails; pair k gives ONE unpaired example: its chosen tail labelled true when k is even, its rejected tail labelled
false when k is odd. Every prompt appears once, as in real unpaired feedback.

    python examples/data/hh-rlhf/make_kto_sample.py
"""

import gzip
import json
from pathlib import Path

from oa_data.formats.preference import HHRLHFOptions, parse_hh_rlhf

HERE = Path(__file__).resolve().parent


def main() -> None:
    lines = gzip.open(HERE / "harmless-base-test-300.jsonl.gz", "rt", encoding="utf-8").read().splitlines()
    rows = []
    for k, line in enumerate(lines):
        pair = parse_hh_rlhf(json.loads(line), HHRLHFOptions())
        good = k % 2 == 0
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen" if good else "rejected"], "label": good})
    with gzip.GzipFile(HERE / "kto-harmless-base-test-300.jsonl.gz", "wb", mtime=0) as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


if __name__ == "__main__":
    main()
