"""Sampling music from a trained model: the naive loop, Fast-WaveNet, the controls (chapter 05_fast_wavenet).

A model gives ``p(next key state = 1 | the last RF key states)``; music is drawn one key state at a
time. :func:`naive_sample` runs the whole model over the last ``RF`` states for every new state (the
reference); :class:`FastSampler` is Fast-WaveNet (Paine et al. 2016): a layer with dilation ``d``
keeps a queue of its last ``d`` inputs, so a new state costs one kernel-2 step per layer,
``y[t] = act(x[t - d] @ W[0] + x[t] @ W[1] + b)``, compiled with numba in ``pianolab._kernel``.

Controls, the same in both: ``random_seed`` (stream ``k`` draws from ``default_rng([random_seed,
k])``: same settings, same performance, down to the MIDI bytes); ``temperature`` (divides the
logit); ``edge_aversion``, PianoNet's rule: a key at distance ``i < len(thresholds)`` from either
end of the key window is forced off unless its probability (after temperature) is at least
``thresholds[i]`` (``True``: :data:`EDGE_THRESHOLDS`, ``False``/``None``: off, or a sequence); the
seed, zero-padded on the left to whole time steps covering the receptive field.
"""

import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
from . import _io, _kernel
from ._io import check_roll
from .encoding import DEFAULT_ENCODING, EDGE_THRESHOLDS, midi_to_roll
from .errors import ConfigError
from .model import HIDDEN_ACTIVATIONS, model_receptive_field, rounding_bound

_CHUNK = 48  # time steps sampled between two progress-bar updates


class ConvLayer(NamedTuple):
    """One dilated layer, ``y[t] = act(x[t - d] @ kernel[0] + x[t] @ kernel[1] + bias)``: ``kernel`` float32
    ``[2, c_in, c_out]``, ``bias`` ``[c_out]``, ``dilation``, ``activation`` (chapter 05_fast_wavenet)."""

    kernel: np.ndarray
    bias: np.ndarray
    dilation: int
    activation: str


def read_layers(model):
    """A pianolab Keras model -> ``(layers, w_out, b_out)``: its :class:`ConvLayer` list, the output
    weights (float32 ``[c_last]``) and bias (chapter 05_fast_wavenet).

    Anything but :func:`~pianolab.model.build_model`'s layout (a chain of kernel-2 ``Conv1D`` layers,
    dilation ``2**i`` from 1 in each block, then a 1x1 sigmoid) raises ``ValueError`` naming the layer.
    """
    import keras
    layers = [lay for lay in model.layers if not isinstance(lay, keras.layers.InputLayer)]
    convs, c_in = [], 1
    for i, lay in enumerate(layers):
        last, where = i == len(layers) - 1, f"layer {i + 1} ({lay.name!r}, {type(lay).__name__})"
        want = "the 1x1 Conv1D output layer" if last else "a dilated Conv1D layer with kernel size 2"
        if type(lay) is not keras.layers.Conv1D:
            raise ValueError(f"{where}: expected {want}, found {type(lay).__name__}")
        act, d = getattr(lay.activation, "__name__", str(lay.activation)), int(lay.dilation_rate[0])
        prev = convs[-1].dilation if convs else 0
        found = dict(kernel_size=tuple(lay.kernel_size), strides=tuple(lay.strides), padding=lay.padding,
                     groups=lay.groups, data_format=lay.data_format, use_bias=lay.use_bias, activation=act,
                     filters=lay.filters, dilation=d)
        allowed = dict(kernel_size=[(2,)], strides=[(1,)], padding=["valid"], groups=[1], use_bias=[True],
                       data_format=["channels_last"], activation=HIDDEN_ACTIVATIONS,
                       dilation=[1, 2 * prev] if prev else [1])
        if last:
            allowed.update(kernel_size=[(1,)], activation=["sigmoid"], filters=[1], dilation=[1])
        problems = [f"{k} {found[k]!r} (expected {' or '.join(map(repr, v))})"
                    for k, v in allowed.items() if found[k] not in v]
        if problems:
            raise ValueError(f"{where} is not {want}: " + "; ".join(problems))
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w), np.float32) for w in (lay.kernel, lay.bias))
        if kernel.shape[1] != c_in:
            raise ValueError(f"{where} takes {kernel.shape[1]} input channels but gets {c_in}: a pianolab "
                             "model is one chain of layers on one input channel")
        c_in = kernel.shape[2]
        if not last:
            convs.append(ConvLayer(kernel, bias, d, act))
    if not convs:
        raise ValueError(f"model {model.name!r} has {len(layers)} layer(s); a pianolab model has dilated "
                         "Conv1D layers, then a 1x1 Conv1D output layer")
    return convs, kernel[0, :, 0].copy(), float(bias[0])


