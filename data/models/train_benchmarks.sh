#!/usr/bin/env bash
# Trains the three benchmark models shipped beside data/models/jsb, one after the other, as they were
# trained (2026-11-26), logging start and end times to runs/queue.log; then ship each with
# `python data/models/ship_benchmark.py NAME`. Run from the repository root: bash data/models/train_benchmarks.sh
set -u
mkdir -p runs
for n in nottingham musedata pianomidi; do
  date -u +"%F %T start $n" >> runs/queue.log
  TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 .venv/bin/python -m pianolab train runs/$n --config benchmarks/configs/$n.json --quiet > runs/$n.log 2>&1
  date -u +"%F %T end $n rc=$?" >> runs/queue.log
done
