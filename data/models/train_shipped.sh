#!/usr/bin/env bash
# How the shipped models in data/models/ were trained: `pianolab train` in stages, keeping a
# weights-only snapshot at each stage boundary (chapter 08_training_length listens to them).
#   bash data/models/train_shipped.sh RUN_DIR CONFIG.json [STAGE_STEPS...]
# Re-running it resumes: `pianolab train` continues from the newest checkpoint, and stages already
# snapshotted are skipped.
# (The trainer now keeps such snapshots itself: `"training": {"snapshot_at": [25, 100, ...]}` in
# the run config. This script is kept as the exact record of how the shipped models were made.)
set -euo pipefail
run=$1; config=$2; shift 2
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(25 50 100 200 300 400 600 800 1000 1300 1600 2000 2500 3000 4000)
py=${PYTHON:-.venv/bin/python}
mkdir -p "$run/snapshots"
for s in "${stages[@]}"; do
  snap="$run/snapshots/step-$(printf %06d "$s").weights.h5"
  [ -f "$snap" ] && continue
  $py -m pianolab train "$run" --config "$config" --steps "$s" --quiet
  $py - "$run/model.keras" "$snap" <<'PY'
import os, sys, keras
model = keras.saving.load_model(sys.argv[1], compile=False)
tmp = sys.argv[2] + ".tmp.weights.h5"
model.save_weights(tmp)
os.replace(tmp, sys.argv[2])
PY
  echo "$(date -u +%FT%TZ) $run: snapshot at step $s" >> "$run/snapshots/log.txt"
done