def _edge_thresholds(edge_aversion, n_keys):
    thr = EDGE_THRESHOLDS if edge_aversion is True else () if edge_aversion is False or edge_aversion is None else edge_aversion
    try:
        thr = np.asarray(thr, np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"edge_aversion must be True, False or a sequence of thresholds, got {edge_aversion!r}") from None
    if not ((0 <= thr) & (thr <= 1)).all():
        raise ValueError(f"edge-aversion thresholds must lie in [0, 1], got {thr.tolist()}")
    return thr[: (n_keys + 1) // 2]


def _positive(value, name):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def seed_history(seed, receptive_field, n_keys=DEFAULT_ENCODING.n_keys):
    """A seed roll ``[T, n_keys]`` (or None: silence) -> flat uint8 history, zero-padded on the left
    to whole time steps and at least ``receptive_field`` states (chapter 05_fast_wavenet)."""
    roll = np.zeros((0, n_keys), np.uint8) if seed is None else check_roll(seed, n_keys)
    pad = max(0, -(-int(receptive_field) // n_keys) - roll.shape[0])
    return np.concatenate([np.zeros((pad, n_keys), np.uint8), roll.astype(np.uint8)]).reshape(-1)


def _seed_rolls(seed, streams):
    """One seed for every stream, or one per stream (a list, or an array [streams, T, n_keys])."""
    if int(streams) < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if isinstance(seed, (list, tuple)) or (isinstance(seed, np.ndarray) and seed.ndim == 3):
        if len(seed) != streams:
            raise ValueError(f"got {len(seed)} seeds for {streams} streams")
        return list(seed)
    return [seed] * int(streams)


def _load_seed(seed, encoding, seed_seconds=None):
    """None / 'silence', a roll, a PrettyMIDI, a MIDI path or 'corpus:NAME' -> a roll or None."""
    import pretty_midi
    if seed is None or (isinstance(seed, str) and seed.strip().lower() in ("", "silence", "none")):
        return None
    if isinstance(seed, str) and seed.startswith("corpus:"):
        seed = _corpus_piece(seed[len("corpus:"):].strip())
    elif isinstance(seed, (str, os.PathLike)) and not Path(seed).expanduser().is_file():
        raise ConfigError("seed", f"{str(seed)!r} is neither 'silence', 'corpus:NAME' nor a MIDI file")
    elif not isinstance(seed, (str, os.PathLike, np.ndarray, pretty_midi.PrettyMIDI)):
        raise ConfigError("seed", "expected None, 'silence', a roll, a PrettyMIDI, a MIDI path or "
                                  f"'corpus:NAME', got {type(seed).__name__}")
    roll = seed if isinstance(seed, np.ndarray) else midi_to_roll(
        Path(seed).expanduser() if isinstance(seed, (str, os.PathLike)) else seed, encoding)
    if seed_seconds is not None:
        roll = roll[: round(_positive(seed_seconds, "seed_seconds") * encoding.steps_per_second)]
    return roll


def _corpus_piece(name):
    from .corpus import default_corpus, midi_files, piece_name
    if not name:
        raise ConfigError("seed", "'corpus:' needs the name of a piece, e.g. 'corpus:keyboard/bach_bwv846'")
    folder = default_corpus(progress=False)
    files = {piece_name(f, folder): f for f in midi_files(folder)}
    exact = [f for key, f in files.items() if name in (key, f.stem, f.name)]
    near = exact or [f for key, f in files.items() if name.lower() in key.lower()]
    if len(near) == 1:
        return near[0]
    if not near:
        raise ConfigError("seed", f"no piece of the default corpus is called {name!r} "
                                  f"(e.g. {', '.join(list(files)[:3])})")
    raise ConfigError("seed", f"{len(near)} corpus pieces match {name!r} (e.g. "
                              f"{', '.join(piece_name(f, folder) for f in near[:4])}); give the full name")


def _controls(p, key, inv_temp, thr, n_keys):
    """The probability a state is drawn with: temperature, then edge aversion (as in the kernel)."""
    p = np.asarray(p, np.float64)
    if inv_temp != 1:
        with np.errstate(divide="ignore"):
            p = 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p)) * inv_temp))
    dist = min(key, n_keys - 1 - key)
    return np.where(p < thr[dist], 0.0, p) if dist < thr.size else p


