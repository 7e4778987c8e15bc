#!/usr/bin/env bash
# Create .venv from uv.lock with every workspace package installed.
#   GPU machine (nvidia-smi works): everything from the lock, CUDA torch included.
#   CPU machine: the same lock, minus torch's CUDA libraries, plus the CPU build of the locked torch
#   version (from a local wheel folder when one has it, else from the PyTorch CPU index).
# Force a route with OA_TORCH=cuda|cpu. Extra arguments go to `uv sync` (e.g. --extra deepspeed).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
export PATH="$HOME/.local/bin:$PATH"

route="${OA_TORCH:-auto}"
if [ "$route" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then route=cuda; else route=cpu; fi
fi
if [ "$route" = cuda ]; then
  exec uv sync --locked --compile-bytecode --all-packages "$@"
fi

# CPU route: skip torch and the CUDA-only packages of the lock, then add the CPU torch build.
read -r torch_version skip_flags < <(python3 scripts/lock_info.py uv.lock)
uv sync --locked --inexact --compile-bytecode --all-packages $skip_flags "$@"
if .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__ != '${torch_version}+cpu')" 2>/dev/null; then
  exit 0
fi
links="${UV_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}"
wheel=$(ls ${links:-/nonexistent}/torch-"${torch_version}"+cpu-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$wheel" ]; then
  uv pip install --python .venv/bin/python --no-deps --compile-bytecode "$wheel"
else
  uv pip install --python .venv/bin/python --no-deps --compile-bytecode --index-url https://download.pytorch.org/whl/cpu \
    "torch==${torch_version}+cpu"
fi
