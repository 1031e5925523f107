"""pianolab.train: the one loop, its run directory, exact resume (also after kill -9 of the command),
snapshots, the NaN stop, MirroredStrategy. Tiny models and a few steps each."""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import habit_rolls, tiny_config

from pianolab import _io
from pianolab.config import RunConfig
from pianolab.encoding import DEFAULT_ENCODING
from pianolab.errors import ConfigError
from pianolab.model import count_params, layer_plan, logit, receptive_field
from pianolab.runs import (HISTORY_COLUMNS, SNAPSHOT_FILE, History, load_model, load_run, load_snapshot,
                           snapshot_steps)
from pianolab._trainer import Trainer
from pianolab.errors import TrainingError
from pianolab.train import describe, train
from pianolab.windows import Windows

REPO = Path(__file__).resolve().parent.parent
K = DEFAULT_ENCODING.n_keys
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|keras|weights\.h5|npy)$")  # what _io.atomic_path writes


def weights_equal(a, b, rtol=0.0):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for u, v in zip(wa, wb):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=0 if rtol == 0 else 1e-7)


def same_history(a, b, rtol=0.0):
    """Rows equal in every column but the wall-clock ``seconds``."""
    assert [r["step"] for r in a.rows] == [r["step"] for r in b.rows]
    for ra, rb in zip(a.rows, b.rows):
        for c in HISTORY_COLUMNS[1:-1]:
            assert (ra[c] is None) == (rb[c] is None), (ra, rb)
            if ra[c] is not None:
                assert ra[c] == pytest.approx(rb[c], rel=rtol, abs=0), (c, ra, rb)


# ----------------------------------------------------------------------------------------------
# Rules that need the data, and the run directory's own config


def test_receptive_field_longer_than_the_data(dataset, tmp_path):
    longest = max(b - a for _, a, b in dataset.train.pieces)
    too_big = next(n for n in ("two_blocks_4_3", "pianonet_mini", "micro_1") if receptive_field(n) > longest)
    with pytest.raises(ConfigError) as err:
        train(tmp_path / "run", RunConfig(model={"preset": too_big}, training={"n_targets": 64}), dataset=dataset,
              progress=False)
    assert err.value.key == "model.preset" and "receptive field" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(tmp_path / "run", RunConfig(model={"filter_increments": [[1] * 14]}), dataset=dataset, progress=False)
    assert err.value.key == "model.filter_increments"
    with pytest.raises(ConfigError) as err:
        train(tmp_path / "run", tiny_config(n_targets=dataset.train.sequence.size + 1), dataset=dataset, progress=False)
    assert err.value.key == "training.n_targets"
    with pytest.raises(ConfigError) as err:
        train(tmp_path / "run", tiny_config(), steps=-1, dataset=dataset, progress=False)
    assert err.value.key == "steps"
    assert not (tmp_path / "run").exists(), "a refused run writes nothing"


def test_open_dataset_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        RunConfig(data={"dataset": str(tmp_path)}).open_dataset()
    assert err.value.key == "data.dataset" and "python -m pianolab data" in str(err.value)
    with pytest.raises(ConfigError) as err:
        RunConfig(data={"corpus": str(tmp_path / "nope")}).open_dataset()
    assert err.value.key == "data.corpus"


def test_describe_counts_layers_parameters_and_receptive_field():
    line = describe(tiny_config())
    assert line.startswith(f"{len(layer_plan('tiny'))} layers in 2 blocks")
    assert f"{count_params('tiny'):,} parameters" in line and f"{receptive_field('tiny'):,} key states" in line


# ----------------------------------------------------------------------------------------------
# Training


def test_calibrated_output_bias_uses_the_training_rate(dataset):
    rate = np.count_nonzero(dataset.train.sequence) / dataset.train.sequence.size
    model = tiny_config().build_model(dataset)
    assert model.get_layer("output").get_weights()[1][0] == pytest.approx(logit(rate), rel=1e-5)
    cfg = RunConfig.from_dict({"model": {"preset": "tiny", "output_bias": 0}})
    assert cfg.build_model(dataset).get_layer("output").get_weights()[1][0] == 0.0


