"""pianolab.generate: Fast-WaveNet equals the model, the naive sampler and the controls (chapter 05_fast_wavenet)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pianolab import generate as gen  # noqa: E402
from pianolab.encoding import EDGE_THRESHOLDS, midi_to_roll, write_midi  # noqa: E402
from pianolab.errors import ConfigError  # noqa: E402
from pianolab.model import build_model, logit, model_receptive_field, receptive_field, rounding_bound  # noqa: E402

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
        np.testing.assert_allclose(got, ref, atol=rounding_bound(model), rtol=0)  # float32, other order


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_other_activations_are_exact(activation):
    model = random_model([[2, 2, 1], [1, 1]], seed=4, activation=activation)
    fast = gen.FastSampler(model)
    hist = (np.random.default_rng(2).random(80) < 0.4).astype(np.uint8)
    got = fast.probabilities(hist, start=13)
    assert got.shape == (80 - 13 + 1,)
    np.testing.assert_allclose(got, model_probabilities(model, hist, 13)[0], atol=rounding_bound(model), rtol=0)


def test_numba_and_numpy_backends_agree():
    model = random_model("tiny", seed=5)
    fast = gen.FastSampler(model, n_keys=12)
    slow = gen.FastSampler(model, n_keys=12, backend="numpy", verify=False)
    hist = (np.random.default_rng(3).random((2, 300)) < 0.2).astype(np.uint8)
    np.testing.assert_allclose(fast.probabilities(hist, 40), slow.probabilities(hist, 40), atol=rounding_bound(model))
    seed = (np.random.default_rng(4).random((5, 12)) < 0.3).astype(np.uint8)
    a = fast.sample(seed, 6, streams=5, random_seed=9, temperature=0.8)
    b = slow.sample(seed, 6, streams=5, random_seed=9, temperature=0.8)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("streams", [1, 6])
def test_naive_and_fast_sample_the_same_music(streams):
    model = random_model([[3, 2, 2, 1], [2, 2]], seed=6, output_bias=logit(0.2))
    fast = gen.FastSampler(model, n_keys=12)
    seed = (np.random.default_rng(7).random((3, 12)) < 0.3).astype(np.uint8)
    kwargs = dict(streams=streams, temperature=1.3, edge_aversion=[1.0, 0.3], random_seed=11)
    naive = gen.naive_sample(model, seed, 5, n_keys=12, **kwargs)
    quick, probs = fast.sample(seed, 5, return_probabilities=True, **kwargs)
    assert naive.shape == quick.shape == (streams, 5, 12)
    assert np.array_equal(naive, quick)
    assert 0 < quick.mean() < 1
    # the probabilities used while sampling are the model's on the music as generated
    hist = np.concatenate([gen.seed_history(seed, fast.receptive_field, 12)[None].repeat(streams, 0),
                           quick.reshape(streams, -1)], axis=1)
    ref = model_probabilities(model, hist, hist.shape[1] - quick[0].size)[:, :-1]
    np.testing.assert_allclose(probs.reshape(streams, -1), ref, atol=rounding_bound(model), rtol=0)


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
    rate = {}
    for t in (0.3, 1.0, 3.0):
        rolls, p = sampler.sample(None, 24, streams=4, temperature=t, edge_aversion=False,
                                  return_probabilities=True)
        q = 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p)) / t))  # the logit divided by the temperature
        rate[t] = rolls.mean()
        assert abs(rate[t] - q.mean()) < 4 * np.sqrt(q.mean() * (1 - q.mean()) / rolls.size)
    assert rate[0.3] < rate[1.0] < rate[3.0]  # p < 1/2 mostly: bolder (fewer notes) below 1, more random above
    for bad in (0, -1.0, float("nan"), float("inf"), "hot", None):
        with pytest.raises(ValueError, match="temperature"):
            sampler.sample(None, 2, temperature=bad)


@pytest.mark.parametrize("n_keys", [72, 64])
def test_edge_aversion_silences_the_keyboard_edges(n_keys):
    # output kernel zero, bias logit(0.3): p = 0.3 for every key whatever the history
    model = random_model("tiny", seed=10, output_bias=logit(0.3), bias_scale=0.0)
    kernel, bias = model.get_layer("output").get_weights()
    model.get_layer("output").set_weights([np.zeros_like(kernel), bias])
    sampler = gen.FastSampler(model, n_keys=n_keys)
    on = sampler.sample(None, 96, streams=2, random_seed=1)
    off = sampler.sample(None, 96, streams=2, random_seed=1, edge_aversion=False)
    dist = np.minimum(np.arange(n_keys), n_keys - 1 - np.arange(n_keys))  # distance from the nearer edge
    thr = np.array(EDGE_THRESHOLDS)
    silenced = dist < np.flatnonzero(thr <= 0.3)[0]  # thresholds above p: those keys never sound
    assert on[:, :, silenced].sum() == 0 and off.mean(axis=(0, 1))[silenced].min() > 0.15
    assert np.array_equal(on[:, :, ~silenced], off[:, :, ~silenced])  # p >= threshold: same uniforms, same music
    custom = sampler.sample(None, 48, streams=2, edge_aversion=[1.0] * 5)
    assert custom[:, :, dist < 5].sum() == 0 and custom[:, :, dist >= 5].sum() > 0
    for bad in ([0.5, 2.0], [float("nan")], "yes", 3):
        with pytest.raises(ValueError, match="edge"):
            sampler.sample(None, 2, edge_aversion=bad)


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


def test_generate_seeds_from_a_roll_a_midi_file_and_silence(tmp_path, capsys):
    model = random_model("tiny", seed=12, output_bias=logit(0.05))
    sampler = gen.FastSampler(model)
    seed = np.zeros((30, 72), np.uint8)
    seed[::6, [20, 24, 27]] = 1
    path = write_midi(seed, tmp_path / "seed.mid")
    kw = dict(progress=False, sampler=sampler, random_seed=2)
    from_roll = gen.generate(model, 0.25, seed=midi_to_roll(path), **kw)
    assert from_roll[0].shape == (12, 72)
    assert np.array_equal(from_roll[0], gen.generate(model, 0.25, seed=str(path), **kw)[0])
    cut = gen.generate(model, 0.25, seed=path, seed_seconds=0.25, **kw)
    assert np.array_equal(cut[0], gen.generate(model, 0.25, seed=midi_to_roll(path)[:12], **kw)[0])
    silent = gen.generate(model, 0.25, seed="silence", **kw)
    assert np.array_equal(silent[0], gen.generate(model, 0.25, seed=None, **kw)[0])
    gen.generate(model, 0.25, progress=True, sampler=sampler)
    assert "generating" in capsys.readouterr().err  # the progress bar


def test_bad_arguments_raise_clear_errors(tmp_path, monkeypatch):
    model = random_model("tiny", seed=13, output_bias=logit(0.05))
    sampler = gen.FastSampler(model)
    with pytest.raises(ConfigError, match="seed"):
        gen.generate(model, 1.0, seed=tmp_path / "missing.mid", sampler=sampler)
    with pytest.raises(ConfigError, match="seed"):
        gen.generate(model, 1.0, seed=42, sampler=sampler)
    for bad in (-1, 0, float("inf"), "long"):
        with pytest.raises(ValueError, match="seconds"):
            gen.generate(model, bad, sampler=sampler)
    with pytest.raises(ValueError, match="streams"):
        sampler.sample(None, 2, streams=0)
    with pytest.raises(ValueError, match="start"):
        sampler.probabilities(np.zeros(10, np.uint8), start=11)
    with pytest.raises(ValueError, match="backend"):
        gen.FastSampler(model, backend="cuda")
    with pytest.raises(ValueError, match="keys"):
        gen.generate(model, 1.0, sampler=gen.FastSampler(model, n_keys=64))
    # the check against the model's forward pass catches weights read wrongly
    layers, w_out, b_out = gen.read_layers(model)
    monkeypatch.setattr(gen, "read_layers", lambda m: (layers, w_out, b_out + 0.5))
    with pytest.raises(ValueError, match="disagrees"):
        gen.FastSampler(model)


def test_advance_continues_the_same_performance():
    model = random_model("tiny", seed=14, output_bias=logit(0.1))
    sampler = gen.FastSampler(model)
    seed = (np.random.default_rng(5).random((4, 72)) < 0.1).astype(np.uint8)
    n = 60  # more than one chunk of the progress bar
    whole = sampler.sample(seed, n, streams=3, random_seed=2)
    state = sampler.start(seed, 3, random_seed=2)
    first = sampler.advance(state, 7)
    second = sampler.advance(state, n - 7)
    assert np.array_equal(np.concatenate([first, second], axis=1), whole)
    assert state.position == gen.seed_history(seed, sampler.receptive_field, 72).size - 1 + n * 72


def test_one_seed_per_stream():
    model = random_model("tiny", seed=15, output_bias=logit(0.1))
    sampler = gen.FastSampler(model)
    rng = np.random.default_rng(6)
    seeds = [(rng.random((n, 72)) < 0.2).astype(np.uint8) for n in (1, 3, 5)]
    rolls, probs = sampler.sample(seeds, 3, streams=3, random_seed=4, return_probabilities=True)
    for k, s in enumerate(seeds):  # each stream's probabilities follow its own seed
        hist = np.concatenate([gen.seed_history(s, sampler.receptive_field, 72), rolls[k].reshape(-1)])
        ref = model_probabilities(model, hist, hist.size - 3 * 72)[0, :-1]
        np.testing.assert_allclose(probs[k].reshape(-1), ref, atol=rounding_bound(model), rtol=0)
    with pytest.raises(ValueError, match="streams"):
        sampler.sample(seeds, 3, streams=2)


def test_corpus_piece_as_seed():
    from pianolab import corpus

    folder = corpus.default_corpus(progress=False)
    files = corpus.midi_files(folder) if folder.is_dir() else []
    if len(files) < 2:
        pytest.skip("the default corpus is not built (make corpus builds it)")
    names = [corpus.piece_name(f, folder) for f in files]
    model = random_model("tiny", seed=16, output_bias=logit(0.05))
    kw = dict(progress=False, sampler=gen.FastSampler(model), random_seed=1)
    by_name = gen.generate(model, 0.5, seed=f"corpus:{names[0]}", seed_seconds=2.0, **kw)
    by_roll = gen.generate(model, 0.5, seed=midi_to_roll(files[0])[:96], **kw)
    assert np.array_equal(by_name[0], by_roll[0])
    shared = next(c for c in names[0] if sum(c.lower() in n.lower() for n in names) > 1)
    with pytest.raises(ConfigError, match="corpus pieces match"):
        gen.generate(model, 0.5, seed=f"corpus:{shared}", **kw)
    with pytest.raises(ConfigError, match="no piece"):
        gen.generate(model, 0.5, seed="corpus:no such piece", **kw)


def test_many_streams_on_threads_match_the_numpy_backend():
    model = random_model("tiny", seed=17, output_bias=logit(0.15))
    fast = gen.FastSampler(model, n_keys=12)
    slow = gen.FastSampler(model, n_keys=12, backend="numpy", verify=False)
    a = fast.sample(None, 4, streams=9, random_seed=3)  # groups of 4, 4 and 1 streams
    b = slow.sample(None, 4, streams=9, random_seed=3)
    assert np.array_equal(a, b) and a.any()
