"""Ship one of chapter 06_shallow_vs_deep's seed runs: runs/NAME -> data/models/NAME (NAME: small_deep_0 ...
small_shallow_2, trained by data/models/seeds/train_seeds.sh).

model.keras is the run's final model (training.steps), re-saved without optimizer state; config.json and
history.csv are copied; summary.json, COMMAND.txt (the exact commands, start and end from runs/seeds.log,
the hardware) and README.md are written, each to a temporary file and renamed (pianolab._io).
Usage, from the repository root: python data/models/seeds/ship_seed.py NAME [NAME ...]
"""

import json
import os
import platform
import re
import sys
from pathlib import Path

import keras
import numpy as np

from pianolab import _io
from pianolab.model import count_params, layer_plan
from pianolab.runs import History, load_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ship_benchmark import cpu  # noqa: E402  (the CPU's name and vector flags, as the benchmark records say them)

NAME = re.compile(r"small_(deep|shallow)_(\d)")


def _sessions(name):
    """[(start, end)] of each training session of the run, as runs/seeds.log has them ("stop": killed by hand)."""
    log = [line.split() for line in Path("runs/seeds.log").read_text().splitlines() if line.split()[3:4] == [name]]
    starts = [" ".join(f[:2]) for f in log if f[2] == "start"]
    ends = [" ".join(f[:2]) for f in log if f[2] in ("end", "stop")]
    return list(zip(starts, ends + ["still running"] * (len(starts) - len(ends))))


def main(name):
    arch, seed = NAME.fullmatch(name).groups()
    run, out = Path("runs") / name, Path("data/models") / name
    config, model = load_run(run, which="latest")
    hist = History.read(run)
    ok = np.isfinite(hist.val_loss)
    inc = config.filter_increments
    summary = {"name": name, "architecture": arch, "training_seed": int(seed), "steps": int(hist.final_step),
               "params": count_params(inc), "receptive_field": config.receptive_field,
               "layers": len(layer_plan(inc)), "blocks": len(inc),
               "final_val_loss": float(hist.val_loss[ok][-1]), "best_val_loss": float(hist.val_loss[ok].min()),
               "key_states": int(hist.key_states[-1]), "train_seconds": round(float(hist.seconds[-1]), 1),
               "snapshots": []}
    assert model.count_params() == summary["params"] and hist.final_step == config.training.steps
    _io.save_model(model, out / "model.keras")  # loaded with compile=False: no optimizer state
    for f in ("config.json", "history.csv"):
        _io.write_bytes(out / f, (run / f).read_bytes())
    _io.write_bytes(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    sessions = _sessions(name)
    resumed = "" if len(sessions) == 1 else f"""# Trained in {len(sessions)} sessions ({'; '.join(f'{s} to {e}' for s, e in sessions)} UTC), each but the
# first resuming from the newest checkpoint (optimizer state and step count; the batch of each step depends only on
# the seed and the step) with the same command: training.steps in data/models/seeds/small_{arch}.json changed
# between sessions (1,000, 2,000, 1,500, 1,100, then 1,200) as the plan met what two shared cores could do in
# the session; nothing else changed (sessions that started before 09:52 UTC ran under nice -n 5). config.json
# here is the final config.
"""
    tf_version = __import__("tensorflow").__version__
    _io.write_bytes(out / "COMMAND.txt", f"""# Exact commands, from the repository root (all six seed runs, side by side: bash data/models/seeds/train_seeds.sh).
# runs/{name}.json = data/models/seeds/small_{arch}.json with "training": {{"seed": {seed}}} (weights and batches;
# the split of pieces, data.seed, is 0 as for every corpus model); config.json here is that file.
TF_CPP_MIN_LOG_LEVEL=2 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 .venv/bin/python -m pianolab train runs/{name} --config runs/{name}.json --quiet
python data/models/seeds/ship_seed.py {name}
{resumed}#
# Started {sessions[0][0]} UTC, ended {sessions[-1][1]} UTC; pianolab's training clock at step {summary['steps']:,}: {summary['train_seconds']:.0f} s
# (history.csv, seconds column, validations included); {summary['key_states']:,} key states predicted.
# Hardware: {cpu()}, {os.cpu_count()} cores, one thread per run; the runs trained side by side and shared the
# cores with other jobs (notebook runs), so the wall time says little about an idle machine.
# Software: Python {platform.python_version()}, keras {keras.__version__}, tensorflow {tf_version}.
""")
    other = "shallow" if arch == "deep" else "deep"
    _io.write_bytes(out / "README.md", f"""# `{name}`: a small {arch} model of chapter 06_shallow_vs_deep, training seed {seed}

| | |
|---|---|
| blocks x layers | {summary['blocks']} block{'s' if summary['blocks'] > 1 else ''}, {summary['layers']} dilated layers |
| parameters | {summary['params']:,} |
| receptive field | {summary['receptive_field']:,} key states |
| training | {summary['steps']:,} Adam steps (lr {config.training.lr:g}, batch ramp {config.training.batch_start} -> {config.training.batch_end}), training seed {seed} |
| validation loss at step {summary['steps']:,} | {summary['final_val_loss']:.5f} nats per key state |

One of six runs (`small_deep_0..2`, `small_shallow_0..2`) that repeat the deep-versus-shallow comparison of
chapter 06 at a tenth of the size with three training seeds per architecture: the same data, split, optimizer,
schedule and validation windows as `small_{other}_{seed}`, which has about as many parameters and the same receptive
field. `COMMAND.txt` has the exact commands, the time and the hardware. Load it with
`pianolab.runs.load_model("{name}")`.
""")
    print(json.dumps(summary))


if __name__ == "__main__":
    names = sys.argv[1:]
    if not names or not all(NAME.fullmatch(n) for n in names):
        sys.exit("usage: python data/models/seeds/ship_seed.py NAME [NAME ...], NAME like small_deep_0")
    for n in names:
        main(n)