def naive_sample(model, seed_roll=None, n_steps=48, *, streams=1, temperature=1.0, edge_aversion=True,
                 random_seed=0, n_keys=DEFAULT_ENCODING.n_keys):
    """``n_steps`` time steps the slow way, the whole model over the last RF states of every stream for
    every key state: uint8 ``[streams, n_steps, n_keys]``, the music :meth:`FastSampler.sample` plays
    with the same seeds and settings (chapter 05_fast_wavenet)."""
    rf = model_receptive_field(model)
    inv_temp, thr = 1 / _positive(temperature, "temperature"), _edge_thresholds(edge_aversion, n_keys)
    seeds = _seed_rolls(seed_roll, streams)
    rngs = [np.random.default_rng([int(random_seed), k]) for k in range(len(seeds))]
    n = int(n_steps) * n_keys
    buf = np.zeros((len(seeds), rf + n), np.float32)
    buf[:, :rf] = [seed_history(s, rf, n_keys)[-rf:] for s in seeds]
    for i in range(n):
        p = np.asarray(model(buf[:, i:i + rf, None], training=False))[:, -1, 0]
        q = _controls(p, i % n_keys, inv_temp, thr, n_keys)
        buf[:, rf + i] = [r.random() < q_k for r, q_k in zip(rngs, q)]
    return buf[:, rf:].astype(np.uint8).reshape(len(seeds), int(n_steps), n_keys)


class FastSampler:
    """Fast-WaveNet sampling from a pianolab model (chapter 05_fast_wavenet): the weights read with
    :func:`read_layers` (and, with ``verify``, checked once against the model's forward pass);
    :meth:`probabilities` of every state of a history (teacher forcing); :meth:`sample` draws many
    streams together. ``backend``: ``"numba"`` (the compiled kernel) or ``"numpy"`` (the same steps)."""

    def __init__(self, model, *, n_keys=DEFAULT_ENCODING.n_keys, backend="numba", verify=True):
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        self.n_keys, self.backend = int(n_keys), backend
        self.layers, self.w_out, self.b_out = read_layers(model)
        self.receptive_field = model_receptive_field(model)
        self._net = _kernel.pack(self.layers, self.w_out, self.b_out, pad=8 if backend == "numba" else 1)
        self._silence = _kernel.silence_queues(self._net)
        if verify:
            rf = self.receptive_field
            hist = (np.random.default_rng(12345).random((1, rf + 2 * self.n_keys + 3)) < 0.2).astype(np.uint8)
            start = hist.shape[1] - self.n_keys - 2
            ref = model(np.pad(hist, ((0, 0), (rf, 0)))[:, start:, None].astype(np.float32), training=False)
            err = np.max(np.abs(self.probabilities(hist, start) - np.asarray(ref)[:, :, 0]))
            if not err <= rounding_bound(model):  # float32 sums in another order: float32's bound
                raise ValueError(f"the fast sampler disagrees with model {model.name!r} by {err:.3g}: its "
                                 "layers are not one chain of dilated Conv1D layers as pianolab builds them")

    def _run(self, Q, xlast, t0, n, forced=None, u=None, inv_temp=1.0, thr=()):
        """``n`` fast steps after position ``t0`` (see ``pianolab._kernel.run``) -> (probs, states)."""
        S = Q.shape[0]
        probs, states = np.zeros((S, n), np.float32), np.zeros((S, n), np.uint8)
        forced = np.zeros((S, 0), np.uint8) if forced is None else np.ascontiguousarray(forced, np.uint8)
        run = _kernel.run if self.backend == "numba" else _kernel.run_numpy
        run(self._net, Q, xlast, int(t0), int(n), forced, np.zeros((S, 0)) if u is None else u, self.n_keys,
            np.float32(inv_temp), np.asarray(thr, np.float32), probs, states)
        return probs, states

    def _start(self, hist, start):
        """Queues and newest state ``(Q, xlast, t0 = start - 1)`` to predict position ``start`` of
        ``hist [S, >= start]``: silence's activations, then forced fast steps from the first sounding
        state among the last ``RF`` (silence changes nothing; older states no longer reach the queues)."""
        S = hist.shape[0]
        Q, xlast = np.tile(self._silence, (S, 1)), np.zeros(S, np.float32)
        first = max(0, start - self.receptive_field)
        sounding = np.flatnonzero(hist[:, first:start].any(axis=0))
        if sounding.size:
            f = first + int(sounding[0])
            self._run(Q, xlast, f - 1, start - f, forced=hist[:, f:start])
        return Q, xlast, start - 1

    def probabilities(self, history, start=0):
        """The model's probability of each state of ``history`` (flat 0/1 ``[n]`` or a batch ``[S, n]``)
        from ``start`` on, and of the next one: float32 ``[S, n - start + 1]`` (``[n - start + 1]`` for
        one history), equal to ``model(RF zeros + history)[start:]``."""
        hist = np.asarray(history)
        single, hist = hist.ndim == 1, np.atleast_2d(hist).astype(np.uint8)
        n, start = hist.shape[1], int(start)
        if not 0 <= start <= n:
            raise ValueError(f"start must lie in 0..{n}, got {start}")
        Q, xlast, t0 = self._start(hist, start)
        forced = np.pad(hist[:, start:], ((0, 0), (0, 1)))
        probs = self._run(Q, xlast, t0, n - start + 1, forced=forced)[0]
        return probs[0] if single else probs

    def start(self, seed=None, streams=1, random_seed=0):
        """The seed pass of :meth:`sample` (``benchmarks/generation.py`` times it apart): where the
        streams stand, their queues, newest state, its position and random generators."""
        hist = [seed_history(s, self.receptive_field, self.n_keys) for s in _seed_rolls(seed, streams)]
        longest = max(h.size for h in hist)
        Q, xlast, t0 = self._start(np.stack([np.pad(h, (longest - h.size, 0)) for h in hist]), longest)
        rngs = [np.random.default_rng([int(random_seed), k]) for k in range(len(hist))]
        return SimpleNamespace(queues=Q, newest=xlast, position=t0, rngs=rngs)

    def advance(self, state, n_steps, *, temperature=1.0, edge_aversion=True, progress=False,
                return_probabilities=False):
        """The next ``n_steps`` time steps of every stream of ``state`` (moved on in place): uint8
        ``[streams, n_steps, n_keys]``, and the model's probabilities of them with
        ``return_probabilities`` (the sampling half of :meth:`sample`)."""
        inv_temp, thr = 1 / _positive(temperature, "temperature"), _edge_thresholds(edge_aversion, self.n_keys)
        S, K, n_steps = len(state.rngs), self.n_keys, int(n_steps)
        rolls, probs = np.zeros((S, n_steps, K), np.uint8), np.zeros((S, n_steps, K), np.float32)
        bar = _io.progress(total=n_steps, unit="step", desc="generating", enabled=progress)
        for a in range(0, n_steps, _CHUNK):
            m = min(_CHUNK, n_steps - a)
            u = np.stack([r.random(m * K) for r in state.rngs])
            p, x = self._run(state.queues, state.newest, state.position, m * K, u=u, inv_temp=inv_temp, thr=thr)
            state.position += m * K
            rolls[:, a:a + m], probs[:, a:a + m] = x.reshape(S, m, K), p.reshape(S, m, K)
            bar.update(m)
        bar.close()
        return (rolls, probs) if return_probabilities else rolls

    def sample(self, seed=None, n_steps=48, *, streams=1, temperature=1.0, edge_aversion=True,
               random_seed=0, progress=False, return_probabilities=False):
        """``n_steps`` new time steps for each of ``streams`` performances: uint8 ``[streams, n_steps,
        n_keys]`` (and the model's probabilities with ``return_probabilities``). ``seed``: None (silence),
        one roll ``[T, n_keys]`` for all, or one per stream; the controls: the module docstring."""
        return self.advance(self.start(seed, streams, random_seed), n_steps, temperature=temperature,
                            edge_aversion=edge_aversion, progress=progress,
                            return_probabilities=return_probabilities)