@pytest.mark.parametrize("validate_every, stop", [(8, 8), (0, 6)])
def test_resume_continues_exactly(dataset, tmp_path, validate_every, stop):
    """A run stopped at ``stop`` and resumed to 16 equals 16 steps in one go -- weights, history and
    snapshots -- with validation on and off. Only training.steps and training.snapshot_at may change.
    (A run validates at the step it stops at, so with validation on it stops at a validation step.)"""
    cfg = tiny_config(batch_start=1, batch_end=4, validate_every=validate_every, checkpoint_every=4,
                      snapshot_at=[6, 12, 40])
    a, b = tmp_path / "a", tmp_path / "b"
    full = train(a, cfg, dataset=dataset, progress=False)
    train(b, cfg, steps=stop, dataset=dataset, progress=False)
    at_stop = load_model(b)
    with pytest.raises(ConfigError) as err:
        train(b, tiny_config(lr=1e-2), dataset=dataset, progress=False)
    assert err.value.key == "training.lr" and str(b) in str(err.value)
    more = tiny_config(batch_start=1, batch_end=4, validate_every=validate_every, checkpoint_every=4,
                       snapshot_at=[6, 12, 14, 40])
    resumed = train(b, more, steps=16, dataset=dataset, progress=False)
    weights_equal(load_model(a), load_model(b))
    same_history(resumed, full)
    assert resumed.rows == History.read(b).rows
    assert RunConfig.from_json(b / "config.json").training.snapshot_at == [6, 12, 14, 40]
    # snapshots are kept for good although no checkpoint fell at 6 or 14, and step 40 is not reached
    assert snapshot_steps(a) == [6, 12] and snapshot_steps(b) == [6, 12, 14]
    for step in (6, 12):
        weights_equal(load_snapshot(a, step), load_snapshot(b, step))
    if stop == 6:  # the snapshot is the model a 6-step run ends with
        weights_equal(load_snapshot(a, 6), at_stop)
    else:
        weights_equal(load_model(a / "checkpoints" / f"step-{stop:08d}.keras"), at_stop)
    assert not np.array_equal(load_snapshot(b, 12).get_weights()[0], load_snapshot(b, 14).get_weights()[0])
    import h5py  # installed with Keras

    with h5py.File(b / SNAPSHOT_FILE.format(12), "r") as f:
        assert "optimizer" not in f, "a snapshot holds the weights alone, not the Adam state"
    assert not [p for p in b.rglob(".*")], "temporary files left behind"
    state = json.loads((b / "checkpoints" / "latest.json").read_text())
    assert state["step"] == 16 and (b / "checkpoints" / state["file"]).is_file()
    assert len(list((b / "checkpoints").glob("step-*.keras"))) == cfg.training.keep_checkpoints
    # history: a row every log_every steps (validation at 0 too), the batch-size ramp, key states
    h = full
    assert tuple((a / "history.csv").read_text().splitlines()[0].split(",")) == HISTORY_COLUMNS
    assert list(h.step) == ([0] if validate_every else []) + list(range(2, 17, 2))
    steps = [int(s) for s in h.step]
    assert list(h.batch_size) == [cfg.batch_size_at(max(0, s - 1)) for s in steps]
    # key states: the weighted targets of the batches so far; the batch of step s is drawn with (seed, s)
    windows = Windows(dataset.train, receptive_field("tiny"), 384)
    seen = [int(windows.cut(*windows.sample(np.random.default_rng([0, s]), cfg.batch_size_at(s)))[2].sum())
            for s in range(16)]
    assert list(h.key_states) == [sum(seen[:n]) for n in steps]
    assert (np.diff(h.seconds) >= 0).all()
    loaded, model = load_run(a)
    assert loaded == cfg and model.count_params() == count_params("tiny")
    assert (a / "loss.png").read_bytes()[:4] == b"\x89PNG"
    if validate_every:
        val = np.isfinite(h.val_loss)
        assert list(h.step[val]) == [0, 8, 16]
        np.testing.assert_allclose(h.val_nats_per_step[val], K * h.val_loss[val])
        assert h.val_loss[-1] < h.val_loss[0], "validation loss did not fall"
        best = int(h.step[val][np.argmin(h.val_loss[val])])  # best.keras is the model of that step
        weights_equal(load_model(a, which="best"), load_model(a / "checkpoints" / f"step-{best:08d}.keras"))
    else:
        assert not np.isfinite(h.val_loss).any() and not (a / "best.keras").exists()


