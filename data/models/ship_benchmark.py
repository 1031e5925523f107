"""Ship a benchmark run (chapter 08_benchmarks): runs/NAME -> data/models/NAME. model.keras = the run's best.keras
(best validation step), loaded without compiling so no optimizer state is saved; config.json, history.csv,
loss.png copied; results.json (test and valid NLL by pianolab.benchmark.evaluate, steps, time, size), COMMAND.txt
and README.md written. Usage, from the repository root after `python -m pianolab train runs/NAME ...`
(data/models/train_benchmarks.sh does both and logs start and end times to runs/queue.log): python data/models/ship_benchmark.py NAME"""
import json, shutil, sys, time, platform
from pathlib import Path
import numpy as np, keras
from pianolab import benchmark
from pianolab.runs import load_run, History
name = sys.argv[1]
run, out = Path("runs") / name, Path("data/models") / name
out.mkdir(parents=True, exist_ok=True)
config, model = load_run(run, which="best")
model.save(out / "model.keras")  # loaded with compile=False: no optimizer state
for f in ("config.json", "history.csv", "loss.png"):
    shutil.copy(run / f, out / f)
hist = History.read(run)
data = benchmark.load(name)
t0 = time.perf_counter()
test, valid = benchmark.evaluate(model, data["test"]), benchmark.evaluate(model, data["valid"])
ok = np.isfinite(hist.val_loss)
best_step = int(hist.step[ok][np.argmin(hist.val_loss[ok])])
res = {"test_nll": round(test["nll"], 4), "test_nll_all_frames": round(test["nll_all_frames"], 4),
       "valid_nll": round(valid["nll"], 4), "valid_nll_all_frames": round(valid["nll_all_frames"], 4),
       "steps": int(hist.final_step), "best_validation_step": best_step, "train_seconds": round(float(hist.seconds[-1]), 1),
       "key_states": int(hist.column("key_states")[-1]),
       "params": int(model.count_params()), "receptive_field": int(config.receptive_field),
       "hardware": "Intel Xeon (avx2, fma, avx512f), 2 CPU cores shared with other jobs (nice -n 5), no GPU",
       "software": f"Python {platform.python_version()}, keras {keras.__version__}, tensorflow "
                   f"{__import__('tensorflow').__version__}"}
(out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps(res, indent=1), f"evaluated in {time.perf_counter() - t0:.0f} s")
log = [l.split() for l in Path("runs/queue.log").read_text().splitlines() if l.split()[3:4] == [name]]
started = next(" ".join(l[:2]) for l in log if l[2] == "start")
ended = next((" ".join(l[:2]) for l in log if l[2] == "end"), "still running")
title = {"nottingham": "Nottingham", "musedata": "MuseData", "pianomidi": "Piano-midi.de", "jsb": "JSB Chorales"}[name]
file = benchmark.FILES[name]
(out / "COMMAND.txt").write_text(f"""TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 .venv/bin/python -m pianolab train runs/{name} --config benchmarks/configs/{name}.json --quiet
# benchmarks/configs/{name}.json: data.benchmark "{name}" (the shipped data/benchmarks/{file}), data.transpose -6..6
# (each training piece also transposed where its notes stay on the 88 keys), model.filter_increments
# {config.filter_increments}, Adam {config.training.lr:g} -> {config.training.lr_final:g} (cosine) over {config.training.steps} steps of
# {config.training.batch_end} windows x {config.training.n_targets} key states, validation on the whole valid split every {config.training.validate_every} steps.
# Then `python data/models/ship_benchmark.py {name}`: model.keras = the run's best.keras (the best
# validation step, {best_step}), re-saved without optimizer state; config.json, history.csv and loss.png copied;
# results.json from pianolab.benchmark.evaluate on the test and valid splits. The test split played no part.

wall time: {hist.seconds[-1] / 60:.1f} min of training clock (history.csv, seconds column, validations included);
started {started} UTC, ended {ended} UTC
hardware: {res['hardware']}; other processes (notebook runs) shared the cores during the run
software: {res['software']}
""")
(out / "README.md").write_text(f"""# {title} model (chapter 08_benchmarks)

A pianolab model (dilated causal convolutions over the flat sequence of key states: 88 keys x the
set's frames) trained by pianolab's one trainer (`python -m pianolab train`, see `COMMAND.txt`) on
the training split of {title} in the Boulanger-Lewandowski split (`data/benchmarks/{file}`), each
training piece also transposed by -6..+6 semitones where its notes stay on the keyboard.

- filter increments `{config.filter_increments}`: {res['params']:,} parameters, receptive field
  {res['receptive_field']:,} key states ({res['receptive_field'] / 88:.1f} frames)
- {res['steps']:,} steps ({res['key_states'] / 1e6:.0f} M key states trained), {hist.seconds[-1] / 60:.0f} min of training on 2 shared
  CPU cores; `model.keras` is the model at step {best_step}, the best validation NLL

| split | NLL, first frame of each piece not scored | NLL, every frame scored |
|---|---|---|
| valid | {res['valid_nll']:.3f} | {res['valid_nll_all_frames']:.3f} |
| test | **{res['test_nll']:.3f}** | {res['test_nll_all_frames']:.3f} |

In nats per frame, summed over the 88 keys (`results.json`; `python benchmarks/polyphonic.py --only
{name}` recomputes the test figure). Published test NLLs: `data/benchmarks/README.md`.
""")
