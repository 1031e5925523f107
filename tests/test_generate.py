"""Tests of pianolab.generate: Fast-WaveNet equals the model, controls, seeds, CLI (chapter 05_fast_wavenet)."""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pianolab import generate as gen  # noqa: E402
from pianolab.encoding import DEFAULT_ENCODING, Encoding, midi_to_roll, write_midi  # noqa: E402
from pianolab.errors import ConfigError  # noqa: E402
from pianolab.model import build_model, logit, model_receptive_field, receptive_field  # noqa: E402

keras = pytest.importorskip("keras")


def random_model(increments, *, seed=0, output_bias=-1.0, activation="elu", bias_scale=0.3):
    """A pianolab model with random (non-zero) biases so every path of the kernel matters."""
    model = build_model(increments, output_bias=output_bias, activation=activation, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights and layer.name != "output":
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, bias_scale, bias.shape).astype("float32")])
    return model


def model_probabilities(model, history, start):
    """Reference: the Keras forward pass over RF zeros + history, outputs from ``start`` on."""
    rf = model_receptive_field(model)
    h = np.atleast_2d(history).astype(np.float32)
    padded = np.concatenate([np.zeros((h.shape[0], rf), np.float32), h], axis=1)
    return np.asarray(model(padded[:, start:, None], training=False))[:, :, 0]


# RFs 11, 16, 95 and 40: none a multiple of the key counts used below (7, 12, 72)
SHAPES = [[[2, 2, 1], [1, 1]], [[3, 2, 2, 1]], "tiny", [[4, 2, 2, 2, 2], [2, 2, 2, 2]]]


@pytest.mark.parametrize("shape", SHAPES, ids=["rf11", "rf16", "rf95", "rf47"])
def test_fast_probabilities_equal_the_model(shape):
    model = random_model(shape, seed=3)
    fast = gen.FastSampler(model, n_keys=7)
    rf = fast.receptive_field
    assert rf == receptive_field(shape)
    rng = np.random.default_rng(1)
    hist = (rng.random((3, 2 * rf + 29)) < 0.3).astype(np.uint8)
    for start in sorted({0, 1, 5, rf - 1, rf, rf + 3, hist.shape[1]}):
        got = fast.probabilities(hist, start=start)
        ref = model_probabilities(model, hist, start)
        assert got.shape == ref.shape == (3, hist.shape[1] - start + 1)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_other_activations_are_exact(activation):
    model = random_model([[2, 2, 1], [1, 1]], seed=4, activation=activation)
    fast = gen.FastSampler(model)
    hist = (np.random.default_rng(2).random(80) < 0.4).astype(np.uint8)
    got = fast.probabilities(hist, start=13)
    assert got.shape == (80 - 13 + 1,)
    np.testing.assert_allclose(got, model_probabilities(model, hist, 13)[0], atol=1e-5, rtol=0)


def test_numba_and_numpy_backends_agree():
    model = random_model("tiny", seed=5)
    fast = gen.FastSampler(model, n_keys=12)
    slow = gen.FastSampler(model, n_keys=12, backend="numpy", verify=False)
    hist = (np.random.default_rng(3).random((2, 300)) < 0.2).astype(np.uint8)
    np.testing.assert_allclose(fast.probabilities(hist, 40), slow.probabilities(hist, 40), atol=1e-6)
    seed = (np.random.default_rng(4).random((5, 12)) < 0.3).astype(np.uint8)
    a = fast.sample(seed, 6, streams=5, random_seed=9, temperature=0.8)
    b = slow.sample(seed, 6, streams=5, random_seed=9, temperature=0.8)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("streams", [1, 6])
def test_naive_and_fast_sample_the_same_music(streams):
    enc = Encoding(n_keys=12)
    model = random_model([[3, 2, 2, 1], [2, 2]], seed=6, output_bias=logit(0.2))
    fast = gen.FastSampler(model, n_keys=12)
    seed = (np.random.default_rng(7).random((3, 12)) < 0.3).astype(np.uint8)
    kwargs = dict(streams=streams, temperature=1.3, edge_aversion=[1.0, 0.3], random_seed=11)
    naive = gen.naive_sample(model, seed, 5, encoding=enc, **kwargs)
    quick, probs = fast.sample(seed, 5, return_probabilities=True, **kwargs)
    assert naive.shape == quick.shape == (streams, 5, 12)
    assert np.array_equal(naive, quick)
    assert 0 < quick.mean() < 1
    # the probabilities used while sampling are the model's on the music as generated
    hist = np.concatenate([gen.seed_history(seed, fast.receptive_field, 12)[None].repeat(streams, 0),
                           quick.reshape(streams, -1)], axis=1)
    ref = model_probabilities(model, hist, hist.shape[1] - quick[0].size)[:, :-1]
    np.testing.assert_allclose(probs.reshape(streams, -1), ref, atol=1e-5, rtol=0)


