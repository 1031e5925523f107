"""PianoNet-style stacks of dilated causal convolutions (chapters 02_chain_rule and 03_receptive_field).

A model is described by ``filter_increments``: one list per block, one number per layer, how many
filters the layer has *more than the layer before it* (counts accumulate across the net). Layer ``i``
of a block is a ``Conv1D(kernel_size=2, dilation_rate=2**i, padding='valid')`` with an ELU, ``i`` from
0 in every block; a final 1x1 convolution with a sigmoid gives ``p(key down)``. An input of length
``L`` gives ``L - RF + 1`` outputs: output ``j`` sees inputs ``j .. j + RF - 1`` (RF, the receptive
field) and predicts the key state after them. Keras' tap 0 multiplies the *older* input of a pair.
"""

import math

import numpy as np

#: Named model descriptions. ``pianonet_mini`` is PianoNet's smallest model; ``micro_1`` is shaped
#: like PianoNet's ``micro_1`` (blocks of 13/11/8/4 layers) for 72 keys; ``two_blocks_4_3`` is
#: a two-block net small enough to draw every connection (chapter 3); ``tiny`` is for tests and quick chapters.
PRESETS = {
    "pianonet_mini": [[4, 4] + [2] * 10, [4, 4] + [2] * 10],
    "micro_1": [[8, 4] + [2] * 11, [2] * 11, [2] * 8, [2] * 4],
    "two_blocks_4_3": [[2, 2, 2, 2], [2, 2, 2]],
    "tiny": [[4, 4, 2, 2, 2, 2], [2, 2, 2, 2, 2]],
}


def layer_plan(filter_increments):
    """``[(filters, dilation), ...]`` for every dilated layer of ``filter_increments`` (a list of blocks or
    a preset's name), in order; ``ValueError`` says what is wrong with them (chapter 03_receptive_field)."""
    if isinstance(filter_increments, str) and filter_increments not in PRESETS:
        raise ValueError(f"unknown model preset {filter_increments!r}; choose one of {sorted(PRESETS)}")
    blocks = [list(b) for b in (PRESETS[filter_increments] if isinstance(filter_increments, str) else filter_increments)]
    if not blocks or not all(blocks) or not all(isinstance(i, (int, np.integer)) and i >= 0 for b in blocks for i in b):
        raise ValueError(f"filter_increments needs one or more blocks, each a non-empty list of whole numbers "
                         f">= 0, got {filter_increments!r}")
    if blocks[0][0] < 1:
        raise ValueError("the first layer needs at least one filter")
    plan, filters = [], 0
    for block in blocks:
        for i, inc in enumerate(block):
            filters += int(inc)
            plan.append((filters, 2**i))
    return plan


def receptive_field(filter_increments, kernel_size=2):
    """Key states one output sees: ``1 + sum((kernel_size - 1) * dilation)`` (chapter 03_receptive_field)."""
    return 1 + sum((kernel_size - 1) * d for _, d in layer_plan(filter_increments))


def count_params(filter_increments, kernel_size=2, in_channels=1):
    """Trainable parameters of the model :func:`build_model` makes (chapter 03_receptive_field)."""
    total, cin = 0, in_channels
    for filters, _ in layer_plan(filter_increments):
        total += kernel_size * cin * filters + filters
        cin = filters
    return total + cin + 1


#: The activations a hidden layer may have (the fast sampler's kernel computes these).
HIDDEN_ACTIVATIONS = ("elu", "relu", "linear")


def binary_cross_entropy(y, p):
    """``-(y log p + (1 - y) log(1 - p))`` in nats, elementwise and in float64, ``p`` clipped to
    ``[1e-7, 1 - 1e-7]`` as Keras clips it (chapters 05_fast_wavenet, 06_shallow_vs_deep and 08_training_length)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - np.asarray(y, np.float64)) * np.log1p(-p))


def logit(p):
    """``log(p / (1 - p))``: the output bias that makes an untrained model predict rate ``p``
    (chapter 02_chain_rule)."""
    p = float(p)
    if not 0 < p < 1:
        raise ValueError(f"a base rate must lie strictly between 0 and 1, got {p}")
    return math.log(p / (1 - p))


def build_model(filter_increments, *, output_bias=0.0, activation="elu", name="pianolab",
                seed=None):
    """The Keras model of ``filter_increments`` (blocks, or a preset's name), input ``(batch, length, 1)``,
    output ``(batch, length - RF + 1, 1)`` probabilities (chapter 03_receptive_field). ``output_bias``:
    the final sigmoid's starting logit (``logit(key_down_rate)``: about -3.2 for 4% keys down);
    ``seed``: reproducible initial weights."""
    import keras
    plan = layer_plan(filter_increments)
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    x = inputs = keras.Input(shape=(None, 1), name="key_states")
    block = -1
    for filters, d in plan:
        block += d == 1  # layer i of a block has dilation 2**i
        x = keras.layers.Conv1D(filters, 2, dilation_rate=d, padding="valid", activation=activation,
                                name=f"block{block}_layer{d.bit_length() - 1}")(x)
    outputs = keras.layers.Conv1D(1, 1, activation="sigmoid", name="output",
                                  bias_initializer=keras.initializers.Constant(float(output_bias)))(x)
    return keras.Model(inputs, outputs, name=name)


def model_receptive_field(model):
    """Receptive field of a built pianolab model, read off its layers (chapter 03_receptive_field)."""
    rf = 1
    for layer in model.layers:
        if hasattr(layer, "dilation_rate") and hasattr(layer, "kernel_size"):
            rf += (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
    return rf


def impulse_response(model, length, position):
    """Which outputs move when input ``position`` of an all-zero input of ``length`` is set to 1.

    Returns the boolean mask over the ``length - RF + 1`` outputs (chapter 03_receptive_field).
    """
    base = np.zeros((1, length, 1), dtype="float32")
    hit = base.copy()
    hit[0, position, 0] = 1.0
    return np.abs(np.asarray(model(hit, training=False)) - np.asarray(model(base, training=False)))[0, :, 0] > 0


def in_float64(model):
    """A float64 copy of a Keras model, weights cast exactly, to prove two models equal where rounding
    (~1e-16 per operation) cannot hide a bug, on any CPU (chapter 07_pianonet_models)."""
    import keras
    copy = keras.models.clone_model(model, keras.Input((None, 1), dtype="float64"),
                                    lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float64"}))
    copy.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    return copy


def rounding_bound(model, dtype="float32"):
    """The tolerance of comparing two implementations of ``model`` in ``dtype`` (chapter 03_receptive_field):
    the worst case of a sum of ``n`` products, ``n`` times the unit roundoff, added over the layers, ``n``
    being each layer's fan-in (ELU and sigmoid slopes are at most 1; weights could amplify it, yet measured
    float32-vs-float64 gaps lie one to two orders of magnitude below)."""
    n = sum(int(np.prod(layer.kernel.shape[:2])) + 1 for layer in model.layers if hasattr(layer, "kernel"))
    return float(n * np.finfo(dtype).eps / 2)
