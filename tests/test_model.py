"""pianolab.model: presets, receptive field, parameter count, causality, output bias, backends."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pianolab.model import (  # noqa: E402
    PRESETS,
    build_model,
    count_params,
    impulse_response,
    layer_plan,
    logit,
    model_receptive_field,
    receptive_field,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_params_and_receptive_field_match_the_built_model(name):
    model = build_model(name)
    assert model.count_params() == count_params(name)
    assert model_receptive_field(model) == receptive_field(name)
    # the dilated layers, in order, have the filters and dilations the plan says
    conv = [layer for layer in model.layers if hasattr(layer, "dilation_rate") and layer.name != "output"]
    assert [(layer.filters, layer.dilation_rate[0]) for layer in conv] == layer_plan(PRESETS[name])
    # 'valid' padding: RF + N - 1 inputs give N outputs
    assert model.compute_output_shape((2, receptive_field(name) + 9, 1)) == (2, 10, 1)


def test_receptive_field_and_parameters_by_hand():
    # two blocks of 12 layers at dilations 1..2048: RF = 1 + 2 * (2**12 - 1)
    assert receptive_field("pianonet_mini") == 1 + 2 * (2**12 - 1)
    # micro_1: blocks of 13, 11, 8 and 4 layers
    assert [len(b) for b in PRESETS["micro_1"]] == [13, 11, 8, 4] and len(layer_plan("micro_1")) == 36
    # a 2-tap conv from c_in to c_out channels has 2 * c_in * c_out weights and c_out biases; 1x1 output
    assert count_params([[3, 2]]) == (2 * 1 * 3 + 3) + (2 * 3 * 5 + 5) + (5 + 1)
    # dilation restarts at 1 in every block; filters accumulate across blocks
    plan = layer_plan([[4, 4, 2], [2, 2]])
    assert plan == [(4, 1), (8, 2), (10, 4), (12, 1), (14, 2)]
    assert receptive_field([[4, 4, 2], [2, 2]]) == 1 + (1 + 2 + 4) + (1 + 2)


def test_bad_increments_are_refused():
    for bad in ([], [[]], [[0, 2]], [[2, -1]], [[2.5]]):
        with pytest.raises(ValueError):
            layer_plan(bad)
    with pytest.raises(ValueError, match="unknown model preset 'nope'"):
        layer_plan("nope")


def _expected_moved(k, length, rf):
    """Outputs j see inputs j .. j + RF - 1: input k moves exactly j in [k - RF + 1, k]."""
    n_out = length - rf + 1
    j = np.arange(n_out)
    return (j >= k - rf + 1) & (j <= k)


@pytest.mark.parametrize("name", ["tiny", "two_blocks_4_3"])
def test_impulse_response_matches_the_receptive_field_formula(name):
    model = build_model(name, seed=3)
    # random non-zero biases so no unit sits exactly at ELU's kink
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    rf = receptive_field(name)
    length = rf + 60
    for k in (0, 5, rf - 1, rf, rf + 17, length - 1):
        moved = impulse_response(model, length, k)
        expected = _expected_moved(k, length, rf)
        np.testing.assert_array_equal(moved, expected, err_msg=f"input {k}")
        # causality: the output predicting state t (output j predicts t = j + RF) never moves for t <= k
        j = np.arange(length - rf + 1)
        assert not moved[j + rf <= k].any()


@pytest.mark.parametrize("name", ["pianonet_mini", "micro_1"])
def test_wiring_of_the_deep_presets_matches_the_formula(name):
    """Deep nets: with random weights a single-path contribution can round away in float32, so
    measure the wiring with positive averaging weights, zero biases, on the last hidden layer."""
    import keras

    model = build_model(name, seed=0)
    body = keras.Model(model.input, model.layers[-2].output)
    for layer in body.layers[1:]:
        kernel, bias = layer.get_weights()
        layer.set_weights([np.full_like(kernel, 0.5 / kernel.shape[1]), np.zeros_like(bias)])
    rf = receptive_field(name)
    length = rf + 50
    ks = (0, 30, rf - 1, rf + 49)
    x = np.zeros((len(ks), length, 1), "float32")
    x[np.arange(len(ks)), ks, 0] = 1.0  # one impulse per batch row
    h = np.asarray(body(x))
    for row, k in enumerate(ks):
        moved = (h[row] != 0).any(axis=1)
        np.testing.assert_array_equal(moved, _expected_moved(k, length, rf), err_msg=f"input {k}")


def test_causality_on_random_inputs():
    model = build_model("tiny", seed=1)
    rf = receptive_field("tiny")
    rng = np.random.default_rng(1)
    x = (rng.random((1, rf + 200, 1)) < 0.1).astype("float32")
    y0 = np.asarray(model(x))[0, :, 0]
    for k in (0, 40, rf + 50, rf + 199):
        x1 = x.copy()
        x1[0, k, 0] = 1 - x1[0, k, 0]
        y1 = np.asarray(model(x1))[0, :, 0]
        changed = np.abs(y1 - y0) > 0
        expected = _expected_moved(k, x.shape[1], rf)
        assert not changed[~expected].any(), f"flipping input {k} moved outputs outside its receptive field"
        assert changed[expected].mean() > 0.9


def test_output_bias_is_calibrated():
    rate = 0.04
    model = build_model("tiny", output_bias=logit(rate), seed=0)
    # the bias is stored in float32 (spacing 2.4e-7 near -3.2); sigmoid's float32 result to a few ulps
    assert model.get_layer("output").get_weights()[1][0] == pytest.approx(np.log(rate / (1 - rate)), abs=1e-6)
    # silence in, every unit at ELU(0) = 0: the output is sigmoid(bias) = the base rate
    p = np.asarray(model(np.zeros((1, receptive_field("tiny") + 10, 1), "float32")))
    np.testing.assert_allclose(p, rate, rtol=1e-5)
    assert logit(0.5) == 0.0
    assert -3.3 < logit(0.04) < -3.1
    with pytest.raises(ValueError):
        logit(0.0)


def test_keras_kernel_tap_0_multiplies_the_older_sample():
    import keras

    model = build_model([[1, 0]], seed=0)  # layer 0 (dilation 1), layer 1 (dilation 2)
    layer = model.get_layer("block0_layer1")
    sub = keras.Model(model.input, layer.output)
    w, b = model.get_layer("block0_layer0").get_weights()
    model.get_layer("block0_layer0").set_weights([np.array([[[1.0]], [[0.0]]], "float32"), b * 0])
    layer.set_weights([np.array([[[1.0]], [[0.0]]], "float32"), np.zeros(1, "float32")])
    x = np.arange(1, 11, dtype="float32")[None, :, None]  # positive: ELU is the identity
    y = np.asarray(sub(x))[0, :, 0]
    # tap 0 takes the older sample at both layers: y[t] = x[t], not x[t + 1 + 2]
    np.testing.assert_allclose(y, x[0, :len(y), 0])
    layer.set_weights([np.array([[[0.0]], [[1.0]]], "float32"), np.zeros(1, "float32")])
    y = np.asarray(sub(x))[0, :, 0]
    np.testing.assert_allclose(y, x[0, 2:2 + len(y), 0])  # tap 1 is the newer one, d = 2 later


def test_seed_makes_weights_reproducible():
    a = build_model("tiny", seed=7).get_weights()
    b = build_model("tiny", seed=7).get_weights()
    c = build_model("tiny", seed=8).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


_JAX_SCRIPT = textwrap.dedent("""
    import os, tempfile
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from pianolab.model import build_model, receptive_field, count_params
    from pianolab.config import RunConfig
    from pianolab.runs import load_model
    from pianolab.train import train
    from pianolab.data import Split, Dataset
    from pianolab.encoding import DEFAULT_ENCODING

    m = build_model("tiny", output_bias=-3.0, seed=0)
    assert m.count_params() == count_params("tiny")
    rng = np.random.default_rng(0)
    def split(name, n):
        seq = (rng.random(n * 72 * 40) < 0.05).astype(np.uint8)
        pieces = [(f"{name}{i}", i * 72 * 40, (i + 1) * 72 * 40) for i in range(n)]
        return Split(name, seq, pieces, DEFAULT_ENCODING)
    ds = Dataset(None, split("train", 4), split("val", 2), DEFAULT_ENCODING, {})
    cfg = RunConfig(model={"preset": "tiny"}, training={"n_targets": 256, "batch_start": 2, "batch_end": 2,
                    "steps": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1, "lr": 1e-3},
                    validation={"n_windows": 2})
    with tempfile.TemporaryDirectory() as d:
        h = train(d, cfg, steps=2, dataset=ds, progress=False)
        h = train(d, None, steps=4, dataset=ds, progress=False)   # resume under JAX
        assert h.final_step == 4, h.rows
        assert np.isfinite(h.train_loss[-1])
        m = load_model(d)
        assert np.isfinite(m.get_weights()[0]).all()
    print("JAX_OK", keras.backend.backend())
""")


def test_jax_backend_builds_and_trains():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed in this environment (pip install jax to run the model under "
                    "KERAS_BACKEND=jax); the code uses only keras, so it is backend-agnostic")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "JAX_OK jax" in res.stdout
