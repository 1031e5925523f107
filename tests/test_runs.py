"""pianolab.runs: what a run directory holds, read back -- history, models, snapshots -- and the
loss of a model on a split (chapter 04_training)."""

import math
import shutil

import numpy as np
import pytest
from conftest import tiny_config

from pianolab.encoding import Encoding
from pianolab.errors import ConfigError
from pianolab.model import count_params, receptive_field
from pianolab.model import binary_cross_entropy
from pianolab.runs import (HISTORY_COLUMNS, SNAPSHOT_FILE, History, encoding_of, evaluate, load_model, load_run,
                           load_snapshot, _run_path, snapshot_steps, validation_windows)
from pianolab.train import train
from pianolab.windows import Windows

K = Encoding().n_keys


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataset):
    """A four-step run with a snapshot at step 2, trained once for the whole file."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train(run, tiny_config(steps=4, checkpoint_every=2, validate_every=2, snapshot_at=[2]), dataset=dataset,
          progress=False)
    return run


def test_history_round_trips_through_csv(tmp_path):
    rows = [{"step": 0, "train_loss": None, "val_loss": 0.25, "val_nats_per_step": 18.0, "batch_size": 1,
             "key_states": 0, "seconds": 0.5},
            {"step": 10, "train_loss": 1 / 3, "val_loss": None, "val_nats_per_step": None, "batch_size": 2,
             "key_states": 7680, "seconds": 2.125}]
    History(rows).to_csv(tmp_path / "history.csv")
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    h = History.read(tmp_path)  # a run directory or the file itself
    assert h.rows == rows and History.read(tmp_path / "history.csv").rows == rows
    assert h.final_step == 10 and len(h) == 2
    np.testing.assert_array_equal(h.step, [0, 10])
    assert math.isnan(h.train_loss[0]) and h.train_loss[1] == 1 / 3  # floats come back exactly
    assert [r["val_loss"] for r in h.rows] == [0.25, None]
    with pytest.raises(AttributeError):
        h.best_val_loss
    assert History.read(tmp_path / "nothing").rows == [] and History().final_step == 0


def test_bce_is_the_binary_cross_entropy_in_nats():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.0, 1.0])
    got = binary_cross_entropy(y, p)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got[:2], [-math.log(0.9), -math.log(0.1)])
    np.testing.assert_allclose(got[2:], -math.log(1e-7), rtol=1e-6)  # clipped, never infinite


def test_validation_windows_are_fixed_by_their_seed(dataset):
    x, y, w = validation_windows(dataset.val, 95, 64, 5, seed=3)
    assert x.shape == (5, 95 + 64 - 1) and y.shape == w.shape == (5, 64) and x.dtype == np.uint8
    again = validation_windows(dataset.val, 95, 64, 5, seed=3)
    other = validation_windows(dataset.val, 95, 64, 5, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip((x, y, w), again))
    assert not np.array_equal(x, other[0])
    # they are windows of the split as Windows cuts them
    windows = Windows(dataset.val, 95, 64)
    cut = windows.cut(*windows.locate(np.arange(windows.n_windows)))
    for xi, yi, wi in zip(x, y, w):
        assert any(np.array_equal(xi, cx) and np.array_equal(yi, cy) and np.array_equal(wi, cw)
                   for cx, cy, cw in zip(*cut))


def test_evaluate_scores_every_key_state(dataset):
    """Whole-split evaluation equals a direct numpy computation: each piece from silence."""
    model = tiny_config().build_model(dataset)
    rf = receptive_field("tiny")
    res = evaluate(model, dataset.val, n_targets=1000, batch_size=2)
    total, count = 0.0, 0
    for _, a, b in dataset.val.pieces:
        seq = dataset.val.sequence[a:b].astype(np.float32)
        x = np.concatenate([np.zeros(rf, np.float32), seq[:-1]])[None, :, None]
        p = np.clip(np.asarray(model(x))[0, :, 0].astype(np.float64), 1e-7, 1 - 1e-7)
        total += -(seq * np.log(p) + (1 - seq) * np.log(1 - p)).sum()
        count += seq.size
    assert res["key_states"] == count and res["n_keys"] == K
    # both sides run the float32 model; evaluate sums in float32 batches, this loop in float64 (rel 1e-5)
    assert res["loss_per_state"] == pytest.approx(total / count, rel=1e-5)
    assert res["nats_per_step"] == pytest.approx(K * total / count, rel=1e-5)
    # fixed windows: the loss of the weighted targets, the same each time
    fixed = evaluate(model, dataset.val, n_targets=256, n_windows=3, seed=5)
    assert fixed == evaluate(model, dataset.val, n_targets=256, n_windows=3, seed=5)
    x, y, w = validation_windows(dataset.val, rf, 256, 3, 5)
    assert fixed["key_states"] == int(w.sum())
    p = np.asarray(model(x.astype(np.float32)[..., None]))[..., 0]
    assert fixed["loss_per_state"] == pytest.approx(float((binary_cross_entropy(y, p) * w).sum() / w.sum()), rel=1e-5)
    given = evaluate(model, dataset.val, windows=(x, y, w))
    assert given["loss_per_state"] == pytest.approx(fixed["loss_per_state"], rel=1e-6)


def test_load_run_model_and_snapshot(run, dataset):
    config, model = load_run(run)
    assert config == tiny_config(steps=4, checkpoint_every=2, validate_every=2, snapshot_at=[2])
    assert model.count_params() == count_params(config.filter_increments)
    best = load_model(run, which="best")
    assert best.count_params() == model.count_params()
    assert snapshot_steps(run) == [2] and (run / SNAPSHOT_FILE.format(2)).is_file()
    snap = load_snapshot(run, 2)
    assert not all(np.array_equal(a, b) for a, b in zip(snap.get_weights(), model.get_weights()))
    with pytest.raises(ConfigError, match=r"no snapshot at step 3.*\[2\]") as err:
        load_snapshot(run, 3)
    assert err.value.key == "step"
    with pytest.raises(ConfigError) as err:
        load_model(run, which="newest")
    assert err.value.key == "which" and "'best'" in str(err.value)
    assert encoding_of(run) == config.encoding == encoding_of(run / "model.keras")


def test_models_are_found_by_path_or_by_shipped_name(run, tmp_path, monkeypatch):
    monkeypatch.setattr("pianolab.runs.models_dir", lambda: tmp_path / "data" / "models")
    shutil.copytree(run, tmp_path / "data" / "models" / "mini")
    assert _run_path("mini") == tmp_path / "data" / "models" / "mini"
    assert _run_path(run) == run  # an existing path wins
    a, b = load_model("mini"), load_model(run / "model.keras")
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert snapshot_steps("mini") == [2]
    with pytest.raises(ConfigError, match=r"no such model.*shipped: \['mini'\]"):
        load_model("maxi")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no model.keras"):
        load_model(empty)
    assert encoding_of(empty) == Encoding()  # no config.json: the default encoding
