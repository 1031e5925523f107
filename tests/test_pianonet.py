"""PianoNet's released models in pianolab: the shipped conversions equal PianoNet's own forward pass,
the reader refuses what it cannot represent, and the models' encodings are picked up (chapter
07_pianonet_models)."""

import copy
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pianolab import pianonet  # noqa: E402
from pianolab.cli import main  # noqa: E402
from pianolab.encoding import DEFAULT_ENCODING, Encoding, midi_to_roll  # noqa: E402
from pianolab.errors import ConfigError  # noqa: E402
from pianolab.encoding import EDGE_THRESHOLDS  # noqa: E402
from pianolab.model import count_params, in_float64, model_receptive_field, rounding_bound  # noqa: E402
from pianolab.config import RunConfig  # noqa: E402
from pianolab.runs import encoding_of, load_model  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pianonet"
MODELS = Path(__file__).resolve().parent.parent / "data" / "models"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())
SHIPPED = ["pianonet_micro_1", "pianonet_r5p3"]


def golden_input(rf):
    """The input make_golden.py fed PianoNet's stack: RF + 500 random key states."""
    rng = np.random.default_rng(GOLDEN["seed"])
    return (rng.random(rf + GOLDEN["extra"]) < GOLDEN["density"]).astype(np.float32)


def assert_matches_golden(model, name):
    """PianoNet's own stack ran in float64 (make_golden.py): our float64 copy must agree to its rounding
    bound (~3e-13 for micro_1), which no conversion bug survives; our float32 model, as the chapters run
    it, to float32's bound over the stack (~1.5e-4; measured 2.4e-6 with AVX2 kernels, 0 in float64)."""
    rf = model_receptive_field(model)
    record = GOLDEN["models"][name]
    assert (rf, model.count_params()) == (record["receptive_field"], record["params"])
    x = golden_input(rf)
    assert int(x.sum()) == record["input_ones"]  # the same input as PianoNet saw
    theirs = np.load(FIXTURES / "golden.npz")[name]
    assert theirs.dtype == np.float64 and theirs.shape == (GOLDEN["extra"] + 1,)
    exact = np.asarray(in_float64(model)(x[None, :, None].astype(np.float64), training=False))[0, :, 0]
    assert np.max(np.abs(exact - theirs)) <= rounding_bound(model, "float64")
    ours = np.asarray(model(x[None, :, None], training=False))[0, :, 0]
    assert np.max(np.abs(ours - theirs)) <= rounding_bound(model, "float32")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_conversion_equals_pianonets_forward_pass(name):
    assert_matches_golden(load_model(name), name)


def test_reader_also_reads_keras_metadata_pb(tmp_path):
    """The tiny fixture is a TF 2.15 SavedModel: its layer configs live in keras_metadata.pb."""
    assert (FIXTURES / "tiny" / "keras_metadata.pb").is_file()
    model = pianonet.convert(FIXTURES / "tiny", tmp_path / "tiny", Encoding(48.0, 40, 12))
    assert_matches_golden(model, "tiny")
    config = RunConfig.from_json(tmp_path / "tiny" / "config.json")
    assert config.filter_increments == [[2, 1], [1]]
    assert count_params(config.filter_increments) == model.count_params()
    assert encoding_of(tmp_path / "tiny") == Encoding(48.0, 40, 12)
    assert_matches_golden(load_model(tmp_path / "tiny"), "tiny")


def test_converter_refuses_an_unsupported_layer_by_name(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"layer 'dense' \(Dense\) is not a Conv1D"):
        pianonet.convert(FIXTURES / "dense", tmp_path / "dense")
    assert not (tmp_path / "dense").exists()
    assert main(["import-pianonet", str(FIXTURES / "dense"), "--out", str(tmp_path / "d")]) == 2
    assert "layer 'dense' (Dense)" in capsys.readouterr().err
    assert main(["import-pianonet", str(FIXTURES), "--out", str(tmp_path / "d")]) == 2
    assert "not a SavedModel folder" in capsys.readouterr().err


def _edit(layers, name, **config):
    layers = copy.deepcopy(layers)
    layer = next(lay for lay in layers if lay["name"] == name)
    for key, value in config.items():
        if key == "inbound":
            layer["inbound"] = value
        else:
            layer["config"][key] = value
    return layers


