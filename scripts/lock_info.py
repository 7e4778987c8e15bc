"""Print the locked torch version and `--no-install-package` flags for the CPU install route.

Skipped: torch itself (the CPU build is installed instead) and the CUDA-only libraries it pulls
(nvidia-*, cuda-*). Used by scripts/setup.sh.
"""

import sys
import tomllib

lock = tomllib.load(open(sys.argv[1] if len(sys.argv) > 1 else "uv.lock", "rb"))
names = sorted({p["name"] for p in lock["package"]})
torch = next(p["version"] for p in lock["package"] if p["name"] == "torch")
skip = ["torch"] + [n for n in names if n.startswith(("nvidia-", "cuda-"))]
print(torch, " ".join(f"--no-install-package {n}" for n in skip))
