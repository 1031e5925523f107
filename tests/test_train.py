"""pianolab.train: run configs, the training loop, resume after kill -9, NaN stop, evaluation,
MirroredStrategy. Tiny models and a few steps: the whole file runs in about a minute."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pianolab.data import Dataset, Split  # noqa: E402
from pianolab.encoding import DEFAULT_ENCODING  # noqa: E402
from pianolab.errors import ConfigError  # noqa: E402
from pianolab.train import (  # noqa: E402
    HISTORY_COLUMNS,
    History,
    RunConfig,
    TrainingError,
    evaluate,
    load_model,
    load_run,
    load_snapshot,
    make_model,
    snapshot_steps,
    train,
)

REPO = Path(__file__).resolve().parent.parent
K = DEFAULT_ENCODING.n_keys


def _split(name, n_pieces, steps, seed, dtype=np.uint8):
    """Random rolls with a learnable habit: a key that is down tends to stay down."""
    rng = np.random.default_rng(seed)
    seqs, pieces, pos = [], [], 0
    for i in range(n_pieces):
        roll = (rng.random((steps, K)) < 0.03).astype(np.uint8)
        for t in range(1, steps):
            roll[t] |= roll[t - 1] & (rng.random(K) < 0.85)
        seqs.append(roll.reshape(-1))
        pieces.append((f"{name}{i}", pos, pos + roll.size))
        pos += roll.size
    return Split(name, np.concatenate(seqs).astype(dtype), pieces, DEFAULT_ENCODING)


def tiny_dataset(seed=0):
    return Dataset(None, _split("train", 6, 120, seed), _split("val", 2, 80, seed + 1), DEFAULT_ENCODING, {})


def tiny_config(**training):
    t = {"n_targets": 384, "batch_start": 2, "batch_end": 2, "batch_double_every": 4, "steps": 16,
         "checkpoint_every": 8, "validate_every": 8, "log_every": 2, "lr": 3e-3}
    t.update(training)
    return RunConfig(model={"preset": "tiny"}, training=t, validation={"n_windows": 3})


@pytest.fixture(scope="module")
def dataset():
    return tiny_dataset()


# ----------------------------------------------------------------------------------------------
# Config


def test_config_round_trip(tmp_path):
    cfg = tiny_config()
    cfg.to_json(tmp_path / "c.json")
    again = RunConfig.from_json(tmp_path / "c.json")
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert RunConfig().model.preset == "pianonet_mini" and RunConfig().training.lr == 1e-4
    assert RunConfig().receptive_field == 8191
    # explicit filter_increments replace the default preset
    c = RunConfig.from_dict({"model": {"filter_increments": [[2, 2], [2]]}})
    assert c.model.preset is None and c.receptive_field == 1 + 1 + 2 + 1
    ramp = [tiny_config(batch_start=1, batch_end=4).batch_size_at(s) for s in range(14)]
    assert ramp == [1] * 4 + [2] * 4 + [4] * 6


@pytest.mark.parametrize("bad, key", [
    ({"trainig": {}}, "trainig"),
    ({"training": {"learning_rate": 0.1}}, "training.learning_rate"),
    ({"training": {"lr": "fast"}}, "training.lr"),
    ({"training": {"lr": -1}}, "training.lr"),
    ({"training": {"n_targets": 10.5}}, "training.n_targets"),
    ({"training": {"steps": True}}, "training.steps"),
    ({"training": {"batch_start": 8, "batch_end": 4}}, "training.batch_end"),
    ({"training": {"distribute": "horovod"}}, "training.distribute"),
    ({"model": {"preset": "huge"}}, "model.preset"),
    ({"model": {"preset": "tiny", "filter_increments": [[2]]}}, "model.filter_increments"),
    ({"model": {"filter_increments": [[0, 2]]}}, "model.filter_increments"),
    ({"model": {"output_bias": "auto"}}, "model.output_bias"),
    ({"data": {"encoding": {"n_keys": 200}}}, "data.encoding"),
    ({"validation": {"n_windows": 0}}, "validation.n_windows"),
    ({"model": "tiny"}, "model"),
    ({"training": {"snapshot_at": [0, 100]}}, "training.snapshot_at"),
    ({"training": {"snapshot_at": 100}}, "training.snapshot_at"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(bad)
    assert err.value.key == key
    assert key in str(err.value)
    assert "expected" in str(err.value) or "allowed" in str(err.value) or "give" in str(err.value)


def test_config_file_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json(p)
    p.write_text(json.dumps({"training": {"lr": "x"}}))
    with pytest.raises(ConfigError, match=r"training\.lr.*c\.json"):
        RunConfig.from_json(p)


def test_receptive_field_longer_than_the_data(dataset, tmp_path):
    cfg = RunConfig(model={"preset": "micro_1"}, training={"n_targets": 64, "steps": 1})  # RF 10,509 > 8,640
    with pytest.raises(ConfigError) as err:
        train(tmp_path / "run", cfg, dataset=dataset, progress=False)
    assert err.value.key == "model.preset" and "receptive field" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(tmp_path / "run", tiny_config(n_targets=10**7), dataset=dataset, progress=False)
    assert err.value.key == "training.n_targets"


def test_a_run_directory_refuses_a_different_config(dataset, tmp_path):
    run = tmp_path / "run"
    train(run, tiny_config(steps=2, checkpoint_every=2), dataset=dataset, progress=False)
    with pytest.raises(ConfigError) as err:
        train(run, tiny_config(lr=1e-2, steps=2), dataset=dataset, progress=False)
    assert err.value.key == "training.lr"
    # only the number of steps may change: that continues the run
    h = train(run, tiny_config(steps=4, checkpoint_every=2), dataset=dataset, progress=False)
    assert h.final_step == 4


# ----------------------------------------------------------------------------------------------
# Training


def test_small_run_writes_its_run_directory(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(batch_start=1, batch_end=4)
    h = train(run, cfg, dataset=dataset, progress=False)
    assert {"config.json", "history.csv", "loss.png", "model.keras", "best.keras", "checkpoints"} <= {
        p.name for p in run.iterdir()}
    state = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert state["step"] == 16 and (run / "checkpoints" / state["file"]).is_file()
    assert not list(run.rglob(".*tmp*")), "temporary files left behind"
    # history: header, rows every log_every steps, validation at 0, 8, 16
    header = (run / "history.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == HISTORY_COLUMNS
    assert list(h.step) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert list(h.batch_size) == [1, 1, 1, 2, 2, 4, 4, 4, 4]
    assert np.isfinite(h.val_loss[[0, 4, 8]]).all() and np.isnan(h.val_loss[[1, 2, 3]]).all()
    np.testing.assert_allclose(h.val_nats_per_step[[0, 4, 8]], K * h.val_loss[[0, 4, 8]])
    assert list(h.key_states) == list(np.cumsum([0, 2, 2, 4, 4, 8, 8, 8, 8]) * 384)
    assert (np.diff(h.seconds) >= 0).all()
    assert h.val_loss[8] < h.val_loss[0], "validation loss did not fall"
    assert History.read(run).rows == h.rows
    loaded, model = load_run(run)
    assert loaded == cfg and model.count_params() == 5937
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrated_output_bias_uses_the_training_rate(dataset):
    rate = np.count_nonzero(dataset.train.sequence) / dataset.train.sequence.size
    model = make_model(tiny_config(), dataset)
    assert model.get_layer("output").get_weights()[1][0] == pytest.approx(math.log(rate / (1 - rate)), rel=1e-5)
    cfg = RunConfig.from_dict({"model": {"preset": "tiny", "output_bias": 0}})
    assert make_model(cfg, dataset).get_layer("output").get_weights()[1][0] == 0.0


def test_resume_continues_exactly(dataset, tmp_path):
    full = train(tmp_path / "a", tiny_config(), dataset=dataset, progress=False)
    train(tmp_path / "b", tiny_config(), steps=8, dataset=dataset, progress=False)
    resumed = train(tmp_path / "b", None, steps=16, dataset=dataset, progress=False)
    for wa, wb in zip(load_model(tmp_path / "a").get_weights(), load_model(tmp_path / "b").get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert [r["step"] for r in resumed.rows] == [r["step"] for r in full.rows]
    np.testing.assert_allclose(resumed.train_loss[1:], full.train_loss[1:], rtol=1e-6)


def test_snapshots_keep_the_weights_of_their_steps(dataset, tmp_path):
    """training.snapshot_at keeps weights at those steps for good (checkpoints rotate); a run can
    be extended with more snapshot steps; load_snapshot rebuilds the model of a step."""
    short = train(tmp_path / "a", tiny_config(steps=6, checkpoint_every=4), dataset=dataset, progress=False)
    run = tmp_path / "b"
    train(run, tiny_config(snapshot_at=[3, 6, 40], checkpoint_every=4), steps=10, dataset=dataset,
          progress=False)
    assert snapshot_steps(run) == [3, 6]  # step 40 is not reached yet
    assert short.final_step == 6
    # the snapshot of step 6 is the model a 6-step run ends with, although no checkpoint fell there
    for wa, wb in zip(load_model(tmp_path / "a").get_weights(), load_snapshot(run, 6).get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(load_snapshot(run, 3).get_weights()[0], load_snapshot(run, 6).get_weights()[0])
    import h5py  # installed with Keras

    with h5py.File(run / "snapshots" / "step-000006.weights.h5", "r") as f:
        assert "optimizer" not in f, "a snapshot holds the weights alone, not the Adam state"
    # resuming with more snapshot steps is allowed (like more steps); other changes are not
    train(run, tiny_config(snapshot_at=[3, 6, 12], checkpoint_every=4), steps=12, dataset=dataset,
          progress=False)
    assert snapshot_steps(run) == [3, 6, 12]
    assert RunConfig.from_json(run / "config.json").training.snapshot_at == [3, 6, 12]
    with pytest.raises(ConfigError, match=r"no snapshot at step 5.*\[3, 6, 12\]"):
        load_snapshot(run, 5)
    assert not list(run.rglob(".*tmp*")), "temporary files left behind"


def test_nan_loss_stops_the_run(dataset, tmp_path):
    # a learning rate of 1e30 blows the weights up to inf after one step: inf - inf = NaN
    with pytest.raises(TrainingError, match=r"loss became nan at step \d+ .*no checkpoint.*training\.lr"):
        train(tmp_path / "run", tiny_config(lr=1e30), dataset=dataset, progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "latest.json").exists()


def test_evaluate_scores_every_key_state(dataset):
    """Whole-split evaluation equals a direct numpy computation: each piece from silence."""
    model = make_model(tiny_config(), dataset)
    rf = 95
    res = evaluate(model, dataset.val, n_targets=1000, batch_size=2)
    total, count = 0.0, 0
    for _, a, b in dataset.val.pieces:
        seq = dataset.val.sequence[a:b].astype(np.float32)
        x = np.concatenate([np.zeros(rf, np.float32), seq[:-1]])[None, :, None]
        p = np.clip(np.asarray(model(x))[0, :, 0].astype(np.float64), 1e-7, 1 - 1e-7)
        total += -(seq * np.log(p) + (1 - seq) * np.log(1 - p)).sum()
        count += seq.size
    assert res["key_states"] == count
    assert res["loss_per_state"] == pytest.approx(total / count, rel=1e-5)
    assert res["nats_per_step"] == pytest.approx(K * total / count, rel=1e-5)
    fixed = evaluate(model, dataset.val, n_targets=256, n_windows=3, seed=5)
    assert fixed == evaluate(model, dataset.val, n_targets=256, n_windows=3, seed=5)
    assert fixed["key_states"] == 3 * 256


def test_cli_errors(tmp_path, capsys):
    from pianolab.cli import main

    assert main(["train", str(tmp_path / "r"), "--config", str(tmp_path / "missing.json")]) == 2
    assert "--config" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": {"stepz": 3}}))
    assert main(["train", str(tmp_path / "r"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "training.stepz" in err and "allowed keys" in err
    assert main(["train", str(tmp_path / "r"), "--steps", "-3"]) == 2
    assert "--steps" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Resume after kill -9 of the command-line run


def _dataset_folder(tmp_path):
    from pianolab.data import build_dataset
    from pianolab.encoding import write_midi

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    ds = tiny_dataset(seed=3)
    for split in (ds.train, ds.val):
        for i in range(len(split.pieces)):
            write_midi(split.roll(i), corpus / f"{split.name}{i}.mid", DEFAULT_ENCODING)
    return build_dataset(corpus, tmp_path / "dataset", n_clones=0, val_fraction=0.25, progress=False)


def _last_step(history_csv):
    try:
        lines = history_csv.read_text().strip().splitlines()
    except OSError:
        return -1
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else -1


def test_kill_9_then_the_same_command_resumes(tmp_path):
    folder = _dataset_folder(tmp_path)
    cfg = tiny_config(steps=60, checkpoint_every=10, validate_every=30, log_every=1)
    cfg.data.dataset = str(folder)
    cfg.to_json(tmp_path / "cfg.json")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pianolab", "train", str(run), "--config", str(tmp_path / "cfg.json"), "--quiet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _last_step(run / "history.csv") < 25:
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.time() < deadline, "the run did not get going"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reached = _last_step(run / "history.csv")
    state = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert 0 < reached < 60, "the run should have been killed mid-way"
    assert reached - state["step"] <= 10, f"lost more than one checkpoint interval: {reached} -> {state['step']}"

    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step 60" in res.stdout
    h = History.read(run)
    assert list(h.step) == list(range(61)), "history rows lost or duplicated across the restart"
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 60
    assert len(list((run / "checkpoints").glob("step-*.keras"))) == cfg.training.keep_checkpoints

    # the interrupted run ends where an uninterrupted one does
    from pianolab.data import load_dataset

    train(tmp_path / "straight", cfg, dataset=load_dataset(folder), progress=False)
    for wa, wb in zip(load_model(run).get_weights(), load_model(tmp_path / "straight").get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Data parallel: MirroredStrategy on two logical CPU devices

_MIRRORED = textwrap.dedent("""
    import os, sys, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_train import tiny_dataset, tiny_config
    from pianolab.train import train, load_model, History

    ds = tiny_dataset()
    with tempfile.TemporaryDirectory() as d:
        cfg = tiny_config(distribute="mirrored", batch_start=1, batch_end=4, steps=8, checkpoint_every=4)
        h = train(d + "/mirrored", cfg, dataset=ds, progress=False)
        assert h.final_step == 8, h.rows
        # the ramp's batches 1, 1, 1, 1, 2, ... are rounded up to a multiple of the two replicas
        assert list(h.batch_size[1:]) == [2, 2, 2, 2], h.batch_size
        h2 = train(d + "/mirrored", None, steps=12, dataset=ds, progress=False)  # resume under the strategy
        assert h2.final_step == 12 and list(h2.batch_size[-2:]) == [4, 4]
        # the same global batches on one device: the same training, up to float round-off
        single = train(d + "/single", tiny_config(batch_start=2, batch_end=4, batch_double_every=8, steps=12,
                                                  checkpoint_every=4), dataset=ds, progress=False)
        assert list(single.batch_size) == list(h2.batch_size)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(load_model(d + "/mirrored").get_weights(),
                                                                 load_model(d + "/single").get_weights()))
        print("REPLICAS", len(tf.config.list_logical_devices("CPU")), "MAXDIFF", diff)
        np.testing.assert_allclose(h2.train_loss[1:], single.train_loss[1:], rtol=1e-4)
        assert diff < 1e-4, diff
    print("MIRRORED_OK")
""")


def test_mirrored_strategy_on_two_logical_cpus():
    pytest.importorskip("tensorflow")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    res = subprocess.run([sys.executable, "-c", _MIRRORED, str(Path(__file__).parent)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "REPLICAS 2" in res.stdout and "MIRRORED_OK" in res.stdout