def test_seed_history_pads_to_whole_steps_covering_the_receptive_field():
    h = gen.seed_history(None, 95, 72)
    assert h.shape == (144,) and not h.any()
    roll = np.zeros((3, 72), np.uint8)
    roll[-1, 5] = 1
    h = gen.seed_history(roll, 1000, 72)
    assert h.size % 72 == 0 and h.size >= 1000 and h[-72 + 5] == 1 and h.sum() == 1
    long = np.ones((40, 72), np.uint8)
    assert gen.seed_history(long, 95, 72).size == 40 * 72  # no padding needed: kept whole
    with pytest.raises(ValueError, match="72"):
        gen.seed_history(np.zeros((3, 10)), 95, 72)


def test_same_random_seed_same_performance_and_midi_bytes(tmp_path):
    model = random_model("tiny", seed=8, output_bias=logit(0.1))
    sampler = gen.FastSampler(model)
    kw = dict(seconds=0.5, streams=2, random_seed=3, progress=False, sampler=sampler)
    a = gen.generate(model, **kw)
    b = gen.generate(model, **kw)
    c = gen.generate(model, **{**kw, "random_seed": 4})
    assert len(a) == 2 and a[0].shape == (24, 72)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])  # streams differ
    pa = write_midi(a[0], tmp_path / "a.mid")
    pb = write_midi(b[0], tmp_path / "b.mid")
    assert pa.read_bytes() == pb.read_bytes()


def test_temperature_sharpens_or_flattens():
    model = random_model("tiny", seed=9, output_bias=logit(0.1), bias_scale=0.0)
    sampler = gen.FastSampler(model)
    rate = {t: sampler.sample(None, 24, streams=4, temperature=t, edge_aversion=False).mean()
            for t in (0.05, 1.0, 4.0)}
    assert rate[0.05] < rate[1.0] < rate[4.0]
    assert rate[0.05] < 0.01 and rate[4.0] > 0.25
    for bad in (0, -1.0, float("nan"), "hot"):
        with pytest.raises(ValueError, match="temperature"):
            sampler.sample(None, 2, temperature=bad)


def test_edge_aversion_silences_the_keyboard_edges():
    # output kernel zero, bias logit(0.3): p = 0.3 for every key whatever the history
    model = random_model("tiny", seed=10, output_bias=logit(0.3), bias_scale=0.0)
    kernel, bias = model.get_layer("output").get_weights()
    model.get_layer("output").set_weights([np.zeros_like(kernel), bias])
    sampler = gen.FastSampler(model)
    on = sampler.sample(None, 96, streams=2, random_seed=1)
    off = sampler.sample(None, 96, streams=2, random_seed=1, edge_aversion=False)
    per_key_on = on.mean(axis=(0, 1))
    per_key_off = off.mean(axis=(0, 1))
    # thresholds 1.0, 1.0, 0.4 at distances 0, 1, 2 from either edge: those keys never sound
    for k in (0, 1, 2, 69, 70, 71):
        assert per_key_on[k] == 0 and per_key_off[k] > 0.15
    # 0.05 and 0.03 further in: p = 0.3 passes, so the keys sound as without aversion
    assert per_key_on[3:69].mean() == pytest.approx(per_key_off[3:69].mean(), abs=0.05)
    assert np.array_equal(on[:, :, 3:69], off[:, :, 3:69])  # same uniforms, same decisions
    custom = sampler.sample(None, 48, streams=2, edge_aversion=[1.0] * 5)
    assert custom[:, :, :5].sum() == 0 and custom[:, :, 67:].sum() == 0 and custom[:, :, 5:67].sum() > 0
    assert list(gen.EDGE_THRESHOLDS) == [1.0, 1.0, 0.4, 0.05, 0.05, 0.05, 0.03, 0.03]
    with pytest.raises(ValueError, match="threshold"):
        gen.edge_thresholds([0.5, 2.0])


