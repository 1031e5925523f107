#!/usr/bin/env bash
# Chapter 06_shallow_vs_deep's seed runs: a small deep-and-thin and a small shallow-and-wide net at equal
# parameters (31,759 vs 31,681) and receptive field (8,190 vs 8,192 key states), each trained with
# training.seed 0, 1 and 2 (initial weights and batches; the split of pieces, data.seed, stays 0), otherwise
# configured as the shipped deep and shallow models (data/models/seeds/small_{deep,shallow}.json). The six runs
# train side by side, one CPU thread each; start and end times go to runs/seeds.log. Running it again resumes
# each run from its newest checkpoint (a run may resume with a larger training.steps, nothing else changed).
# Then ship each run with `python data/models/seeds/ship_seed.py NAME`.
# Run from the repository root: bash data/models/seeds/train_seeds.sh
set -eu
mkdir -p runs
py=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
for seed in 0 1 2; do
  for arch in deep shallow; do
    name=small_${arch}_$seed
    $py -c "import json, sys; c = json.load(open(sys.argv[1])); c['training']['seed'] = int(sys.argv[2]); json.dump(c, open(sys.argv[3], 'w'), indent=1)" \
      data/models/seeds/small_$arch.json $seed runs/$name.json
    ( date -u +"%F %T start $name" >> runs/seeds.log
      $py -m pianolab train runs/$name --config runs/$name.json --quiet >> runs/$name.log 2>&1
      date -u +"%F %T end $name rc=$?" >> runs/seeds.log ) &
  done
done
wait