@pytest.mark.parametrize("name, change, blamed, message", [
    ("conv1d_1", {"kernel_size": [3]}, "conv1d_1", "kernel size 3"),
    ("conv1d_1", {"dilation_rate": [4]}, "conv1d_1", "dilation 4"),
    ("conv1d_1", {"padding": "causal"}, "conv1d_1", "padding 'causal'"),
    ("conv1d_1", {"filters": 1}, "conv1d_1", "1 filters, fewer than the 2"),
    ("activation_2", {"activation": "tanh"}, "conv1d_2", "activation 'tanh'"),
    ("conv1d_2", {"activation": "elu"}, "activation_2", "is not a Conv1D after an activation"),
    ("activation_1", {"inbound": ["conv1d"]}, "activation_1", "not the one layer before it"),
    ("conv1d_3", {"filters": 2}, "conv1d_3", "is last; expected a 1x1 Conv1D with one filter"),
])
def test_plan_names_the_layer_it_cannot_represent(name, change, blamed, message):
    layers = pianonet.read_saved_model(FIXTURES / "tiny")
    assert pianonet.as_filter_increments(layers)[:2] == ([[2, 1], [1]], "elu")
    with pytest.raises(ConfigError, match=f"layer '{blamed}' .*{message}"):
        pianonet.as_filter_increments(_edit(layers, name, **change))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_folders_carry_encoding_license_and_records(name):
    folder = MODELS / name
    assert {"README.md", "COMMAND.txt", "config.json", "model.keras", "summary.json",
            "encoding.json"} <= {p.name for p in folder.iterdir()}
    with zipfile.ZipFile(folder / "model.keras") as z:
        import h5py

        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
            assert "optimizer" not in h5  # weights only
    readme = (folder / "README.md").read_text()
    assert "Copyright (c) 2020 angsten" in readme and "Permission is hereby granted" in readme
    summary = json.loads((folder / "summary.json").read_text())
    evidence = json.loads((folder / "encoding.json").read_text())
    enc = encoding_of(name)
    model = load_model(name)
    assert summary["params"] == model.count_params()
    assert summary["receptive_field"] == model_receptive_field(model)
    assert summary["encoding"] == evidence["chosen"] == enc.to_dict()
    # the number of keys is the one with the lowest loss per time step, by far; the lowest key is
    # not identifiable (a semitone's shift shifts the flat sequence), so the rival windows tie
    first = evidence["candidates"][0]
    assert (first["n_keys"], first["lowest"]) == (enc.n_keys, enc.lowest)
    rivals = [c for c in evidence["candidates"] if c["n_keys"] != enc.n_keys]
    assert rivals and all(c["nats_per_step"] > 2 * first["nats_per_step"] for c in rivals)
    shifted = [c for c in evidence["candidates"] if c["n_keys"] == enc.n_keys]
    assert len(shifted) >= 3
    assert all(abs(c["loss_per_state"] / first["loss_per_state"] - 1) < 1e-4 for c in shifted)
    assert evidence["n_keys"] == enc.n_keys and evidence["lowest"] == enc.lowest
    assert summary["heldout_loss"] == evidence["candidates"][0]["loss_per_state"]
    assert f"{summary['heldout_loss']:.5f} nats per key state" in readme


def test_encodings_are_picked_up():
    assert encoding_of("pianonet_r5p3") == Encoding(48.0, 34, 64)
    assert encoding_of("pianonet_micro_1") == DEFAULT_ENCODING
    assert encoding_of("deep") == DEFAULT_ENCODING  # data.encoding null: the default
    assert encoding_of(MODELS / "pianonet_r5p3" / "model.keras") == Encoding(48.0, 34, 64)


def test_cli_generates_with_64_keys_and_edge_aversion(tmp_path):
    out = tmp_path / "gen"
    args = ["generate", "pianonet_r5p3", "--seconds", "2", "--seed", "corpus:bwv846", "--seed-seconds",
            "6", "--streams", "2", "--out", str(out), "--no-audio", "--quiet"]
    assert main(args) == 0
    settings = json.loads((out / "performance.json").read_text())
    enc = Encoding.from_dict(settings["encoding"])
    assert enc == Encoding(48.0, 34, 64) and settings["edge_aversion"] == list(EDGE_THRESHOLDS)
    sounding = 0
    for k in range(2):
        roll = midi_to_roll(out / f"performance_{k:02d}.mid", enc, out_of_range="drop")
        assert roll.shape == (96, 64)
        assert not roll[:, :2].any() and not roll[:, -2:].any()  # the two outermost keys never sound
        sounding += int(roll.sum())
    assert sounding > 0


def test_heldout_records_give_nats_per_step_as_loss_times_keys():
    """Chapter 07's held-out table reads both figures from each PianoNet model's summary.json (and the deep
    and shallow ones from r5p3's); a time step is n_keys key states."""
    records = {name: json.loads((MODELS / name / "summary.json").read_text()) for name in SHIPPED}
    for name, s in records.items():
        assert s["heldout_nats_per_step"] == pytest.approx(s["heldout_loss"] * encoding_of(name).n_keys)
    for name in ("deep", "shallow"):
        s = records["pianonet_r5p3"]
        assert s[f"{name}_heldout_nats_per_step"] == pytest.approx(s[f"{name}_heldout_loss"] * encoding_of(name).n_keys)
