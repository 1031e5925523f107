"""pianolab.benchmark: reading the sets (bit-packed .npz, JSON, a restricted pickle) into rolls, the dataset
the one trainer trains on, and scoring in nats per frame. Synthetic data, and the shipped sets' sizes."""

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from pianolab import benchmark as bm
from pianolab import settings
from pianolab.errors import ConfigError, PianolabError

SMALL = {
    "train": [[[60, 64, 67], [62, 65], []], [[48], [48, 55]]],
    "valid": [[[60], [61]]],
    "test": [[[21, 108], [72]]],
}


def write_json(tmp_path, obj, name="jsb.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def sticky_rolls(n, frames, seed):
    """Random rolls in which a sounding key tends to go on sounding: the Markov baseline's habit."""
    rng = np.random.default_rng(seed)
    rolls = []
    for _ in range(n):
        roll = np.zeros((frames, bm.N_KEYS), np.uint8)
        roll[0] = rng.random(bm.N_KEYS) < 0.05
        for t in range(1, frames):
            roll[t] = np.where(roll[t - 1] == 1, rng.random(bm.N_KEYS) < 0.8, rng.random(bm.N_KEYS) < 0.02)
        rolls.append(roll)
    return rolls


# ---------------------------------------------------------------- reading


def pitches(roll):
    """A roll back to frames of MIDI pitches, the JSON / pickle layout."""
    return [[int(k) + bm.LOWEST for k in np.flatnonzero(frame)] for frame in roll]


def test_read_json_and_the_environment(tmp_path, monkeypatch):
    path = write_json(tmp_path, SMALL)
    rolls = bm.read(path)
    assert {s: [pitches(r) for r in rolls[s]] for s in bm.SPLITS} == SMALL
    assert all(r.dtype == np.uint8 and r.shape == (len(p), bm.N_KEYS) for r, p in zip(rolls["train"], SMALL["train"]))
    assert rolls["train"][0][0, 60 - bm.LOWEST] == 1 and rolls["train"][0][2].sum() == 0  # a silent frame
    monkeypatch.setenv("PIANOLAB_JSB", str(path))
    assert [pitches(r) for r in bm.load("jsb")["train"]] == SMALL["train"]
    with pytest.raises(PianolabError, match="unknown benchmark"):
        bm.load("bach")


@pytest.mark.parametrize("obj, key, message", [
    ({"train": [], "valid": [[[60]]], "test": [[[60]]]}, "train", "non-empty list of pieces"),
    ({"train": [[[60]]], "valid": [[[60]]]}, "test", "missing split"),
    ({"train": [[[60]]], "valid": [[]], "test": [[[60]]]}, "valid[0]", "non-empty list of frames"),
    ({"train": [[[60]]], "valid": [[60]], "test": [[[60]]]}, "valid[0][0]", "list of MIDI pitches"),
    ({"train": [[[60]]], "valid": [[[60]]], "test": [[[60], [20]]]}, "test[0][1]", "MIDI pitch in 21..108, not 20"),
    ({"train": [[[60]]], "valid": [[[60]]], "test": [[[60], [109]]]}, "test[0][1]", "MIDI pitch in 21..108, not 109"),
    ({"train": [[[60.5]]], "valid": [[[60]]], "test": [[[60]]]}, "train[0][0]", "whole MIDI pitch"),
    ({"train": [[["C4"]]], "valid": [[[60]]], "test": [[[60]]]}, "train[0][0]", "MIDI pitch"),
    ({"train": [[[60]]], "valid": [[[60]]], "test": [[[60]], [[61], [62], [True]]]}, "test[1][2]", "not True"),
    ([1, 2], None, "expected a dict"),
])
def test_structure_errors_name_path_and_key(tmp_path, obj, key, message):
    path = write_json(tmp_path, obj)
    with pytest.raises(bm.JSBError, match=message) as info:
        bm.read(path)
    assert str(path) in str(info.value) and info.value.key == key
    if key:
        assert key in str(info.value)


def test_missing_and_broken_files(tmp_path):
    for name in ("nope.json", "nope.pickle", "nope.npz"):
        with pytest.raises(bm.JSBError, match="no such file") as info:
            bm.read(tmp_path / name)
        assert name in str(info.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(bm.JSBError, match="not an .npz, a pickle or valid JSON") as info:
        bm.read(bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_with_tuples_and_float_pitches(tmp_path, protocol):
    # the original pickle stores frames as tuples; some re-exports store pitches as floats
    obj = {s: [[tuple(float(p) if i % 2 else p for i, p in enumerate(f)) for f in piece]
               for piece in pieces] for s, pieces in SMALL.items()}
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert {s: [pitches(r) for r in rs] for s, rs in bm.read(path).items()} == SMALL


class Evil:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


@pytest.mark.parametrize("name", ["evil.pkl", "evil.data"])  # found by its suffix or by its first byte
def test_pickle_cannot_run_code(tmp_path, name):
    marker = tmp_path / "pwned"
    evil = Evil()
    evil.target = str(marker)
    path = tmp_path / name
    path.write_bytes(pickle.dumps(dict(SMALL, test=[[[60]], evil])))
    with pytest.raises(bm.JSBError, match="refusing to load global") as info:
        bm.read(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the same pickle through the unrestricted unpickler would have run the code
    pickle.loads(path.read_bytes())
    assert marker.exists()


class Persistent(pickle.Pickler):
    def persistent_id(self, obj):
        return "ref" if obj == "hidden" else None


def test_pickle_refuses_persistent_ids(tmp_path):
    path = tmp_path / "p.pickle"
    with path.open("wb") as f:
        Persistent(f).dump(dict(SMALL, train=[[["hidden"]]]))
    with pytest.raises(bm.JSBError, match="persistent id"):
        bm.read(path)


@pytest.mark.parametrize("bad, message", [
    ({"train": {60}, "valid": [[[60]]], "test": [[[60]]]}, "non-empty list of pieces"),  # a set
    ({"train": [[[b"60"]]], "valid": [[[60]]], "test": [[[60]]]}, "MIDI pitch"),  # bytes
    ({"train": [[[True]]], "valid": [[[60]]], "test": [[[60]]]}, "MIDI pitch"),  # bool
    ({"train": [[[float("nan")]]], "valid": [[[60]]], "test": [[[60]]]}, "MIDI pitch"),
])
def test_pickle_admits_only_plain_structure(tmp_path, bad, message):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(bad))
    with pytest.raises(bm.JSBError, match=message):
        bm.read(path)


def test_garbage_pickle(tmp_path):
    path = tmp_path / "x.pickle"
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(bm.JSBError, match="not a plain-data pickle"):
        bm.read(path)


def write_npz(path, rolls):
    """The shipped format: per split, the frames bit-packed (88 keys in 11 bytes) and the piece lengths."""
    arrays = {}
    for split, rs in rolls.items():
        arrays[f"{split}_frames"] = np.packbits(np.concatenate(rs), axis=1)
        arrays[f"{split}_lengths"] = np.array([len(r) for r in rs])
    np.savez(path, **arrays)
    return path


def test_npz_json_and_pickle_give_the_same_rolls(tmp_path):
    rolls = {"train": sticky_rolls(3, 9, 0), "valid": sticky_rolls(1, 4, 1), "test": sticky_rolls(2, 5, 2)}
    pieces = {s: [pitches(r) for r in rs] for s, rs in rolls.items()}
    (tmp_path / "set.pickle").write_bytes(pickle.dumps(pieces, protocol=2))
    for path in (write_npz(tmp_path / "set.npz", rolls), write_json(tmp_path, pieces), tmp_path / "set.pickle"):
        got = bm.read(path)
        assert [len(got[s]) for s in bm.SPLITS] == [len(rolls[s]) for s in bm.SPLITS]
        for split in bm.SPLITS:
            for a, b in zip(got[split], rolls[split]):
                assert a.dtype == np.uint8
                np.testing.assert_array_equal(a, b)


def test_shipped_sets_read_and_agree_with_their_readme():
    readme = (settings.shipped_dir() / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for name in bm.FILES:
        rolls = bm.load(name)
        counts = " / ".join(str(len(rolls[s])) for s in bm.SPLITS)
        frames = " / ".join(f"{sum(len(r) for r in rolls[s]):,}" for s in bm.SPLITS)
        assert f"| {counts} | {frames} |" in readme, name


def test_npz_errors_name_the_file_and_split(tmp_path):
    rolls = {"train": sticky_rolls(2, 4, 0), "valid": sticky_rolls(1, 4, 1), "test": sticky_rolls(1, 4, 2)}
    path = write_npz(tmp_path / "a.npz", {"train": rolls["train"], "valid": rolls["valid"]})
    with pytest.raises(bm.JSBError, match="test_frames") as info:
        bm.read(path)
    assert info.value.key == "test" and str(path) in str(info.value)
    path = write_npz(tmp_path / "b.npz", rolls)
    arrays = dict(np.load(path))
    for bad in ({"valid_lengths": np.array([3])},  # the lengths do not add up to the frames
                {"valid_lengths": np.array([], int), "valid_frames": np.zeros((0, 11), np.uint8)},  # no piece
                {"valid_lengths": np.array([4, 0]), "valid_frames": np.zeros((4, 11), np.uint8)},  # an empty piece
                {"valid_frames": np.zeros((4, 88), np.uint8)}):  # not bit-packed
        np.savez(path, **dict(arrays, **bad))
        with pytest.raises(bm.JSBError, match="summing to the frames") as info:
            bm.read(path)
        assert info.value.key == "valid"
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 a broken zip")
    with pytest.raises(bm.JSBError, match="not a numpy .npz"):
        bm.read(tmp_path / "c.npz")


# ---------------------------------------------------------------- rolls and the training data


def test_roll_layout_and_encoding(tmp_path):
    roll = bm.read(write_json(tmp_path, SMALL))["train"][0]
    # flat sequence: frame-major, keys ascending; the encoding names the keys
    assert roll.reshape(-1)[bm.N_KEYS + 62 - bm.LOWEST] == 1
    assert bm.ENCODING.pitches[0] == bm.LOWEST and bm.ENCODING.highest == bm.LOWEST + bm.N_KEYS - 1
    assert bm.ENCODING.n_keys == bm.N_KEYS


def test_dataset_trains_on_train_validates_on_valid_and_never_sees_test(tmp_path):
    rolls = bm.read(write_json(tmp_path, dict(SMALL, train=SMALL["train"] + [[[105], [22]]])))  # room: 3 up, 1 down
    ds = bm.dataset(rolls, transpose=(-2, 3))
    names = [p[0] for p in ds.train.pieces]
    assert names == ["train/000", "train/000@t-2", "train/000@t+3", "train/001", "train/001@t-2",
                     "train/001@t+3", "train/002", "train/002@t+3"]  # train/002 cannot go 2 down
    assert pitches(ds.train.roll("train/002@t+3")) == [[108], [25]]
    np.testing.assert_array_equal(ds.train.roll("train/001"), rolls["train"][1])
    assert [p[0] for p in ds.val.pieces] == ["valid/000"]
    np.testing.assert_array_equal(ds.val.roll(0), rolls["valid"][0])
    assert ds.encoding == bm.ENCODING
    test_seq = rolls["test"][0].reshape(-1)
    for seq in (ds.train.sequence, ds.val.sequence):
        assert not any(np.array_equal(seq[i:i + test_seq.size], test_seq) for i in range(seq.size - test_seq.size + 1))


# ---------------------------------------------------------------- scoring


def constant(p):
    """A predictor giving every key probability ``p`` at every frame."""
    return lambda roll: np.full(roll.shape, p)


def markov(p_on, p_off):
    """A predictor giving a key ``p_on`` if it was down one frame before, else ``p_off``."""
    return lambda roll: np.where(np.vstack([np.zeros((1, roll.shape[1])), roll[:-1]]) == 1, p_on, p_off)


def test_evaluate_by_hand_and_its_first_frame_conventions(tmp_path):
    rolls = bm.read(write_json(tmp_path, SMALL))["train"]  # 3 + 2 frames; 3, 2, 0, 1, 2 keys down
    ev = bm.nll_per_frame(constant(0.1), rolls)
    cost = lambda down: -down * math.log(0.1) - (bm.N_KEYS - down) * math.log(0.9)  # noqa: E731
    assert ev["frames"] == 5 and ev["scored_frames"] == 3 and ev["pieces"] == 2
    assert ev["nll"] == pytest.approx((cost(2) + cost(0) + cost(2)) / 3)
    assert ev["nll_all_frames"] == pytest.approx(sum(cost(k) for k in (3, 2, 0, 1, 2)) / 5)
    assert ev["nll_per_state"] == pytest.approx(ev["nll_all_frames"] / bm.N_KEYS)
    assert ev["per_piece"] == pytest.approx([(cost(2) + cost(0)) / 2, cost(2)])
    with pytest.raises(ValueError, match="shape"):
        bm.nll_per_frame(lambda roll: np.full((1, bm.N_KEYS), 0.1), rolls)


def test_baselines_are_fitted_on_train_and_scored_on_the_split():
    rolls = {"train": sticky_rolls(6, 40, 0), "valid": sticky_rolls(2, 30, 1), "test": sticky_rolls(3, 30, 2)}
    b = bm.baselines(rolls, "test")
    train = np.concatenate(rolls["train"]).astype(float)
    rates = np.clip(train.mean(0), 1e-7, 1 - 1e-7)
    costs = [-(r * np.log(rates) + (1 - r) * np.log(1 - rates)).sum(1) for r in rolls["test"]]
    assert b["per-key marginal"]["nll_all_frames"] == pytest.approx(np.concatenate(costs).mean())
    assert b["per-key marginal"] == bm.nll_per_frame(lambda roll: np.broadcast_to(rates, roll.shape), rolls["test"])
    # the Markov rates by counting: p(down | down before), p(down | up before), each piece from silence
    prev = np.concatenate([np.vstack([np.zeros((1, bm.N_KEYS)), r[:-1]]) for r in rolls["train"]])
    down_before = prev.sum(0)
    assert (down_before == 0).any()  # a key never down in train: no evidence, p_on = 0 (clipped)
    p_on = np.clip(np.divide((prev * train).sum(0), down_before, out=np.zeros(bm.N_KEYS), where=down_before > 0),
                   1e-7, 1 - 1e-7)
    p_off = np.clip(((1 - prev) * train).sum(0) / (1 - prev).sum(0), 1e-7, 1 - 1e-7)
    want = bm.nll_per_frame(markov(p_on, p_off), rolls["test"])
    got = b["per-key first-order Markov"]
    assert got["nll"] == pytest.approx(want["nll"]) and got["per_piece"] == pytest.approx(want["per_piece"])
    # on sticky music the Markov baseline knows more than the marginal one
    assert got["nll"] < b["per-key marginal"]["nll"]


def markov_conv_model(p_on, p_off):
    """A pianolab model whose output is p_on if the key one frame (88 states) back is down, else
    p_off: layers pass one channel through ELU (identity on 0/1), choosing the newer tap at
    dilations 8 and 32 and the older one elsewhere."""
    from pianolab.model import build_model, logit

    model = build_model([[1, 0, 0, 0, 0, 0, 0]])  # dilations 1..64, RF 128
    rf = 128
    # output j sees inputs j .. j+127; the state 88 before the target is input j + 127 - 87 = j + 40
    newer = {8, 32}
    assert sum(newer) == rf - bm.N_KEYS
    for layer in model.layers:
        if layer.name.startswith("block"):
            kernel = np.zeros((2, 1, 1), np.float32)
            kernel[1 if layer.dilation_rate[0] in newer else 0, 0, 0] = 1.0
            layer.set_weights([kernel, np.zeros(1, np.float32)])
    model.get_layer("output").set_weights([np.full((1, 1, 1), logit(p_on) - logit(p_off), np.float32),
                                           np.full(1, logit(p_off), np.float32)])
    return model


def test_keras_evaluation_is_aligned_with_the_frames():
    rng = np.random.default_rng(0)
    rolls = [(rng.random((n, bm.N_KEYS)) < 0.05).astype(np.uint8) for n in (3, 7)]
    rolls[0][0, 10] = rolls[0][1, 10] = 1
    model = markov_conv_model(0.8, 0.05)
    got = bm.nll_per_frame(model, rolls)
    want = bm.nll_per_frame(markov(0.8, 0.05), rolls)
    # a float32 Keras model against the same chain computed in float64: float32 rounding of p, relative
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-5)
    assert got["nll_all_frames"] == pytest.approx(want["nll_all_frames"], rel=1e-5)
    # chunked evaluation gives the same probabilities
    np.testing.assert_allclose(bm.model_probabilities(model, rolls[1]),
                               bm.model_probabilities(model, rolls[1], max_states=100), rtol=1e-6)


def test_model_probabilities_do_not_leak_the_state_they_predict():
    """Flipping key state i changes no probability at or before i: no model sees what it predicts."""
    from pianolab.model import build_model

    model = build_model("tiny", seed=1)
    rng = np.random.default_rng(1)
    roll = (rng.random((4, bm.N_KEYS)) < 0.2).astype(np.uint8)
    base = bm.model_probabilities(model, roll).reshape(-1)
    changed = roll.copy()
    changed[2, 40] ^= 1
    moved = bm.model_probabilities(model, changed).reshape(-1)
    i = 2 * bm.N_KEYS + 40
    np.testing.assert_array_equal(moved[:i + 1], base[:i + 1])
    assert not np.allclose(moved[i + 1:], base[i + 1:])


# ---------------------------------------------------------------- training with the one trainer


def test_a_benchmark_run_trains_through_the_cli(tmp_path, monkeypatch, capsys):
    from pianolab.cli import main
    from pianolab.config import RunConfig
    from pianolab.runs import load_run

    rolls = {"train": sticky_rolls(4, 12, 3), "valid": sticky_rolls(2, 8, 4), "test": sticky_rolls(2, 8, 5)}
    path = write_json(tmp_path, {s: [pitches(r) for r in rs] for s, rs in rolls.items()})
    monkeypatch.setenv("PIANOLAB_JSB", str(path))
    cfg = RunConfig(data={"benchmark": "jsb", "transpose": [-1, 1]},
                    model={"filter_increments": [[2, 2, 1, 1, 1, 1, 1, 1]]},
                    training={"n_targets": 2 * bm.N_KEYS, "batch_start": 2, "batch_end": 2, "steps": 4,
                              "checkpoint_every": 2, "validate_every": 2, "log_every": 1, "lr": 1e-2},
                    validation={"n_windows": None})
    cfg.to_json(tmp_path / "cfg.json")
    assert main(["train", str(tmp_path / "run"), "--config", str(tmp_path / "cfg.json"), "--quiet"]) == 0
    assert "step 4" in capsys.readouterr().out
    config, model = load_run(tmp_path / "run")
    assert config == cfg
    ev = bm.nll_per_frame(model, rolls["test"])
    assert math.isfinite(ev["nll"]) and ev["frames"] == 16
    # the config opens the benchmark's set itself, each training piece also a key down and up
    opened, direct = cfg.open_dataset(), bm.dataset(bm.load("jsb"), [-1, 1])
    assert opened.train.pieces == direct.train.pieces and len(opened.val) == 2 and opened.encoding == bm.ENCODING


def test_the_benchmark_configs_are_valid_and_train_on_their_set():
    from pianolab.config import RunConfig

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    names = sorted(p.stem for p in folder.glob("*.json"))
    assert names == sorted(bm.BENCHMARKS)
    for name in names:
        config = RunConfig.from_json(folder / f"{name}.json")
        assert config.data.benchmark == name and config.validation.n_windows is None


def test_polyphonic_script_scores_a_shipped_model_and_prints_the_line(capsys):
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "polyphonic.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--only", "jsb"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    recorded = json.loads((settings.models_dir() / "jsb" / "results.json").read_text())
    name, value = out[-1].split("=")
    assert name == "jsb" and abs(float(value) - recorded["test_nll"]) < 1e-4  # both 4 decimals (5e-5 each); float32 ~1e-5
    assert any(line.lstrip().startswith("per-key first-order Markov") for line in out)
    assert main(["--only", "jsb", "--models", "/nonexistent"]) == 2