def test_cosine_decay_reaches_lr_final(dataset, tmp_path):
    cfg = tiny_config(lr=3e-3, lr_final=3e-4, steps=6, checkpoint_every=3, validate_every=0)
    trainer = Trainer(tmp_path / "run", cfg, dataset, progress=False)
    lr = lambda: float(np.asarray(trainer.model.optimizer.learning_rate))  # noqa: E731
    assert lr() == pytest.approx(3e-3)
    trainer.run(3)
    assert lr() == pytest.approx(3e-4 + (3e-3 - 3e-4) * (1 + math.cos(math.pi / 2)) / 2, rel=1e-5)
    trainer = Trainer(tmp_path / "run", cfg, dataset, progress=False)  # resumed: the schedule goes on
    assert trainer.resumed and trainer.step == 3
    trainer.run(6)
    assert lr() == pytest.approx(3e-4, rel=1e-5)


def test_nan_loss_stops_the_run(dataset, tmp_path):
    # a learning rate of 1e30 blows the weights up to inf after one step: inf - inf = NaN
    with pytest.raises(TrainingError, match=r"loss became nan by step \d+ .*no checkpoint.*training\.lr"):
        train(tmp_path / "run", tiny_config(lr=1e30), dataset=dataset, progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "latest.json").exists()


# ----------------------------------------------------------------------------------------------
# Writes killed half-way leave temp files; the trainer removes pianolab's own, and nothing else


def test_remove_temp_files_removes_only_pianolab_temp_names(tmp_path):
    real = tmp_path / "real"
    names = []
    for target, suffix in (("model.keras", ".keras"), ("history.csv", ".tmp"), ("step-000001.weights.h5",
                                                                                ".weights.h5"), ("train.npy", ".npy")):
        with _io.atomic_path(real / target, suffix=suffix) as tmp:  # the names a killed writer leaves
            names.append(Path(tmp).name)
            Path(tmp).write_bytes(b"x")
    folder = tmp_path / "run"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"half a file")
    keep = ["model.keras", ".model.keras", ".hidden", "notes.tmp", ".x.abc12.tmp", ".x.ABCDEFGH.tmp",
            ".x.abcdefgh.mid", ".x.abcdefgh.tmp.bak", "x.abcdefgh.tmp"]
    for name in keep:
        (folder / name).write_text("not ours")
    (folder / ".dir.abcdefgh.tmp").mkdir()  # a folder is never a temp file
    (folder / "sub").mkdir()
    (folder / "sub" / names[0]).write_text("not in this folder")
    assert sorted(_io.remove_temp_files(folder)) == sorted(names)
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep + [".dir.abcdefgh.tmp", "sub"])
    assert (folder / "sub" / names[0]).exists()
    assert _io.remove_temp_files(tmp_path / "missing") == []


def _dataset_folder(tmp_path):
    """A dataset folder built by build_dataset from a few small MIDI files."""
    from pianolab.data import build_dataset
    from pianolab.encoding import write_midi

    corpus = tmp_path / "corpus"
    for name, roll in habit_rolls("piece", 6, 120, seed=3).items():
        write_midi(roll, corpus / f"{name}.mid")
    return build_dataset(corpus, tmp_path / "dataset", n_clones=0, val_fraction=0.34, progress=False)


def _last_step(history_csv):
    try:
        lines = history_csv.read_text().strip().splitlines()
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else -1
    except (OSError, ValueError, IndexError):
        return -1