def _conv(filters, kernel=2, dilation=1, activation="elu", name=None, **kw):
    return keras.layers.Conv1D(filters, kernel, dilation_rate=dilation, activation=activation,
                               padding=kw.pop("padding", "valid"), name=name, **kw)


@pytest.mark.parametrize("layers, message", [
    ([keras.layers.Dense(4, name="dense"), _conv(1, 1, activation="sigmoid", name="output")], "Dense"),
    ([_conv(4, kernel=3, name="wide"), _conv(1, 1, activation="sigmoid", name="output")], "kernel_size"),
    ([_conv(4), _conv(4, dilation=3, name="odd"), _conv(1, 1, activation="sigmoid", name="output")], "dilation 3"),
    ([_conv(4, activation="tanh", name="tanhy"), _conv(1, 1, activation="sigmoid", name="output")], "tanh"),
    ([_conv(4, padding="causal", name="causal"), _conv(1, 1, activation="sigmoid", name="output")], "padding"),
    ([_conv(4), _conv(1, 1, activation="linear", name="output")], "sigmoid"),
    ([_conv(4), _conv(3, 1, activation="sigmoid", name="output")], "filter"),
])
def test_other_layouts_are_refused_with_a_clear_error(layers, message):
    inputs = keras.Input((None, 1))
    x = inputs
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=message):
        gen.FastSampler(model)


def test_generate_seeds_from_a_roll_a_midi_file_and_silence(tmp_path):
    model = random_model("tiny", seed=12, output_bias=logit(0.05))
    sampler = gen.FastSampler(model)
    seed = np.zeros((30, 72), np.uint8)
    seed[::6, [20, 24, 27]] = 1
    path = write_midi(seed, tmp_path / "seed.mid")
    from_roll = gen.generate(model, 0.25, seed=midi_to_roll(path), progress=False, sampler=sampler)
    from_file = gen.generate(model, 0.25, seed=str(path), progress=False, sampler=sampler)
    assert np.array_equal(from_roll[0], from_file[0])
    with_seed = gen.generate(model, 0.25, seed=path, include_seed=True, progress=False, sampler=sampler)
    assert with_seed[0].shape[0] == midi_to_roll(path).shape[0] + 12
    silent = gen.generate(model, 0.25, seed="silence", progress=False, sampler=sampler)
    assert silent[0].shape == (12, 72)
    cut = gen.load_seed(path, seed_seconds=0.25)
    assert cut.shape[0] == 12
    with pytest.raises(ConfigError, match="seed"):
        gen.load_seed(tmp_path / "missing.mid")
    with pytest.raises(ValueError, match="seconds"):
        gen.generate(model, -1, progress=False, sampler=sampler)


def _args(model_path, out, **kw):
    base = dict(model=str(model_path), seconds=0.3, seed="silence", streams=2, out=str(out), temperature=1.0,
                no_edge_aversion=False, random_seed=0, no_audio=False, quiet=True, seed_seconds=None)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    random_model("tiny", seed=13, output_bias=logit(0.05)).save(path)
    return path


def test_cli_writes_midi_wav_and_settings(saved_model, tmp_path):
    from pianolab.cli import main

    out = tmp_path / "perf"
    code = main(["generate", str(saved_model), "--seconds", "0.3", "--streams", "2", "--out", str(out),
                 "--quiet", "--random-seed", "5"])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["performance.json", "performance_00.mid", "performance_00.wav",
                     "performance_01.mid", "performance_01.wav"]
    with open(out / "performance_00.wav", "rb") as f:
        assert f.read(4) == b"RIFF"
    roll = midi_to_roll(out / "performance_00.mid") if (out / "performance_00.mid").stat().st_size else None
    assert roll is None or roll.shape[1] == DEFAULT_ENCODING.n_keys
    again = tmp_path / "again"
    assert main(["generate", str(saved_model), "--seconds", "0.3", "--streams", "2", "--out", str(again),
                 "--quiet", "--random-seed", "5", "--no-audio"]) == 0
    assert (again / "performance_00.mid").read_bytes() == (out / "performance_00.mid").read_bytes()
    assert not (again / "performance_00.wav").exists()


