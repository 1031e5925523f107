"""Ship a benchmark run (chapter 09_benchmarks): runs/NAME -> data/models/NAME.

model.keras is the run's best.keras (the best validation step), loaded without compiling so no optimizer
state is saved; config.json, history.csv and loss.png are copied; results.json (test and valid NLL by
pianolab.benchmark.nll_per_frame, steps, time, size), COMMAND.txt and README.md are written. Every file is
written to a temporary file and renamed (pianolab._io). Usage, from the repository root, after
`bash data/models/train_benchmarks.sh` (which trains runs/NAME and logs start and end times to
runs/queue.log): python data/models/ship_benchmark.py NAME
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from pianolab import _io, benchmark
from pianolab.runs import History, load_run

TITLES = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData", "pianomidi": "Piano-midi.de"}


def cpu():
    """The CPU's model name and its vector flags (Linux), for the record."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    field = lambda key: next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith(key)), "")  # noqa: E731,E741
    flags = [f for f in ("avx2", "fma", "avx512f") if f in field("flags").split()]
    return f"{field('model name') or platform.processor() or 'unknown CPU'} ({', '.join(flags) or 'no AVX2'})"


def _times(name):
    """Start and end of the training run, as train_benchmarks.sh logged them."""
    log = [line.split() for line in Path("runs/queue.log").read_text().splitlines() if line.split()[3:4] == [name]]
    started = next(" ".join(fields[:2]) for fields in log if fields[2] == "start")
    return started, next((" ".join(fields[:2]) for fields in log if fields[2] == "end"), "still running")


def _record(name, config, model, hist):
    data = benchmark.load(name)
    t0 = time.perf_counter()
    test, valid = benchmark.nll_per_frame(model, data["test"]), benchmark.nll_per_frame(model, data["valid"])
    print(f"evaluated in {time.perf_counter() - t0:.0f} s")
    tf_version = __import__("tensorflow").__version__ if keras.backend.backend() == "tensorflow" else "not used"
    return {"test_nll": round(test["nll"], 4), "test_nll_all_frames": round(test["nll_all_frames"], 4),
            "valid_nll": round(valid["nll"], 4), "valid_nll_all_frames": round(valid["nll_all_frames"], 4),
            "steps": int(hist.final_step), "train_seconds": round(float(hist.seconds[-1]), 1),
            "key_states": int(hist.key_states[-1]), "params": int(model.count_params()),
            "receptive_field": int(config.receptive_field),
            "hardware": f"{cpu()}, {os.cpu_count()} CPU cores shared with other jobs (nice -n 5), no GPU",
            "software": f"Python {platform.python_version()}, keras {keras.__version__}, tensorflow {tf_version}"}


def _command(name, config, hist, res, best_step):
    t, (started, ended) = config.training, _times(name)
    return f"""TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 .venv/bin/python -m pianolab train runs/{name} --config benchmarks/configs/{name}.json --quiet
# benchmarks/configs/{name}.json: data.benchmark "{name}" (the shipped data/benchmarks/{benchmark.FILES[name]}), data.transpose -6..6
# (each training piece also transposed where its notes stay on the 88 keys), model.filter_increments
# {config.filter_increments}, Adam {t.lr:g} -> {t.lr_final:g} (cosine) over {t.steps} steps of
# {t.batch_end} windows x {t.n_targets} key states, validation on the whole valid split every {t.validate_every} steps.
# Then `python data/models/ship_benchmark.py {name}`: model.keras = the run's best.keras (the best
# validation step, {best_step}), re-saved without optimizer state; config.json, history.csv and loss.png copied;
# results.json from pianolab.benchmark.nll_per_frame on the test and valid splits. The test split played no part.

wall time: {hist.seconds[-1] / 60:.1f} min of training clock (history.csv, seconds column, validations included);
started {started} UTC, ended {ended} UTC
hardware: {res['hardware']}; other processes (notebook runs) shared the cores during the run
software: {res['software']}
"""


def _readme(name, config, hist, res, best_step):
    title, file = TITLES[name], benchmark.FILES[name]
    return f"""# {title} model (chapter 09_benchmarks)

A pianolab model (dilated causal convolutions over the flat sequence of key states: 88 keys x the
set's frames) trained by pianolab's one trainer (`python -m pianolab train`, see `COMMAND.txt`) on
the training split of {title} in the Boulanger-Lewandowski split (`data/benchmarks/{file}`), each
training piece also transposed by -6..+6 semitones where its notes stay on the keyboard.

- filter increments `{config.filter_increments}`: {res['params']:,} parameters, receptive field
  {res['receptive_field']:,} key states ({res['receptive_field'] / 88:.1f} frames)
- {res['steps']:,} steps ({res['key_states'] / 1e6:.0f} M key states trained), {hist.seconds[-1] / 60:.0f} min of training on {os.cpu_count()} shared
  CPU cores; `model.keras` is the model at step {best_step}, the best validation NLL

| split | NLL, first frame of each piece not scored | NLL, every frame scored |
|---|---|---|
| valid | {res['valid_nll']:.3f} | {res['valid_nll_all_frames']:.3f} |
| test | **{res['test_nll']:.3f}** | {res['test_nll_all_frames']:.3f} |

In nats per frame, summed over the 88 keys (`results.json`; `python benchmarks/polyphonic.py --only
{name}` recomputes the test figure). Published test NLLs: `data/benchmarks/README.md`.
"""


def main(name):
    run, out = Path("runs") / name, Path("data/models") / name
    config, model = load_run(run, which="best")
    hist = History.read(run)
    ok = np.isfinite(hist.val_loss)
    best_step = int(hist.step[ok][np.argmin(hist.val_loss[ok])])
    _io.save_model(model, out / "model.keras")  # loaded with compile=False: no optimizer state
    for f in ("config.json", "history.csv", "loss.png"):
        _io.write_bytes(out / f, (run / f).read_bytes())
    res = {**_record(name, config, model, hist), "best_validation_step": best_step}
    _io.write_bytes(out / "results.json", json.dumps(res, indent=1) + "\n")
    _io.write_bytes(out / "COMMAND.txt", _command(name, config, hist, res, best_step))
    _io.write_bytes(out / "README.md", _readme(name, config, hist, res, best_step))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TITLES:
        sys.exit(f"usage: python data/models/ship_benchmark.py NAME, NAME one of {list(TITLES)}")
    main(sys.argv[1])