def test_kill_9_at_random_moments_then_the_same_command_resumes(tmp_path):
    """The command-line run, killed with SIGKILL at random moments (in a step, a validation, a
    checkpoint or snapshot write) and started again each time, ends with the weights, history and
    snapshots of an uninterrupted run, and leaves no temp files behind -- validation on and off."""
    from pianolab.data import load_dataset

    folder = _dataset_folder(tmp_path)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    for validate_every, n_kills in ((5, 2), (0, 1)):
        cfg = tiny_config(steps=20, checkpoint_every=5, validate_every=validate_every, log_every=1,
                          snapshot_at=[7, 15], keep_checkpoints=2)
        cfg.data.dataset = str(folder)
        cfg.to_json(tmp_path / "cfg.json")
        run = tmp_path / f"run{validate_every}"
        cmd = [sys.executable, "-m", "pianolab", "train", str(run), "--config", str(tmp_path / "cfg.json"), "--quiet"]
        kills = []
        for _ in range(n_kills):
            before = _last_step(run / "history.csv")
            log = open(tmp_path / "stderr.txt", "w")  # a file, not a pipe nobody reads while waiting
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.time() + 120
            while _last_step(run / "history.csv") <= before and proc.poll() is None:
                assert time.time() < deadline, (tmp_path / "stderr.txt").read_text()[-3000:]
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is not None:
                log.close()
                assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
            kills.append(_last_step(run / "history.csv"))
        # debris of killed writes, planted where the trainer writes, and files that are not ours
        debris = [run / ".model.keras.k1ll3d_x.keras", run / "checkpoints" / ".latest.json.abcd1234.tmp",
                  run / "snapshots" / ".step-000007.weights.h5.zz99_a0b.weights.h5"]
        for path in debris:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half a file")
        (run / "notes.txt").write_text("mine")
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "step 20" in res.stdout

        straight = tmp_path / f"straight{validate_every}"
        want = train(straight, cfg, dataset=load_dataset(folder), progress=False)
        why = f"validate_every={validate_every}, killed at history steps {kills} (random seed {seed})"
        h = History.read(run)
        assert list(h.step) == list(range(0 if validate_every else 1, 21)), why
        same_history(h, want, rtol=1e-6)
        weights_equal(load_model(run), load_model(straight), rtol=1e-5)
        if validate_every:
            weights_equal(load_model(run, which="best"), load_model(straight, which="best"), rtol=1e-5)
        assert snapshot_steps(run) == [7, 15], why
        for step in (7, 15):
            weights_equal(load_snapshot(run, step), load_snapshot(straight, step), rtol=1e-5)
        assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 20
        assert len(list((run / "checkpoints").glob("step-*.keras"))) == cfg.training.keep_checkpoints
        left = [p.relative_to(run) for p in run.rglob("*") if TEMP_NAME.match(p.name)]
        assert left == [], f"temp files left: {left} ({why})"
        assert (run / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# Data parallel: MirroredStrategy on two logical CPU devices, the same loop

_MIRRORED = textwrap.dedent("""
    import sys, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from conftest import tiny_dataset, tiny_config
    from pianolab.runs import load_model
    from pianolab._trainer import Trainer
    from pianolab.train import train

    ds = tiny_dataset()
    with tempfile.TemporaryDirectory() as d:
        cfg = tiny_config(distribute="mirrored", batch_start=2, batch_end=4, batch_double_every=3, steps=12,
                          checkpoint_every=4, validate_every=4)
        train(d + "/mirrored", cfg, steps=8, dataset=ds, progress=False)  # a validation step: see test_resume
        h = train(d + "/mirrored", None, dataset=ds, progress=False)  # resumed under the strategy
        trainer = Trainer(d + "/mirrored", cfg, ds, progress=False)
        print("REPLICAS", trainer.strategy.num_replicas_in_sync, type(trainer.model.weights[0].value).__name__)
        single = train(d + "/single", tiny_config(batch_start=2, batch_end=4, batch_double_every=3, steps=12,
                                                  checkpoint_every=4, validate_every=4), dataset=ds, progress=False)
        full = train(d + "/mirrored_full", cfg, dataset=ds, progress=False)  # never interrupted
        assert [r["step"] for r in h.rows] == [r["step"] for r in single.rows] == [r["step"] for r in full.rows]
        np.testing.assert_allclose(h.train_loss[1:], full.train_loss[1:], rtol=1e-5)  # resumed exactly
        for a, b in zip(load_model(d + "/mirrored").get_weights(), load_model(d + "/mirrored_full").get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        # each replica averages over its half of a batch, so the run is close to, not equal to, one device
        np.testing.assert_allclose(h.train_loss[1:], single.train_loss[1:], rtol=0.05)
        np.testing.assert_allclose(h.val_loss[np.isfinite(h.val_loss)], single.val_loss[np.isfinite(single.val_loss)],
                                   rtol=0.05)
    print("MIRRORED_OK")
""")


def test_mirrored_strategy_on_two_logical_cpus():
    """training.distribute='mirrored' trains data-parallel under MirroredStrategy (fit splits each
    batch), validates, resumes exactly, and ends close to a single-device run."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", _MIRRORED, str(Path(__file__).parent)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "REPLICAS 2 Mirrored" in res.stdout and "MIRRORED_OK" in res.stdout
