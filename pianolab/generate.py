"""Sampling music from a trained model: the naive loop and Fast-WaveNet (chapter 05_fast_wavenet).

A pianolab model gives ``p(next key state = 1 | the last RF key states)``. A performance is sampled
one key state at a time: draw the state, append it to the history, ask again.

* :func:`naive_sample` runs the whole model over the last ``RF`` states for every new state. It
  is the reference, and it costs ``O(RF)`` per state: the 36 layers of ``micro_1`` redo about
  20,000 positions of work to predict one key.
* :class:`FastSampler` is Fast-WaveNet (Paine et al. 2016): a dilated layer with dilation ``d``
  combines its input at ``t - d`` with its input at ``t``, so it keeps a queue (ring buffer) of its
  last ``d`` inputs. The queues are filled by one forward pass over the seed; afterwards every new
  key state costs one kernel-2 step per layer: ``y[t] = act(x[t - d] @ W[0] + x[t] @ W[1] + b)``
  (Keras' kernel tap 0 multiplies the *older* sample). Its probabilities equal the model's forward
  pass to float32 round-off (tests check 1e-5). The hot loop (all layers, the sampling, edge
  aversion and the queue updates) is one compiled numba function that advances many streams
  (performances) together; ``backend="numpy"`` runs the same algorithm as plain numpy, for
  teaching and as the benchmark's baseline.

Controls, shared by both samplers:

* ``random_seed``: stream ``k`` draws its uniforms from ``numpy.random.default_rng([random_seed,
  k])``; the same seed, model, seed music and settings give the same performance, down to the
  MIDI bytes.
* ``temperature``: the logit is divided by it before the sigmoid (``< 1``: bolder, fewer
  accidents; ``> 1``: more random).
* ``edge_aversion``: PianoNet's rule. A key at distance ``i < len(thresholds)`` from either end of
  the key window (``i = min(key, n_keys - 1 - key)``) is forced *off* unless its probability
  (after temperature) is at least ``thresholds[i]``; at or above the threshold it is sampled
  normally with that probability. Default :data:`EDGE_THRESHOLDS` from the edge inwards, so the
  outermost two keys never sound and the next one only when ``p >= 0.4``. ``True`` uses the
  default, ``False``/``None`` switches it off, a sequence gives your own thresholds.
* the seed: silence, a roll, a MIDI file or a corpus piece, zero-padded on the left to a whole
  number of time steps covering the receptive field; generation starts at the first key of the
  next time step.
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _io
from .encoding import DEFAULT_ENCODING, midi_to_roll, write_midi
from .errors import ConfigError, MidiError, PianolabError

try:  # numba is a dependency; without it FastSampler falls back to the numpy backend
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None

__all__ = [
    "EDGE_THRESHOLDS",
    "ACTIVATIONS",
    "ConvLayer",
    "read_layers",
    "edge_thresholds",
    "seed_history",
    "load_seed",
    "naive_probabilities",
    "naive_sample",
    "FastSampler",
    "SamplerState",
    "generate",
    "write_performances",
    "load_generation_model",
    "cli_generate",
]

#: PianoNet's edge-aversion thresholds, from the outermost key inwards (chapter 05_fast_wavenet).
EDGE_THRESHOLDS = (1.0, 1.0, 0.4, 0.05, 0.05, 0.05, 0.03, 0.03)

#: Hidden-layer activations the fast sampler knows, and their codes in the compiled kernel.
ACTIVATIONS = {"elu": 0, "relu": 1, "linear": 2}


# --------------------------------------------------------------------------------------------
# Reading a pianolab model


@dataclass
class ConvLayer:
    """One dilated layer as the samplers see it (chapter 05_fast_wavenet).

    ``y[t] = act(x[t - d] @ kernel[0] + x[t] @ kernel[1] + bias)``.
    """

    kernel: np.ndarray  # float32 [2, c_in, c_out]; tap 0 multiplies the OLDER sample x[t - d]
    bias: np.ndarray  # float32 [c_out]
    dilation: int
    activation: str
    name: str = ""


def _activation_name(layer):
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) or str(act)
    return name


def read_layers(model):
    """Read a pianolab Keras model into ``(layers, w_out, b_out)`` (chapter 05_fast_wavenet).

    Checks that the model has pianolab's layout: an input of one channel, then ``Conv1D`` layers
    with kernel size 2, stride 1, 'valid' padding and dilation ``2**i`` (``i`` starting again at 0
    in each block), each with a bias and an activation from :data:`ACTIVATIONS`, each feeding the
    next, then a 1x1 ``Conv1D`` with one filter and a sigmoid. Anything else raises ``ValueError``
    naming the layer and what was found. ``w_out`` is float32 ``[c_last]``, ``b_out`` a float.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) < 2:
        found = ", ".join(f"{type(lay).__name__} {lay.name!r}" for lay in layers) or "none"
        raise ValueError(
            f"model {model.name!r} has {len(layers)} layer(s) ({found}); a pianolab model has dilated "
            "Conv1D layers followed by a 1x1 Conv1D 'output' layer")
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if shape is not None and (len(shape) != 3 or shape[-1] != 1):
        raise ValueError(f"model {model.name!r} takes inputs of shape {shape}; pianolab models take "
                         "(batch, length, 1): one key state per position")
    convs, prev = [], None
    for idx, layer in enumerate(layers[:-1]):
        where = f"layer {idx + 1} ({layer.name!r}, {type(layer).__name__})"
        if not isinstance(layer, keras.layers.Conv1D) or isinstance(layer, keras.layers.Conv1DTranspose):
            raise ValueError(f"{where}: expected a Conv1D layer with kernel size 2, found "
                             f"{type(layer).__name__}")
        problems = []
        if tuple(layer.kernel_size) != (2,):
            problems.append(f"kernel_size {tuple(layer.kernel_size)} (expected (2,))")
        if tuple(layer.strides) != (1,):
            problems.append(f"strides {tuple(layer.strides)} (expected (1,))")
        if layer.padding != "valid":
            problems.append(f"padding {layer.padding!r} (expected 'valid')")
        if getattr(layer, "groups", 1) != 1:
            problems.append(f"groups {layer.groups} (expected 1)")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            problems.append(f"data_format {layer.data_format!r} (expected 'channels_last')")
        if not layer.use_bias:
            problems.append("no bias")
        d = int(layer.dilation_rate[0])
        expected = "1" if prev is None else f"1 or {2 * prev}"
        if not (d == 1 or (prev is not None and d == 2 * prev)):
            problems.append(f"dilation {d} (expected {expected}: 2**i, i starting at 0 in each block)")
        act = _activation_name(layer)
        if act not in ACTIVATIONS:
            problems.append(f"activation {act!r} (expected one of {sorted(ACTIVATIONS)})")
        if problems:
            raise ValueError(f"{where} is not a pianolab dilated layer: " + "; ".join(problems))
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w), dtype=np.float32)
                        for w in (layer.kernel, layer.bias))
        c_in = 1 if not convs else convs[-1].kernel.shape[2]
        if kernel.shape[:2] != (2, c_in):
            raise ValueError(f"{where}: kernel of shape {kernel.shape} does not take the {c_in} "
                             "channel(s) of the layer before it; the layers must form one chain")
        convs.append(ConvLayer(kernel, bias, d, act, layer.name))
        prev = d
    out = layers[-1]
    where = f"last layer ({out.name!r}, {type(out).__name__})"
    if not isinstance(out, keras.layers.Conv1D):
        raise ValueError(f"{where}: expected a 1x1 Conv1D with one filter and a sigmoid, found "
                         f"{type(out).__name__}")
    act = _activation_name(out)
    if tuple(out.kernel_size) != (1,) or out.filters != 1 or act != "sigmoid" or not out.use_bias:
        raise ValueError(f"{where}: expected a 1x1 Conv1D with one filter, a bias and a sigmoid, found "
                         f"kernel_size {tuple(out.kernel_size)}, {out.filters} filter(s), "
                         f"activation {act!r}, use_bias={out.use_bias}")
    w_out = np.asarray(keras.ops.convert_to_numpy(out.kernel), dtype=np.float32)
    if w_out.shape != (1, convs[-1].kernel.shape[2], 1):
        raise ValueError(f"{where}: kernel of shape {w_out.shape} does not take the "
                         f"{convs[-1].kernel.shape[2]} channels of the layer before it")
    b_out = float(np.asarray(keras.ops.convert_to_numpy(out.bias), dtype=np.float32)[0])
    return convs, w_out[0, :, 0].copy(), b_out


