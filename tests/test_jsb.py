"""JSB Chorales: reading (JSON and a restricted pickle), encoding, the evaluator and training."""

import json
import math
import pickle

import numpy as np
import pytest

from pianolab import jsb
from pianolab.errors import ConfigError, PianolabError
from pianolab.settings import jsb_path

REAL = jsb_path()

SMALL = {
    "train": [[[60, 64, 67], [62, 65], []], [[48], [48, 55]]],
    "valid": [[[60], [61]]],
    "test": [[[21, 108], [72]]],
}


def write_json(tmp_path, obj, name="jsb.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


# ---------------------------------------------------------------- reading


def test_read_json_and_env(tmp_path, monkeypatch):
    path = write_json(tmp_path, SMALL)
    assert jsb.read_jsb(path) == SMALL
    monkeypatch.setenv("PIANOLAB_JSB", str(path))
    data = jsb.load_jsb()
    assert data.path == path
    assert [len(data.split(s)) for s in jsb.SPLITS] == [2, 1, 1]
    assert data.frames("train") == 5


@pytest.mark.parametrize("obj, key, message", [
    ({"train": [], "valid": [[[60]]], "test": [[[60]]]}, "train", "non-empty list of pieces"),
    ({"train": [[[60]]], "valid": [[[60]]]}, "test", "missing split"),
    ({"train": [[[60]]], "valid": [[60]], "test": [[[60]]]}, "valid[0][0]", "list of MIDI pitches"),
    ({"train": [[[60]]], "valid": [[[60]]], "test": [[[60], [20]]]}, "test[0][1]", "outside the 88 keys"),
    ({"train": [[[60.5]]], "valid": [[[60]]], "test": [[[60]]]}, "train[0][0]", "whole MIDI pitch"),
    ({"train": [[["C4"]]], "valid": [[[60]]], "test": [[[60]]]}, "train[0][0]", "MIDI pitch"),
    ([1, 2], None, "expected a dict"),
])
def test_structure_errors_name_path_and_key(tmp_path, obj, key, message):
    path = write_json(tmp_path, obj)
    with pytest.raises(jsb.JSBError, match=message) as info:
        jsb.read_jsb(path)
    assert str(path) in str(info.value)
    assert info.value.key == key
    if key:
        assert key in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(PianolabError, match="no such file") as info:
        jsb.read_jsb(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(jsb.JSBError, match="not valid JSON"):
        jsb.read_jsb(bad)
    with pytest.raises(jsb.JSBError, match="no such file"):
        jsb.read_jsb(tmp_path / "nope.pickle")


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_with_tuples_and_float_pitches(tmp_path, protocol):
    # the original pickle stores frames as tuples; some re-exports store pitches as floats
    obj = {s: [[tuple(float(p) if i % 2 else p for i, p in enumerate(f)) for f in piece]
               for piece in pieces] for s, pieces in SMALL.items()}
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert jsb.read_jsb(path) == SMALL


class Evil:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = Evil()
    evil.target = str(marker)
    obj = dict(SMALL, test=[[[60]], evil])
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(jsb.JSBError, match="refusing to load global") as info:
        jsb.read_jsb(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("bad, message", [
    ({"train": {60}, "valid": [[[60]]], "test": [[[60]]]}, "non-empty list of pieces"),  # a set
    ({"train": [[[b"60"]]], "valid": [[[60]]], "test": [[[60]]]}, "MIDI pitch"),  # bytes
    ({"train": [[[True]]], "valid": [[[60]]], "test": [[[60]]]}, "MIDI pitch"),  # bool
    ({1: 2, "train": [[[60]]], "valid": [[[60]]], "test": [[[60]]]}, "strings"),
])
def test_pickle_admits_only_plain_structure(tmp_path, bad, message):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(jsb.JSBError, match=message):
        jsb.read_jsb(path)


def test_garbage_pickle(tmp_path):
    path = tmp_path / "x.pickle"
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(jsb.JSBError, match="not a plain-data pickle"):
        jsb.read_jsb(path)


def write_npz(tmp_path, pieces, name="jsb.npz", **change):
    """``pieces`` as the shipped .npz format: per split, packed frames and piece lengths."""
    arrays = {}
    for s, ps in pieces.items():
        rolls = [jsb.piece_to_roll(p) for p in ps]
        arrays[f"{s}_frames"] = np.packbits(np.concatenate(rolls), axis=1)
        arrays[f"{s}_lengths"] = np.array([len(r) for r in rolls], np.int32)
    arrays.update(change)
    path = tmp_path / name
    np.savez_compressed(path, **arrays)
    return path


def test_shipped_npz_is_the_default(monkeypatch):
    monkeypatch.delenv("PIANOLAB_JSB", raising=False)
    path = jsb_path()
    assert path.name == "jsb_chorales.npz" and path.is_file()
    assert "shared" not in path.parts


def test_read_npz_round_trip(tmp_path, monkeypatch):
    path = write_npz(tmp_path, SMALL)
    assert jsb.read_jsb(path) == SMALL
    monkeypatch.setenv("PIANOLAB_JSB", str(path))
    data = jsb.load_jsb()
    assert data.path == path
    assert [jsb.roll_to_piece(r) for r in data.train] == SMALL["train"]
    assert all(r.dtype == np.uint8 and r.shape[1] == 88 for r in data.test)


@pytest.mark.parametrize("change, key, message", [
    ({"valid_lengths": np.array([3], np.int32)}, "valid", "summing to the frames"),
    ({"test_lengths": np.array([0, 2], np.int32)}, "test", "lengths >= 1"),
    ({"train_frames": np.zeros((5, 10), np.uint8)}, "train", r"uint8 \[frames, 11\]"),
])
def test_npz_errors_name_path_and_split(tmp_path, change, key, message):
    path = write_npz(tmp_path, SMALL, **change)
    with pytest.raises(jsb.JSBError, match=message) as info:
        jsb.load_jsb(path)
    assert info.value.key == key and str(path) in str(info.value)


def test_npz_missing_broken_or_incomplete(tmp_path):
    with pytest.raises(jsb.JSBError, match="no such file"):
        jsb.read_npz(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("{}")
    with pytest.raises(jsb.JSBError, match="not a numpy .npz"):
        jsb.read_npz(bad)
    path = write_npz(tmp_path, {"train": SMALL["train"], "valid": SMALL["valid"]})
    with pytest.raises(jsb.JSBError, match="test_frames") as info:
        jsb.read_npz(path)
    assert info.value.key == "test"


# ---------------------------------------------------------------- encoding


def test_roll_round_trip_and_layout():
    piece = SMALL["train"][0]
    roll = jsb.piece_to_roll(piece)
    assert roll.shape == (3, 88) and roll.dtype == np.uint8
    assert roll[0, 60 - 21] == 1 and roll[2].sum() == 0
    assert jsb.roll_to_piece(roll) == piece
    # flat sequence: frame-major, keys ascending; the encoding names the keys
    seq = roll.reshape(-1)
    assert seq[88 + 62 - 21] == 1
    assert jsb.ENCODING.pitches[0] == 21 and jsb.ENCODING.highest == 108


def test_transpose():
    roll = jsb.piece_to_roll([[60, 64], [107]])
    up = jsb.transpose(roll, 1)
    assert jsb.roll_to_piece(up) == [[61, 65], [108]]
    assert jsb.roll_to_piece(jsb.transpose(roll, -3)) == [[57, 61], [104]]
    with pytest.raises(ValueError, match="above MIDI 108"):
        jsb.transpose(roll, 2)
    with pytest.raises(ValueError, match="below MIDI 21"):
        jsb.transpose(jsb.piece_to_roll([[22]]), -2)


# ---------------------------------------------------------------- scoring


def test_frame_nll_by_hand():
    roll = np.zeros((2, 88), np.uint8)
    roll[1, 5] = 1
    probs = np.full((2, 88), 0.1)
    nll = jsb.frame_nll(roll, probs)
    assert nll[0] == pytest.approx(-88 * math.log(0.9))
    assert nll[1] == pytest.approx(-87 * math.log(0.9) - math.log(0.1))
    with pytest.raises(ValueError, match="shape"):
        jsb.frame_nll(roll, probs[:1])


def test_evaluate_first_frame_conventions():
    rolls = [jsb.piece_to_roll(p) for p in SMALL["train"]]
    rates = np.full(88, 0.25)
    ev = jsb.evaluate(jsb.marginal_predictor(rates), rolls)
    costs = [jsb.frame_nll(r, np.broadcast_to(rates, r.shape)) for r in rolls]
    assert ev["frames"] == 5 and ev["scored_frames"] == 3 and ev["pieces"] == 2
    assert ev["nll"] == pytest.approx(sum(c[1:].sum() for c in costs) / 3)
    assert ev["nll_all_frames"] == pytest.approx(sum(c.sum() for c in costs) / 5)


def test_real_split_sizes_match_readme():
    data = jsb.load_jsb()
    assert [len(data.split(s)) for s in jsb.SPLITS] == [229, 76, 77]
    assert [data.frames(s) for s in jsb.SPLITS] == [13807, 4602, 4725]


def test_evaluator_reproduces_readme_baselines():
    """The README's 11.06 (marginal) and 10.48 (Markov) come out of the same evaluator the models
    use -- with every frame scored, the first one predicted from leading silence."""
    data = jsb.load_jsb()
    published = jsb.read_published(REAL.parent / "README.md")
    b = jsb.baselines(data, "test")
    marginal = b["per-key marginal"]
    markov = b["per-key first-order Markov"]
    assert round(marginal["nll_all_frames"], 2) == published["per-key marginal (Bernoulli fitted on train)"] == 11.06
    assert round(markov["nll_all_frames"], 2) == published["per-key first-order Markov"] == 10.48
    # with the first frame left out both move up a little
    assert round(marginal["nll"], 2) == 11.09 and round(markov["nll"], 2) == 10.49


def markov_conv_model(p_on, p_off):
    """A pianolab model whose output is p_on if the key one frame (88 states) back is down, else
    p_off: layers pass one channel through ELU (identity on 0/1), choosing the newer tap at
    dilations 8 and 32 and the older one elsewhere."""
    from pianolab.model import build_model, logit

    model = build_model([[1, 0, 0, 0, 0, 0, 0]])  # dilations 1..64, RF 128
    rf = 128
    # output j sees inputs j .. j+127; the state 88 before the target is input j + 127 - 87 = j + 40
    newer = {8, 32}
    assert sum(newer) == rf - 88
    for layer in model.layers:
        if layer.name.startswith("block"):
            d = layer.dilation_rate[0]
            kernel = np.zeros((2, 1, 1), np.float32)
            kernel[1 if d in newer else 0, 0, 0] = 1.0
            layer.set_weights([kernel, np.zeros(1, np.float32)])
    out = model.get_layer("output")
    out.set_weights([np.full((1, 1, 1), logit(p_on) - logit(p_off), np.float32),
                     np.full(1, logit(p_off), np.float32)])
    return model


def test_keras_evaluation_is_aligned_with_the_frames():
    rng = np.random.default_rng(0)
    rolls = [(rng.random((n, 88)) < 0.05).astype(np.uint8) for n in (3, 7)]
    rolls[0][0, 10] = rolls[0][1, 10] = 1
    model = markov_conv_model(0.8, 0.05)
    got = jsb.evaluate(model, rolls)
    want = jsb.evaluate(jsb.markov_predictor(0.8, 0.05), rolls)
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-5)
    assert got["nll_all_frames"] == pytest.approx(want["nll_all_frames"], rel=1e-5)
    # chunked evaluation gives the same probabilities
    a = jsb.model_probabilities(model, rolls[1])
    b = jsb.model_probabilities(model, rolls[1], max_states=100)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_model_probabilities_are_causal():
    from pianolab.model import build_model

    model = build_model("tiny", seed=1)
    rng = np.random.default_rng(1)
    roll = (rng.random((4, 88)) < 0.2).astype(np.uint8)
    base = jsb.model_probabilities(model, roll)
    changed = roll.copy()
    changed[2, 40] ^= 1
    moved = jsb.model_probabilities(model, changed).reshape(-1)
    i = 2 * 88 + 40
    np.testing.assert_array_equal(moved[:i + 1], base.reshape(-1)[:i + 1])
    assert not np.allclose(moved[i + 1:], base.reshape(-1)[i + 1:])


# ---------------------------------------------------------------- training


def test_sample_windows_alignment_and_coverage():
    rolls = [jsb.piece_to_roll(p) for p in SMALL["train"]]
    rf, n = 20, 50
    rng = np.random.default_rng(0)
    x, y, w = jsb.sample_windows(rolls, rf, n, 64, rng, transpose_max=0)
    assert x.shape == (64, rf + n - 1, 1) and y.shape == (64, n, 1) and w.shape == (64, n)
    # output j sees x[j : j + rf] and predicts the state right after them
    np.testing.assert_array_equal(y[:, :-1, 0], x[:, rf:, 0])
    # weights mark states of the piece; outside the piece the targets are silence
    assert (y[:, :, 0][w == 0] == 0).all()
    assert w.sum() > 0 and (w.sum(axis=1) >= 1).all()
    seqs = [r.reshape(-1) for r in rolls]
    for b in range(64):
        valid = np.flatnonzero(w[b])
        chunk = y[b, valid, 0]
        assert any(
            np.array_equal(chunk, s[i:i + len(chunk)]) for s in seqs for i in range(len(s) - len(chunk) + 1)
        )


def test_random_transpose_stays_on_the_keyboard():
    rng = np.random.default_rng(0)
    roll = jsb.piece_to_roll([[60, 64], [105]])  # room for 3 semitones up, 39 down
    shifts = set()
    for _ in range(200):
        moved, shift = jsb.random_transpose(roll, 5, rng)
        shifts.add(shift)
        assert jsb.roll_to_piece(moved) == [[60 + shift, 64 + shift], [105 + shift]]
    assert shifts == set(range(-5, 4))
    edge = jsb.piece_to_roll([[21, 108]])
    assert {jsb.random_transpose(edge, 5, rng)[1] for _ in range(20)} == {0}
    assert jsb.random_transpose(np.zeros((2, 88), np.uint8), 5, rng)[1] == 0


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        jsb.JSBConfig(batch_size=0)
    with pytest.raises(ConfigError, match="transpose"):
        jsb.JSBConfig(transpose=13)
    with pytest.raises(ConfigError, match="filter_increments"):
        jsb.JSBConfig(filter_increments=[[]])
    with pytest.raises(ConfigError, match="learning_rate"):
        jsb.JSBConfig(learning_rate=2.0)
    with pytest.raises(ConfigError, match="bogus"):
        jsb.JSBConfig.from_dict({"bogus": 1})
    bad = tmp_path / "c.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="c.json"):
        jsb.JSBConfig.load(bad)


def test_train_writes_run_and_resumes(tmp_path):
    data = jsb.JSB(*[[jsb.piece_to_roll(p) for p in SMALL[s]] for s in jsb.SPLITS])
    cfg = jsb.JSBConfig(filter_increments=[[2, 2, 0, 0]], n_targets=88, batch_size=2, steps=6,
                        eval_every=3, learning_rate=0.01, transpose=2)
    run = tmp_path / "run"
    rows = jsb.train_jsb(run, cfg, steps=3, jsb=data, progress=False)
    assert [int(r["step"]) for r in rows] == [3]
    assert {p.name for p in run.iterdir()} >= {"config.json", "history.csv", "model.keras", "checkpoints"}
    rows = jsb.train_jsb(run, steps=6, jsb=data, progress=False)  # resumes from the checkpoint
    assert [int(r["step"]) for r in rows] == [3, 6]
    hist = jsb.read_history(run)
    assert hist["step"].tolist() == [3, 6] and np.isfinite(hist["valid_nll"]).all()
    config, model = jsb.load_run(run)
    assert config == cfg
    assert math.isfinite(jsb.evaluate(model, data.test)["nll"])
    with pytest.raises(ConfigError, match="different config"):
        jsb.train_jsb(run, jsb.JSBConfig(filter_increments=[[3]]), jsb=data, progress=False)


def test_load_run_errors(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        jsb.load_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(jsb.JSBConfig().to_dict()))
    with pytest.raises(ConfigError, match="model.keras"):
        jsb.load_run(tmp_path)


def test_read_published(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("| model | JSB test NLL | source |\n|---|---|---|\n| TCN | 8.10 | paper |\n")
    assert jsb.read_published(readme) == {"TCN": 8.10}


def test_dropout_trains_a_view_and_saves_a_plain_model(tmp_path):
    from pianolab.model import build_model

    base = build_model([[2, 2, 0]], seed=0)
    view = jsb.with_dropout(base, 0.5, seed=0)
    x = np.random.default_rng(0).random((1, 20, 1)).astype(np.float32)
    np.testing.assert_allclose(view.predict_on_batch(x), base.predict_on_batch(x), rtol=1e-6)
    assert not np.allclose(np.asarray(view(x, training=True)), base.predict_on_batch(x))
    data = jsb.JSB(*[[jsb.piece_to_roll(p) for p in SMALL[s]] for s in jsb.SPLITS])
    cfg = jsb.JSBConfig(filter_increments=[[2, 2, 0, 0]], n_targets=88, batch_size=2, steps=2,
                        eval_every=2, dropout=0.2, transpose=0)
    jsb.train_jsb(tmp_path / "run", cfg, jsb=data, progress=False)
    _, model = jsb.load_run(tmp_path / "run")
    assert not any("dropout" in layer.name for layer in model.layers)
    with pytest.raises(ConfigError, match="dropout"):
        jsb.JSBConfig(dropout=1.0)