@pytest.mark.parametrize("change, flag", [
    (dict(seconds=-1.0), "--seconds"),
    (dict(seconds=float("inf")), "--seconds"),
    (dict(streams=0), "--streams"),
    (dict(temperature=0.0), "--temperature"),
    (dict(seed="no/such/file.mid"), "--seed"),
    (dict(seed="corpus:"), "--seed"),
    (dict(random_seed=-3), "--random-seed"),
    (dict(seed_seconds=-2.0), "--seed-seconds"),
    (dict(model="no/such/run"), "MODEL"),
])
def test_cli_bad_arguments_name_the_flag(saved_model, tmp_path, change, flag):
    with pytest.raises(ConfigError) as err:
        gen.cli_generate(_args(saved_model, tmp_path / "x", **change))
    assert err.value.key == flag


def test_cli_exit_code_and_message_for_a_bad_flag(saved_model, tmp_path, capsys):
    from pianolab.cli import main

    code = main(["generate", str(saved_model), "--seconds", "-5", "--out", str(tmp_path / "y")])
    assert code == 2
    assert "--seconds" in capsys.readouterr().err


def test_cli_refuses_a_model_of_another_layout(tmp_path):
    inputs = keras.Input((None, 1))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    path = tmp_path / "dense.keras"
    model.save(path)
    with pytest.raises(ConfigError) as err:
        gen.cli_generate(_args(path, tmp_path / "z"))
    assert err.value.key == "MODEL" and "Dense" in str(err.value)


def test_advance_in_chunks_continues_the_same_performance():
    model = random_model("tiny", seed=14, output_bias=logit(0.1))
    sampler = gen.FastSampler(model)
    seed = (np.random.default_rng(5).random((4, 72)) < 0.1).astype(np.uint8)
    whole = sampler.sample(seed, 10, streams=3, random_seed=2)
    state = sampler.start(seed, 3, random_seed=2)
    first = sampler.advance(state, 4)
    second = sampler.advance(state, 6, chunk_steps=1)
    assert np.array_equal(np.concatenate([first, second], axis=1), whole)
    assert state.position == gen.seed_history(seed, sampler.receptive_field, 72).size - 1 + 10 * 72


def test_one_seed_per_stream():
    model = random_model("tiny", seed=15, output_bias=logit(0.1))
    sampler = gen.FastSampler(model)
    rng = np.random.default_rng(6)
    seeds = [(rng.random((n, 72)) < 0.2).astype(np.uint8) for n in (1, 3, 5)]
    both = sampler.sample(seeds, 3, streams=3, random_seed=4, return_probabilities=True)[1]
    for k, s in enumerate(seeds):  # each stream's probabilities follow its own seed
        hist = np.concatenate([gen.seed_history(s, sampler.receptive_field, 72),
                               sampler.sample(seeds, 3, streams=3, random_seed=4)[k].reshape(-1)])
        ref = model_probabilities(model, hist, hist.size - 3 * 72)[0, :-1]
        np.testing.assert_allclose(both[k].reshape(-1), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="streams"):
        sampler.sample(seeds, 3, streams=2)


def test_cli_reads_a_run_directory(saved_model, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(saved_model, run / "model.keras")
    out = tmp_path / "from_run"
    gen.cli_generate(_args(run, out, streams=1, no_audio=True))
    assert (out / "performance_00.mid").is_file()


def test_corpus_piece_as_seed():
    from pianolab import data

    folder = data.default_corpus_dir()
    if not folder.is_dir() or not any(folder.rglob("*.mid")):
        pytest.skip("the default corpus is not built (make corpus builds it)")
    roll = gen.load_seed("corpus:keyboard/bach_bwv846", seed_seconds=2.0)
    assert roll.shape == (96, 72) and roll.any()
    with pytest.raises(ConfigError, match="corpus pieces match"):
        gen.load_seed("corpus:bwv")


def test_many_streams_on_threads_match_the_numpy_backend():
    model = random_model("tiny", seed=16, output_bias=logit(0.15))
    fast = gen.FastSampler(model, n_keys=12, threads=2)
    slow = gen.FastSampler(model, n_keys=12, backend="numpy", verify=False)
    assert fast._bounds(9).tolist() == [0, 4, 8, 9]  # groups of four, handed to the threads
    a = fast.sample(None, 4, streams=9, random_seed=3)
    b = slow.sample(None, 4, streams=9, random_seed=3)
    assert np.array_equal(a, b) and a.any()