def generate(model, seconds=30.0, seed=None, streams=1, temperature=1.0, edge_aversion=True,
             random_seed=0, progress=True, *, encoding=DEFAULT_ENCODING, seed_seconds=None, sampler=None):
    """``streams`` performances of ``seconds`` each with Fast-WaveNet: uint8 rolls ``[time steps,
    n_keys]``, the generated music only (chapter 04_training, appendix_a_command_line). ``seed``: None
    or ``"silence"``, a roll, a ``PrettyMIDI``, a MIDI path or ``"corpus:NAME"`` (that piece of the
    default corpus, or the one whose name contains it), cut to ``seed_seconds``; a bad one raises
    ``ConfigError`` (key ``seed``) or ``MidiError``. ``sampler``: a :class:`FastSampler` to reuse."""
    seconds = _positive(seconds, "seconds")
    sampler = sampler or FastSampler(model, n_keys=encoding.n_keys)
    if sampler.n_keys != encoding.n_keys:
        raise ValueError(f"the sampler has {sampler.n_keys} keys but the encoding {encoding.n_keys}")
    n_steps = max(1, round(seconds * encoding.steps_per_second))
    return list(sampler.sample(_load_seed(seed, encoding, seed_seconds), n_steps, streams=streams,
                               temperature=temperature, edge_aversion=edge_aversion, random_seed=random_seed,
                               progress=progress))