def edge_thresholds(edge_aversion, n_keys=DEFAULT_ENCODING.n_keys):
    """``edge_aversion`` (True / False / None / a sequence) -> float32 thresholds (chapter 05_fast_wavenet)."""
    if edge_aversion is True:
        thr = EDGE_THRESHOLDS
    elif edge_aversion is False or edge_aversion is None:
        thr = ()
    else:
        try:
            thr = tuple(float(v) for v in edge_aversion)
        except TypeError:
            raise ValueError(f"edge_aversion must be True, False or a sequence of thresholds, got "
                             f"{edge_aversion!r}") from None
        if any(not 0.0 <= v <= 1.0 or math.isnan(v) for v in thr):
            raise ValueError(f"edge-aversion thresholds must lie in [0, 1], got {thr}")
    return np.asarray(thr[: (n_keys + 1) // 2], dtype=np.float32)


def _controls_numpy(p, keys, temperature, thresholds, n_keys):
    """The sampling probability after temperature and edge aversion (reference for the naive loop)."""
    p = np.asarray(p, dtype=np.float64)
    if temperature != 1.0:
        with np.errstate(divide="ignore", over="ignore"):
            z = np.log(p) - np.log1p(-p)
            p = 1.0 / (1.0 + np.exp(-z / temperature))
    dist = np.minimum(keys, n_keys - 1 - keys)
    if len(thresholds):
        near = dist < len(thresholds)
        thr = np.asarray(thresholds, dtype=np.float64)[np.minimum(dist, len(thresholds) - 1)]
        p = np.where(near & (p < thr), 0.0, p)
    return p


# --------------------------------------------------------------------------------------------
# Seeds


def seed_history(seed, receptive_field, n_keys=DEFAULT_ENCODING.n_keys):
    """A seed roll (or None for silence) -> flat uint8 history, zero-padded on the left (chapter 05_fast_wavenet).

    The history holds whole time steps (its length is a multiple of ``n_keys``) and at least
    ``receptive_field`` states, so the first generated state is key 0 of a new time step and the
    model never sees past the start of the history.
    """
    steps_needed = -(-int(receptive_field) // n_keys)
    if seed is None:
        roll = np.zeros((0, n_keys), dtype=np.uint8)
    else:
        roll = np.asarray(seed)
        if roll.ndim != 2 or roll.shape[1] != n_keys:
            raise ValueError(f"a seed roll must have shape [time steps, {n_keys}], got {roll.shape}")
        if roll.size and not np.isin(roll, (0, 1)).all():
            raise ValueError("a seed roll holds only 0 and 1")
        roll = roll.astype(np.uint8)
    pad = max(0, steps_needed - roll.shape[0])
    if pad:
        roll = np.concatenate([np.zeros((pad, n_keys), np.uint8), roll])
    return np.ascontiguousarray(roll).reshape(-1)


def load_seed(seed, encoding=DEFAULT_ENCODING, seed_seconds=None):
    """Turn a seed description into a roll or None (chapter 05_fast_wavenet).

    ``seed`` may be None or ``"silence"``, a roll ``[T, n_keys]``, a ``pretty_midi.PrettyMIDI``,
    a path to a MIDI file, or ``"corpus:NAME"``: the piece of the default corpus whose file name
    is NAME (or the only one containing NAME). ``seed_seconds`` keeps only the first that many
    seconds. Bad seeds raise :class:`~pianolab.errors.ConfigError` (key ``seed``) or
    :class:`~pianolab.errors.MidiError`.
    """
    roll = None
    if seed is None or (isinstance(seed, str) and seed.strip().lower() in ("", "silence", "none")):
        return None
    if isinstance(seed, np.ndarray):
        roll = seed
    elif isinstance(seed, str) and seed.startswith("corpus:"):
        roll = midi_to_roll(_corpus_piece(seed[len("corpus:"):]), encoding)
    elif isinstance(seed, (str, os.PathLike)):
        path = Path(seed).expanduser()
        if not path.is_file():
            raise ConfigError("seed", f"{str(seed)!r} is neither 'silence', 'corpus:NAME' nor an "
                                      "existing MIDI file")
        roll = midi_to_roll(path, encoding)
    else:
        try:
            import pretty_midi

            if isinstance(seed, pretty_midi.PrettyMIDI):
                roll = midi_to_roll(seed, encoding)
        except ImportError:  # pragma: no cover
            pass
        if roll is None:
            raise ConfigError("seed", f"expected None, 'silence', a roll, a PrettyMIDI, a MIDI path or "
                                      f"'corpus:NAME', got {type(seed).__name__}")
    roll = np.asarray(roll)
    if seed_seconds is not None:
        roll = roll[: int(round(float(seed_seconds) * encoding.steps_per_second))]
    return roll


def _corpus_piece(name):
    from .data import default_corpus, midi_files, piece_name  # data is a lower stage than generate

    name = name.strip()
    if not name:
        raise ConfigError("seed", "'corpus:' needs the name of a piece, e.g. 'corpus:keyboard/bwv846'")
    folder = default_corpus(progress=False)
    files = {piece_name(f, folder): f for f in midi_files(folder)}
    for key, f in files.items():
        if name in (key, f.stem, f.name):
            return f
    near = [key for key in files if name.lower() in key.lower()]
    if len(near) == 1:
        return files[near[0]]
    if not near:
        raise ConfigError("seed", f"no piece of the default corpus is called {name!r} "
                                  f"(e.g. {', '.join(list(files)[:3])})")
    raise ConfigError("seed", f"{len(near)} corpus pieces match {name!r} (e.g. {', '.join(near[:4])}); "
                              "give the full name")


def _stream_rngs(random_seed, streams):
    return [np.random.default_rng([int(random_seed), k]) for k in range(streams)]


def _seed_rolls(seed, streams, n_keys):
    """One seed for all streams, or a list / [S, T, K] array of one seed per stream."""
    if isinstance(seed, (list, tuple)):
        if len(seed) != streams:
            raise ValueError(f"got {len(seed)} seeds for {streams} streams")
        return list(seed)
    if isinstance(seed, np.ndarray) and seed.ndim == 3:
        if seed.shape[0] != streams:
            raise ValueError(f"got {seed.shape[0]} seeds for {streams} streams")
        return list(seed)
    return [seed] * streams


# --------------------------------------------------------------------------------------------
# The naive sampler


def naive_probabilities(model, histories):
    """The model's probability for the state after each history, one forward pass over the last RF states.

    ``histories`` float/uint8 ``[S, n]`` with ``n >= RF`` (chapter 05_fast_wavenet).
    """
    from .model import model_receptive_field

    rf = model_receptive_field(model)
    h = np.asarray(histories, dtype=np.float32)
    window = h[:, -rf:, None]
    out = model(window, training=False)
    return np.asarray(out, dtype=np.float32)[:, -1, 0]


def naive_sample(model, seed_roll=None, n_steps=48, *, streams=1, temperature=1.0, edge_aversion=True,
                 random_seed=0, progress=False, encoding=DEFAULT_ENCODING):
    """Sample ``n_steps`` time steps the slow way: the whole model for every key state (chapter 05_fast_wavenet).

    For each new key state the model runs over the last RF states of every stream (one batched
    call), the controls are applied and the state is drawn. Same seeds and settings give the
    same music as :meth:`FastSampler.sample` (it is the reference). Returns uint8
    ``[streams, n_steps, n_keys]``.
    """
    from .model import model_receptive_field

    rf = model_receptive_field(model)
    n_keys = encoding.n_keys
    temperature = _check_temperature(temperature)
    thr = edge_thresholds(edge_aversion, n_keys)
    hist = np.stack([seed_history(s, rf, n_keys) for s in _seed_rolls(seed_roll, streams, n_keys)])
    rngs = _stream_rngs(random_seed, streams)
    n = int(n_steps) * n_keys
    buf = np.zeros((streams, rf + n), dtype=np.float32)
    buf[:, :rf] = hist[:, -rf:]
    out = np.zeros((streams, n), dtype=np.uint8)
    bar = _bar(progress, n_steps / encoding.steps_per_second, "naive")
    for i in range(n):
        p = naive_probabilities(model, buf[:, i:i + rf])
        key = i % n_keys
        q = _controls_numpy(p, np.full(streams, key), temperature, thr, n_keys)
        u = np.array([r.random() for r in rngs])
        x = (u < q).astype(np.uint8)
        out[:, i] = x
        buf[:, rf + i] = x
        if bar is not None and key == n_keys - 1:
            bar.update(1 / encoding.steps_per_second)
    if bar is not None:
        bar.close()
    return out.reshape(streams, int(n_steps), n_keys)


# --------------------------------------------------------------------------------------------
# The compiled Fast-WaveNet kernel


if numba is not None:
    _F1 = np.float32(1.0)

    @njit(cache=True, fastmath=True, inline="always")
    def _activate(h, n, act, ibuf, fbuf):
        """In place: elu (0), relu (1) or identity (2) on h[:n]; elu via a vectorisable expm1."""
        if act == 0:
            for j in range(n):
                v = min(h[j], np.float32(0.0))
                v = max(v, np.float32(-87.0))
                nf = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
                r = v - nf * np.float32(0.693359375)
                r = r - nf * np.float32(-2.12194440e-4)
                p = np.float32(1.0 / 5040.0)
                p = p * r + np.float32(1.0 / 720.0)
                p = p * r + np.float32(1.0 / 120.0)
                p = p * r + np.float32(1.0 / 24.0)
                p = p * r + np.float32(1.0 / 6.0)
                p = p * r + np.float32(0.5)
                fbuf[j] = r + r * r * p  # expm1(r), |r| <= ln(2)/2
                ibuf[j] = (np.int32(nf) + np.int32(127)) << 23  # the bits of 2**nf
            scale = ibuf.view(np.float32)
            for j in range(n):
                v = h[j]
                e = scale[j] * fbuf[j] + (scale[j] - np.float32(1.0))  # expm1(v) = 2^n (expm1(r) + 1) - 1
                h[j] = v if v > np.float32(0.0) else e
        elif act == 1:
            for j in range(n):
                h[j] = max(h[j], np.float32(0.0))

    @njit(cache=True, fastmath=True, inline="always")
    def _dense1(w, b, k2, cp, x, out):
        """out[:cp] = b + W x for one stream; W is [cp, k2] row-major, 4 outputs at a time."""
        for j in range(0, cp, 4):
            w0 = w[j * k2:(j + 1) * k2]
            w1 = w[(j + 1) * k2:(j + 2) * k2]
            w2 = w[(j + 2) * k2:(j + 3) * k2]
            w3 = w[(j + 3) * k2:(j + 4) * k2]
            a0 = b[j]
            a1 = b[j + 1]
            a2 = b[j + 2]
            a3 = b[j + 3]
            for k in range(k2):
                xk = x[k]
                a0 += xk * w0[k]
                a1 += xk * w1[k]
                a2 += xk * w2[k]
                a3 += xk * w3[k]
            out[j] = a0
            out[j + 1] = a1
            out[j + 2] = a2
            out[j + 3] = a3

    @njit(cache=True, fastmath=True, inline="always")
    def _dense4(w, b, k2, cp, xc, h, s0, s1):
        """Streams s0..s1-1 (a multiple of four), 4 streams x 4 outputs per register block.

        The loop over output rows is outside the loop over streams, so four weight rows are
        fetched once and reused from the L1 cache by every block of four streams.
        """
        for j in range(0, cp, 4):
            w0 = w[j * k2:(j + 1) * k2]
            w1 = w[(j + 1) * k2:(j + 2) * k2]
            w2 = w[(j + 2) * k2:(j + 3) * k2]
            w3 = w[(j + 3) * k2:(j + 4) * k2]
            for s in range(s0, s1, 4):
                x0 = xc[s]
                x1 = xc[s + 1]
                x2 = xc[s + 2]
                x3 = xc[s + 3]
                a00 = b[j]
                a01 = b[j + 1]
                a02 = b[j + 2]
                a03 = b[j + 3]
                a10 = a00
                a11 = a01
                a12 = a02
                a13 = a03
                a20 = a00
                a21 = a01
                a22 = a02
                a23 = a03
                a30 = a00
                a31 = a01
                a32 = a02
                a33 = a03
                for k in range(k2):
                    v0 = w0[k]
                    v1 = w1[k]
                    v2 = w2[k]
                    v3 = w3[k]
                    y = x0[k]
                    a00 += y * v0
                    a01 += y * v1
                    a02 += y * v2
                    a03 += y * v3
                    y = x1[k]
                    a10 += y * v0
                    a11 += y * v1
                    a12 += y * v2
                    a13 += y * v3
                    y = x2[k]
                    a20 += y * v0
                    a21 += y * v1
                    a22 += y * v2
                    a23 += y * v3
                    y = x3[k]
                    a30 += y * v0
                    a31 += y * v1
                    a32 += y * v2
                    a33 += y * v3
                o = h[s]
                o[j] = a00
                o[j + 1] = a01
                o[j + 2] = a02
                o[j + 3] = a03
                o = h[s + 1]
                o[j] = a10
                o[j + 1] = a11
                o[j + 2] = a12
                o[j + 3] = a13
                o = h[s + 2]
                o[j] = a20
                o[j + 1] = a21
                o[j + 2] = a22
                o[j + 3] = a23
                o = h[s + 3]
                o[j] = a30
                o[j + 1] = a31
                o[j + 2] = a32
                o[j + 3] = a33

    @njit(cache=True, fastmath=True)
    def _advance_group(W, woff, B, cin, cpad, dil, act, qoff, w_out, b_out, Q, xlast, t0, n,
                       forced, use_forced, u, n_keys, inv_temp, thr, probs, states, s_lo, s_hi, cmax):
        """Advance streams s_lo..s_hi-1 by n key states (see :func:`_advance`)."""
        S = s_hi - s_lo
        n_layers = cin.shape[0]
        n_thr = thr.shape[0]
        c_last = w_out.shape[0]
        xc = np.zeros((S, 2 * cmax), np.float32)
        h = np.zeros((S, cmax), np.float32)
        ibuf = np.zeros(cmax, np.int32)
        fbuf = np.zeros(cmax, np.float32)
        x = np.empty(S, np.float32)
        for s in range(S):
            x[s] = xlast[s_lo + s]
        c0 = cin[0]
        for i in range(n):
            t = t0 + i  # position of the newest state x
            for s in range(S):
                h[s, 0] = x[s]
                for k in range(1, c0):
                    h[s, k] = np.float32(0.0)  # padded input channels
            for l in range(n_layers):
                ci = cin[l]
                cp = cpad[l]
                d = dil[l]
                k2 = 2 * ci
                slot = t & (d - 1)  # holds the layer input of position t - d; gets position t's
                for s in range(S):
                    base = qoff[l] + slot * ci
                    q = Q[s_lo + s, base:base + ci]
                    xs = xc[s]
                    hs = h[s]
                    for k in range(ci):
                        xs[k] = q[k]
                        xs[ci + k] = hs[k]
                        q[k] = hs[k]
                w = W[woff[l]:woff[l + 1]]
                b = B[l]
                s4 = S - S % 4
                if s4 > 0:
                    _dense4(w, b, k2, cp, xc, h, 0, s4)
                for s in range(s4, S):
                    _dense1(w, b, k2, cp, xc[s], h[s])
                for s in range(S):
                    _activate(h[s], cp, act[l], ibuf, fbuf)
            key = (t + 1) % n_keys  # the key of the state being predicted
            dist = min(key, n_keys - 1 - key)
            for s in range(S):
                hs = h[s]
                z = b_out
                for k in range(c_last):
                    z += hs[k] * w_out[k]
                p = _F1 / (_F1 + np.exp(min(-z, np.float32(80.0))))  # no overflow to inf
                probs[s_lo + s, i] = p
                if use_forced:
                    xn = forced[s_lo + s, i]
                else:
                    q = p
                    if inv_temp != _F1:
                        q = _F1 / (_F1 + np.exp(min(-z * inv_temp, np.float32(80.0))))
                    if dist < n_thr and q < thr[dist]:
                        q = np.float32(0.0)
                    xn = np.uint8(1) if u[s_lo + s, i] < q else np.uint8(0)
                states[s_lo + s, i] = xn
                x[s] = np.float32(xn)
        for s in range(S):
            xlast[s_lo + s] = x[s]

    @njit(cache=True, parallel=True)
    def _advance(W, woff, B, cin, cpad, dil, act, qoff, w_out, b_out, Q, xlast, t0, n, forced,
                 use_forced, u, n_keys, inv_temp, thr, probs, states, bounds, cmax):
        """Advance all streams by n key states; groups of streams run on separate threads.

        ``xlast[s]`` is the newest state (position ``t0``) and ``Q[s]`` the queues that go with
        it; both are updated in place. Step i writes the model's probability of position
        ``t0 + 1 + i`` to ``probs[:, i]`` and that position's state (drawn, or ``forced[:, i]``)
        to ``states[:, i]``.
        """
        for g in prange(bounds.shape[0] - 1):
            _advance_group(W, woff, B, cin, cpad, dil, act, qoff, w_out, b_out, Q, xlast, t0, n,
                           forced, use_forced, u, n_keys, inv_temp, thr, probs, states,
                           bounds[g], bounds[g + 1], cmax)


# --------------------------------------------------------------------------------------------
# Fast-WaveNet


def _elu_np(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


_NP_ACT = {"elu": _elu_np, "relu": lambda x: np.maximum(x, 0), "linear": lambda x: x}


class FastSampler:
    """Fast-WaveNet sampling from a pianolab model: one small step per layer per key state (chapter 05_fast_wavenet).

    ``FastSampler(model)`` reads the weights (refusing another layout with ``ValueError``) and
    checks them once against the model's own forward pass (``verify=True``). Then:

    * :meth:`probabilities` -- the model's probability of every state of a history (teacher
      forcing), equal to ``model(zero-padded history)``;
    * :meth:`sample` -- new performances, many streams at once.

    ``backend="numba"`` (default) runs the compiled kernel; ``"numpy"`` the same algorithm as a
    plain per-layer numpy loop (slow; for teaching and as a baseline).
    """

    def __init__(self, model, *, n_keys=DEFAULT_ENCODING.n_keys, backend="numba", verify=True,
                 threads=None):
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        if backend == "numba" and numba is None:  # pragma: no cover
            backend = "numpy"
        self.backend = backend
        self.n_keys = int(n_keys)
        self.layers, self.w_out, self.b_out = read_layers(model)
        self.receptive_field = 1 + sum(layer.dilation for layer in self.layers)
        self.n_params = sum(lay.kernel.size + lay.bias.size for lay in self.layers) + self.w_out.size + 1
        self.threads = threads
        self._pack()
        self._consts = self._silence()
        if verify:
            self._verify(model)

    # -- weights laid out for the kernel ----------------------------------------------------
    def _pack(self):
        """Lay the weights out for the kernel: one contiguous ``[c_out, 2 c_in]`` matrix per layer.

        For the compiled kernel, channel counts are padded to multiples of 8 with zero weights
        (padded channels stay exactly 0), so every dot product runs over whole 16-float vectors.
        """
        L = len(self.layers)
        pad = 8 if self.backend == "numba" else 1
        cin = np.array([lay.kernel.shape[1] for lay in self.layers], np.int64)
        cout = np.array([lay.kernel.shape[2] for lay in self.layers], np.int64)
        self._cpad = -(-cout // pad) * pad
        self._cin = np.concatenate([[-(-1 // pad) * pad], self._cpad[:-1]]).astype(np.int64)
        self._dil = np.array([lay.dilation for lay in self.layers], np.int64)
        self._act = np.array([ACTIVATIONS[lay.activation] for lay in self.layers], np.int64)
        self._cmax = int(max(self._cpad.max(), self._cin.max(), 8))
        self._woff = np.zeros(L + 1, np.int64)
        self._woff[1:] = np.cumsum(2 * self._cin * self._cpad)
        self._W = np.zeros(self._woff[-1], np.float32)
        self._B = np.zeros((L, self._cmax), np.float32)
        self._np_layers = []
        for l, lay in enumerate(self.layers):
            ci, cp = self._cin[l], self._cpad[l]
            k = np.zeros((2, ci, cp), np.float32)
            k[:, :cin[l], :cout[l]] = lay.kernel
            m = np.concatenate([k[0], k[1]], axis=0).T  # row j: output j's weights on [x[t-d], x[t]]
            self._W[self._woff[l]:self._woff[l + 1]] = m.ravel()
            self._B[l, :cout[l]] = lay.bias
            self._np_layers.append((k[0], k[1], self._B[l, :cp].copy(), _NP_ACT[lay.activation], lay.dilation))
        self._w_out = np.zeros(self._cpad[-1], np.float32)
        self._w_out[:cout[-1]] = self.w_out
        self._qoff = np.zeros(L + 1, np.int64)
        self._qoff[1:] = np.cumsum(self._dil * self._cin)  # layer l's queue: dil[l] rows of cin[l]

    def _verify(self, model):
        rng = np.random.default_rng(12345)
        n = self.receptive_field + 2 * self.n_keys + 3
        hist = (rng.random((1, n)) < 0.2).astype(np.uint8)
        start = n - self.n_keys - 2
        fast = self.probabilities(hist, start=start)
        padded = np.concatenate([np.zeros((1, self.receptive_field), np.float32), hist], axis=1)
        ref = np.asarray(model(padded[:, start:, None], training=False), np.float32)[:, :, 0]
        err = float(np.max(np.abs(fast - ref)))
        if not err <= 1e-4:
            raise ValueError(f"the fast sampler disagrees with model {model.name!r} by {err:.3g}: its layers "
                             "are not one chain of dilated Conv1D layers as pianolab builds them")

    # -- queues ----------------------------------------------------------------------------
    def _silence(self):
        """Every layer's input when the whole history is silence: a constant vector per layer."""
        h = np.zeros(self._cin[0], np.float32)
        consts = []
        for k0, k1, b, act, _ in self._np_layers:
            consts.append(h)
            h = act(h @ k0 + h @ k1 + b).astype(np.float32)
        return consts

    def _start(self, hist, start):
        """Queues and newest state for predicting position ``start`` of histories ``hist`` [S, >= start].

        Positions before 0 are silence. The queues start as the activations of silence (constant
        over time), then the fast steps run over the history with its states forced: one forward
        pass over the seed, from its first sounding state (silence leaves the constants as they
        are) up to ``start - 1``. Only the last ``RF - 1`` states before the newest can reach the
        queues, so older ones are skipped. Returns ``(Q, xlast, t0)`` with ``t0 = start - 1``, the
        position of the newest state ``xlast``.
        """
        S = hist.shape[0]
        rf = self.receptive_field
        t0 = start - 1
        Q = np.empty((S, int(self._qoff[-1])), np.float32)
        for l, c in enumerate(self._consts):
            Q[:, self._qoff[l]:self._qoff[l + 1]] = np.tile(c, self.layers[l].dilation)
        xlast = np.zeros(S, np.float32)
        first = max(0, start - rf)  # oldest position that can still reach the queues at t0
        window = hist[:, first:start]
        sounding = np.flatnonzero(window.any(axis=0))
        if sounding.size:
            f = first + int(sounding[0])  # first sounding position: start the pass just before it
            forced = np.ascontiguousarray(hist[:, f:start], np.uint8)
            self._run(Q, xlast, f - 1, start - f, forced=forced)  # leaves xlast = hist[:, start - 1]
        return Q, xlast, t0

    def _run(self, Q, xlast, t0, n, forced=None, u=None, temperature=1.0, thresholds=()):
        S = Q.shape[0]
        probs = np.zeros((S, n), np.float32)
        states = np.zeros((S, n), np.uint8)
        use_forced = forced is not None
        if forced is None:
            forced = np.zeros((S, 0), np.uint8)
        if u is None:
            u = np.zeros((S, 0), np.float64)
        thr = np.asarray(thresholds, np.float32)
        inv_temp = np.float32(1.0 / float(temperature))
        if self.backend == "numba":
            args = (self._W, self._woff, self._B, self._cin, self._cpad, self._dil, self._act, self._qoff,
                    self._w_out, np.float32(self.b_out), Q, xlast, np.int64(t0), np.int64(n),
                    np.ascontiguousarray(forced, np.uint8), bool(use_forced), np.ascontiguousarray(u, np.float64),
                    np.int64(self.n_keys), inv_temp, thr, probs, states)
            bounds = self._bounds(S)
            if bounds.size == 2:  # one group: no thread pool
                _advance_group(*args, np.int64(0), np.int64(S), np.int64(self._cmax))
            else:
                with numba.parallel_chunksize(1):
                    _advance(*args, bounds, np.int64(self._cmax))
        else:
            self._run_numpy(Q, xlast, t0, n, forced, use_forced, u, inv_temp, thr, probs, states)
        return probs, states

    def _bounds(self, S):
        """Split S streams into groups of four (one 4 x 4 register block each) for the threads.

        The groups are handed to the threads one at a time (``parallel_chunksize(1)``), so a
        thread that the operating system slows down takes fewer groups.
        """
        threads = self.threads or (numba.get_num_threads() if numba is not None else 1)
        if threads <= 1 or S < 8:
            return np.array([0, S], np.int64)
        return np.append(np.arange(0, S, 4), S).astype(np.int64)

    def _run_numpy(self, Q, xlast, t0, n, forced, use_forced, u, inv_temp, thr, probs, states):
        """The same algorithm as the compiled kernel, one numpy call per layer per key state."""
        S = Q.shape[0]
        queues = [Q[:, self._qoff[l]:self._qoff[l + 1]].reshape(S, d, -1)
                  for l, (_, _, _, _, d) in enumerate(self._np_layers)]  # views: updates land in Q
        x = xlast.astype(np.float32).copy()
        for i in range(n):
            t = t0 + i
            h = np.zeros((S, self._cin[0]), np.float32)
            h[:, 0] = x
            for (k0, k1, b, act, d), q in zip(self._np_layers, queues):
                slot = t % d
                old = q[:, slot, :].copy()  # the layer's input d positions ago
                q[:, slot, :] = h  # replaced by today's, needed again in d steps
                h = act(old @ k0 + h @ k1 + b)
            z = h @ self._w_out + np.float32(self.b_out)
            p = 1.0 / (1.0 + np.exp(-z))
            probs[:, i] = p
            if use_forced:
                xn = forced[:, i]
            else:
                key = (t + 1) % self.n_keys
                dist = min(key, self.n_keys - 1 - key)
                q_ = 1.0 / (1.0 + np.exp(-z * inv_temp)) if inv_temp != 1 else p
                if dist < len(thr):
                    q_ = np.where(q_ < thr[dist], 0.0, q_)
                xn = (u[:, i] < q_).astype(np.uint8)
            states[:, i] = xn
            x = xn.astype(np.float32)
        xlast[:] = x

    # -- public API ------------------------------------------------------------------------
    def probabilities(self, history, start=0):
        """The model's probability of each state of ``history`` from ``start`` on, plus the next one.

        ``history`` is a flat key-state sequence ``[n]`` or a batch ``[S, n]`` (0/1). The queues
        are filled by one forward pass over ``history[:start]`` (zero-padded on the left), then
        the fast steps are teacher-forced through the rest. Returns float32 ``[S, n - start + 1]``
        (``[n - start + 1]`` for a 1-D history): entry ``i`` is ``p(history[start + i] = 1 |
        the RF states before it)``, equal to ``model(RF zeros + history)[start:]``
        (chapter 05_fast_wavenet).
        """
        hist = np.asarray(history)
        single = hist.ndim == 1
        hist = np.atleast_2d(hist).astype(np.uint8)
        n = hist.shape[1]
        start = int(start)
        if not 0 <= start <= n:
            raise ValueError(f"start must lie in 0..{n}, got {start}")
        Q, xlast, t0 = self._start(hist, start)
        forced = np.zeros((hist.shape[0], n - start + 1), np.uint8)
        forced[:, : n - start] = hist[:, start:]
        probs, _ = self._run(Q, xlast, t0, n - start + 1, forced=forced)
        return probs[0] if single else probs

    def start(self, seed=None, streams=1, random_seed=0):
        """Fill the queues from a seed; returns a :class:`SamplerState` to :meth:`advance` (chapter 05_fast_wavenet).

        ``seed``: None (silence), a roll ``[T, n_keys]`` shared by all streams, or one roll per
        stream (a list, or ``[streams, T, n_keys]``), zero-padded by :func:`seed_history`.
        Stream ``k`` draws its random numbers from ``default_rng([random_seed, k])``.
        """
        streams = int(streams)
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        K = self.n_keys
        hist = [seed_history(s, self.receptive_field, K) for s in _seed_rolls(seed, streams, K)]
        longest = max(h.size for h in hist)
        hist = np.stack([np.concatenate([np.zeros(longest - h.size, np.uint8), h]) for h in hist])
        Q, xlast, t0 = self._start(hist, hist.shape[1])
        return SamplerState(Q, xlast, t0, _stream_rngs(random_seed, streams))

    def advance(self, state, n_steps, *, temperature=1.0, edge_aversion=True, progress=False,
                steps_per_second=DEFAULT_ENCODING.steps_per_second, chunk_steps=None,
                return_probabilities=False):
        """Sample the next ``n_steps`` time steps of every stream of ``state`` (updated in place).

        Returns uint8 ``[streams, n_steps, n_keys]`` (and the model's raw probabilities of those
        states, float32, same shape, with ``return_probabilities``). The work is done in chunks
        of ``chunk_steps`` time steps (default: one second of music) between progress updates
        (chapter 05_fast_wavenet).
        """
        temperature = _check_temperature(temperature)
        thr = edge_thresholds(edge_aversion, self.n_keys)
        K = self.n_keys
        S = state.streams
        n_steps = int(n_steps)
        chunk = int(chunk_steps or max(1, int(round(steps_per_second))))
        out = np.zeros((S, n_steps * K), np.uint8)
        probs_all = np.zeros((S, n_steps * K), np.float32) if return_probabilities else None
        bar = _bar(progress, n_steps / steps_per_second, "fast")
        done = 0
        while done < n_steps:
            m = min(chunk, n_steps - done)
            u = np.stack([r.random(m * K) for r in state.rngs])
            probs, states = self._run(state.queues, state.newest, state.position, m * K, u=u,
                                      temperature=temperature, thresholds=thr)
            state.position += m * K
            out[:, done * K:(done + m) * K] = states
            if probs_all is not None:
                probs_all[:, done * K:(done + m) * K] = probs
            done += m
            if bar is not None:
                bar.update(m / steps_per_second)
        if bar is not None:
            bar.close()
        rolls = out.reshape(S, n_steps, K)
        if return_probabilities:
            return rolls, probs_all.reshape(S, n_steps, K)
        return rolls

    def sample(self, seed=None, n_steps=48, *, streams=1, temperature=1.0, edge_aversion=True,
               random_seed=0, progress=False, steps_per_second=DEFAULT_ENCODING.steps_per_second,
               chunk_steps=None, return_probabilities=False):
        """Sample ``n_steps`` new time steps for each of ``streams`` performances (chapter 05_fast_wavenet).

        :meth:`start` then :meth:`advance`; the controls are described in the module docstring.
        Returns uint8 ``[streams, n_steps, n_keys]`` (and the raw model probabilities with
        ``return_probabilities``).
        """
        temperature = _check_temperature(temperature)
        edge_thresholds(edge_aversion, self.n_keys)  # check before the seed pass
        state = self.start(seed, streams, random_seed)
        return self.advance(state, n_steps, temperature=temperature, edge_aversion=edge_aversion,
                            progress=progress, steps_per_second=steps_per_second, chunk_steps=chunk_steps,
                            return_probabilities=return_probabilities)


@dataclass
class SamplerState:
    """Where a batch of performances stands (chapter 05_fast_wavenet).

    The queues, the newest state, its position and one random generator per stream; made by
    :meth:`FastSampler.start`, moved on by :meth:`FastSampler.advance`.
    """

    queues: np.ndarray  # float32 [streams, queue floats]: every layer's ring buffer
    newest: np.ndarray  # float32 [streams]: the newest key state, at ``position``
    position: int  # position of the newest state in the (zero-padded) history
    rngs: list  # one numpy Generator per stream

    @property
    def streams(self):
        """How many performances advance together."""
        return self.queues.shape[0]


def _check_temperature(temperature):
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}") from None
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _bar(progress, total_seconds, what):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=round(total_seconds, 3), unit="s", desc=f"generating ({what})",
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of music [{elapsed}<{remaining}]")


# --------------------------------------------------------------------------------------------
# High-level API


def generate(model, seconds=30.0, seed=None, streams=1, temperature=1.0, edge_aversion=True,
             random_seed=0, progress=True, *, encoding=DEFAULT_ENCODING, seed_seconds=None,
             include_seed=False, sampler=None):
    """Generate ``streams`` performances of ``seconds`` each with Fast-WaveNet (chapter 05_fast_wavenet).

    ``seed``: None / ``"silence"``, a roll, a ``PrettyMIDI``, a MIDI path or ``"corpus:NAME"``
    (see :func:`load_seed`), cut to its first ``seed_seconds`` when given. Returns a list of
    uint8 rolls ``[time steps, n_keys]``, the generated music only (``include_seed`` puts the
    seed in front). Pass a :class:`FastSampler` as ``sampler`` to reuse one.
    """
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"seconds must be a number > 0, got {seconds!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
    sampler = sampler or FastSampler(model, n_keys=encoding.n_keys)
    if sampler.n_keys != encoding.n_keys:
        raise ValueError(f"the sampler has {sampler.n_keys} keys but the encoding {encoding.n_keys}")
    seed_roll = load_seed(seed, encoding, seed_seconds)
    n_steps = max(1, int(round(seconds * encoding.steps_per_second)))
    rolls = sampler.sample(seed_roll, n_steps, streams=streams, temperature=temperature,
                           edge_aversion=edge_aversion, random_seed=random_seed, progress=progress,
                           steps_per_second=encoding.steps_per_second)
    out = []
    for r in rolls:
        if include_seed and seed_roll is not None:
            r = np.concatenate([np.asarray(seed_roll, np.uint8), r])
        out.append(np.ascontiguousarray(r))
    return out


_atomic_write_text = _io.write_bytes


def write_performances(rolls, out_dir, *, stem="performance", encoding=DEFAULT_ENCODING, audio=True,
                       sample_rate=22050, settings=None):
    """Write each roll as ``STEM_KK.mid`` (and ``.wav``) in ``out_dir``, atomically (chapter 05_fast_wavenet).

    ``settings`` (a dict) is written next to them as ``STEM.json`` so a performance can be made
    again. Returns the list of written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, roll in enumerate(rolls):
        mid = write_midi(roll, out_dir / f"{stem}_{k:02d}.mid", encoding)
        paths.append(mid)
        if audio:
            from .audio import synthesize, write_wav  # audio is a stage above; import lazily

            wave = synthesize(roll, encoding, sample_rate)
            paths.append(write_wav(wave, out_dir / f"{stem}_{k:02d}.wav", sample_rate))
    if settings is not None:
        meta = out_dir / f"{stem}.json"
        _atomic_write_text(meta, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        paths.append(meta)
    return paths


def load_generation_model(spec):
    """A Keras model from a run directory, a ``.keras`` file or a shipped model name (chapter 05_fast_wavenet).

    Uses :func:`pianolab.train.load_model`; any failure becomes a
    :class:`~pianolab.errors.ConfigError` for ``MODEL`` (the CLI's positional argument).
    """
    from .train import load_model

    try:
        return load_model(Path(str(spec)).expanduser())
    except ConfigError as exc:
        raise ConfigError("MODEL", exc.reason) from exc
    except Exception as exc:  # a damaged or foreign .keras file
        raise ConfigError("MODEL", f"could not load {str(spec)!r}: {exc}") from exc


def cli_generate(args):
    """``python -m pianolab generate MODEL --seconds 30 --seed FILE --streams K --out DIR`` (chapter 05_fast_wavenet).

    Writes ``performance_KK.mid`` and ``.wav`` (unless ``--no-audio``) for each stream and the
    settings as ``performance.json``. Bad arguments raise :class:`~pianolab.errors.ConfigError`
    naming the flag.
    """
    seconds = getattr(args, "seconds", 30.0)
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ConfigError("--seconds", f"must be a number > 0, got {seconds!r}")
    if seconds > 3600:
        raise ConfigError("--seconds", f"at most 3600 seconds per performance, got {seconds}")
    streams = getattr(args, "streams", 1)
    if not isinstance(streams, int) or not 1 <= streams <= 1024:
        raise ConfigError("--streams", f"must be a whole number from 1 to 1024, got {streams!r}")
    temperature = getattr(args, "temperature", 1.0)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError("--temperature", f"must be a number > 0, got {temperature!r}")
    seed_seconds = getattr(args, "seed_seconds", None)
    if seed_seconds is not None and not (math.isfinite(seed_seconds) and seed_seconds > 0):
        raise ConfigError("--seed-seconds", f"must be a number > 0, got {seed_seconds!r}")
    random_seed = getattr(args, "random_seed", 0)
    if not isinstance(random_seed, int) or random_seed < 0:
        raise ConfigError("--random-seed", f"must be a whole number >= 0, got {random_seed!r}")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{str(out)!r} exists and is not a folder")
    from .train import encoding_of

    encoding = encoding_of(Path(str(args.model)).expanduser())
    try:
        seed_roll = load_seed(args.seed, encoding, seed_seconds)
    except MidiError as exc:
        raise ConfigError("--seed", str(exc)) from exc
    except ConfigError as exc:
        raise ConfigError("--seed", exc.reason) from exc
    model = load_generation_model(args.model)
    try:
        sampler = FastSampler(model, n_keys=encoding.n_keys)
    except ValueError as exc:
        if isinstance(exc, PianolabError):
            raise
        raise ConfigError("MODEL", str(exc)) from exc
    edge = not getattr(args, "no_edge_aversion", False)
    quiet = getattr(args, "quiet", False)
    rolls = generate(model, seconds=seconds, seed=seed_roll, streams=streams, temperature=temperature,
                     edge_aversion=edge, random_seed=random_seed, progress=not quiet, sampler=sampler,
                     encoding=encoding)
    settings = {"model": str(args.model), "seconds": seconds, "seed": str(args.seed),
                "seed_seconds": seed_seconds, "streams": streams, "temperature": temperature,
                "edge_aversion": list(EDGE_THRESHOLDS) if edge else None, "random_seed": random_seed,
                "receptive_field": sampler.receptive_field, "encoding": encoding.to_dict()}
    paths = write_performances(rolls, out, encoding=encoding, audio=not getattr(args, "no_audio", False),
                               settings=settings)
    if not quiet:
        for p in paths:
            print(p)
    return 0
