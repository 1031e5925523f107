"""The JSB Chorales benchmark in the Boulanger-Lewandowski split (chapter 08_benchmark_jsb).

The data: 382 Bach chorales split 229 / 76 / 77 into ``train`` / ``valid`` / ``test``; a piece is
a list of frames, one frame per quarter note, and a frame is the list of sounding MIDI pitches
(21..108). The repository ships it as ``data/benchmarks/jsb_chorales.npz`` (bit-packed rolls, see
the README there), the default of :func:`pianolab.settings.jsb_path`; a path argument or
``$PIANOLAB_JSB`` may name another copy: that .npz format, the JSON written from the original
pickle, or the original ``JSB Chorales.pickle`` read through :class:`RestrictedUnpickler`.

The encoding: a piece becomes a binary roll ``[frames, 88]`` (MIDI 21..108, the piano keyboard)
and then ONE flat sequence of key states, frame-major with keys ascending, exactly like the piano
corpus of the book (:data:`ENCODING` names it: 88 keys from MIDI 21, two frames per second, so a
quarter note lasts 0.5 s at 120 beats per minute when we listen to it).

The metric: negative log-likelihood in nats per frame. Frame ``t`` costs the sum over the 88 keys
of ``-log p(key state)``; the cost is averaged over frames. A pianolab model sees each piece
prefixed with a receptive field of silence, so it also predicts the first frame (from nothing).
:func:`evaluate` reports both conventions:

* ``nll`` -- the first frame of each piece is not scored (the benchmark's stated rule, and the
  convention of the published tables, e.g. the TCN code of Bai et al. 2018);
* ``nll_all_frames`` -- every frame is scored, the first one predicted from leading silence. This
  is how the baselines in the README of the data folder were computed: the per-key marginal model
  gives 11.06 and the per-key first-order Markov model 10.48 only under this convention (11.09 and
  10.49 with the first frame left out).

A model over the flat sequence predicts the keys of a frame one after another, each conditioned on
the keys below it in the same frame (like NADE), so it can model chords; models that predict the
88 keys of a frame independently (RNN, LSTM, TCN) cannot.
"""

import csv
import io
import json
import math
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _io
from .encoding import Encoding
from .errors import ConfigError, PianolabError
from .settings import jsb_path

#: Split names, in the order of the original pickle.
SPLITS = ("train", "valid", "test")
#: Lowest key (A0) and number of keys of the benchmark's frames.
LOWEST, N_KEYS = 21, 88
#: Naming of the benchmark's rolls: 88 keys from MIDI 21, one frame per quarter note played at
#: 120 beats per minute (two frames per second).
ENCODING = Encoding(steps_per_second=2.0, lowest=LOWEST, n_keys=N_KEYS)
#: Published test NLLs (nats per frame) as stated in the README next to the data.
PUBLISHED = {
    "per-key marginal": 11.06,
    "per-key first-order Markov": 10.48,
    "RNN": 8.91,
    "LSTM": 8.45,
    "GRU": 8.43,
    "TCN": 8.10,
    "RNN-NADE (Boulanger-Lewandowski et al. 2012)": 5.19,
}


class JSBError(PianolabError):
    """The JSB file is missing or does not have the benchmark's structure (chapter 08_benchmark_jsb).

    ``path`` is the file and ``key`` where in it the problem is (e.g. ``test[3][12]``).
    """

    def __init__(self, path, key, reason):
        self.path, self.key, self.reason = path, key, reason
        where = f"{path}" + (f" at {key}" if key else "")
        super().__init__(f"{where}: {reason}")


# ----------------------------------------------------------------------------------------------
# Reading


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data, never objects (chapter 08_benchmark_jsb).

    Unpickling runs code only through *globals*: a class or function named in the pickle
    (opcodes GLOBAL / STACK_GLOBAL, then called by REDUCE, NEWOBJ, INST, OBJ, BUILD) or a
    persistent id. Both hooks refuse here, so the only things a pickle can build are the ones
    with their own opcodes: dicts, lists, tuples, ints, floats, strings, bytes, booleans, None
    and sets. :func:`read_pickle` then walks the result and admits only dicts, lists, tuples and
    ints, plus the ``str`` split names that key the dict and floats that are whole numbers (a
    pickle written from float arrays stores pitch 60 as 60.0); everything else is refused.
    """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a JSB pickle holds only lists, tuples, "
            "dicts and ints"
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: a JSB pickle holds only plain data")


def read_pickle(path):
    """Read the original ``JSB Chorales.pickle`` safely (chapter 08_benchmark_jsb).

    Uses :class:`RestrictedUnpickler` (Python 2 strings are decoded as latin-1) and returns the
    checked ``{split: [piece, ...]}`` dict; see :func:`check_structure`.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JSBError(path, None, "no such file (set PIANOLAB_JSB or pass the path)") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise JSBError(path, None, f"not a plain-data pickle: {exc}") from None
    return check_structure(obj, path)


def _pitch(value, path, key):
    if isinstance(value, bool):
        raise JSBError(path, key, f"expected a MIDI pitch (int), got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise JSBError(path, key, f"expected a whole MIDI pitch, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise JSBError(path, key, f"expected a MIDI pitch (int), got {type(value).__name__}")
    if not LOWEST <= value < LOWEST + N_KEYS:
        raise JSBError(path, key, f"pitch {value} outside the 88 keys (MIDI 21..108)")
    return value


def check_structure(obj, path="<data>"):
    """Check ``{"train"|"valid"|"test": [piece]}`` with piece = [frame], frame = [pitch].

    Returns a clean copy with ``int`` pitches; raises :class:`JSBError` naming the path and the
    key (``split[piece][frame]``) of the first problem (chapter 08_benchmark_jsb).
    """
    if not isinstance(obj, dict):
        raise JSBError(path, None, f"expected a dict with keys {list(SPLITS)}, got {type(obj).__name__}")
    for k in obj:
        if not isinstance(k, str):
            raise JSBError(path, repr(k), "split names must be strings")
    missing = [s for s in SPLITS if s not in obj]
    if missing:
        raise JSBError(path, missing[0], f"missing split; expected keys {list(SPLITS)}, found {sorted(obj)}")
    out = {}
    for split in SPLITS:
        pieces = obj[split]
        if not isinstance(pieces, (list, tuple)) or not pieces:
            raise JSBError(path, split, "expected a non-empty list of pieces")
        clean = []
        for i, piece in enumerate(pieces):
            if not isinstance(piece, (list, tuple)) or not piece:
                raise JSBError(path, f"{split}[{i}]", "expected a non-empty list of frames")
            frames = []
            for t, frame in enumerate(piece):
                if not isinstance(frame, (list, tuple)):
                    raise JSBError(path, f"{split}[{i}][{t}]",
                                   f"expected a list of MIDI pitches, got {type(frame).__name__}")
                frames.append(sorted({_pitch(p, path, f"{split}[{i}][{t}]") for p in frame}))
            clean.append(frames)
        out[split] = clean
    return out


def read_npz(path):
    """``{split: [uint8 roll [frames, 88]]}`` from a bit-packed .npz, the format of
    ``data/benchmarks`` (chapter 08_benchmark_jsb)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise JSBError(path, None, "no such file (set PIANOLAB_JSB or pass the path)") from None
    except (OSError, ValueError) as exc:
        raise JSBError(path, None, f"not a numpy .npz: {exc}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise JSBError(path, None, "a single array, not an .npz archive")
    out = {}
    with z:
        for split in SPLITS:
            if f"{split}_frames" not in z or f"{split}_lengths" not in z:
                raise JSBError(path, split, f"expected arrays {split}_frames and {split}_lengths")
            bits, lengths = z[f"{split}_frames"], z[f"{split}_lengths"].astype(np.int64)
            if bits.dtype != np.uint8 or bits.shape[1:] != (N_KEYS // 8,) or \
                    lengths.ndim != 1 or (lengths < 1).any() or lengths.sum() != len(bits):
                raise JSBError(path, split, f"expected uint8 [frames, {N_KEYS // 8}] and piece lengths "
                                            ">= 1 summing to the frames")
            rolls = np.unpackbits(bits, axis=1, count=N_KEYS)
            out[split] = np.split(rolls, np.cumsum(lengths)[:-1])
    return out


def read_jsb(path=None):
    """The raw benchmark ``{split: [piece]}`` from the shipped .npz, JSON or the original pickle
    (chapter 08_benchmark_jsb).

    ``path`` defaults to ``$PIANOLAB_JSB`` and then ``data/benchmarks/jsb_chorales.npz`` (see
    :func:`pianolab.settings.jsb_path`). Files ending in ``.pickle`` / ``.pkl`` go through
    :func:`read_pickle`, ``.npz`` through :func:`read_npz`.
    """
    path = jsb_path(path)
    if path.suffix.lower() == ".npz":
        return {s: [roll_to_piece(r) for r in rolls] for s, rolls in read_npz(path).items()}
    if path.suffix.lower() in (".pickle", ".pkl"):
        return read_pickle(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JSBError(path, None, "no such file (set PIANOLAB_JSB or pass the path)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSBError(path, None, f"not valid JSON: {exc}") from None
    return check_structure(obj, path)


def piece_to_roll(piece):
    """Frames of MIDI pitches -> binary roll ``uint8 [frames, 88]`` (chapter 08_benchmark_jsb)."""
    roll = np.zeros((len(piece), N_KEYS), dtype=np.uint8)
    for t, frame in enumerate(piece):
        for p in frame:
            roll[t, int(p) - LOWEST] = 1
    return roll


def roll_to_piece(roll):
    """Binary roll ``[frames, 88]`` -> frames of sorted MIDI pitches (inverse of :func:`piece_to_roll`;
    chapter 08_benchmark_jsb)."""
    roll = np.asarray(roll)
    return [[int(k) + LOWEST for k in np.flatnonzero(row)] for row in roll]


@dataclass
class JSB:
    """The benchmark as rolls: ``train`` / ``valid`` / ``test`` lists of ``uint8 [frames, 88]``
    (chapter 08_benchmark_jsb)."""

    train: list
    valid: list
    test: list
    path: Path = None

    def split(self, name):
        if name not in SPLITS:
            raise ConfigError("split", f"expected one of {list(SPLITS)}, got {name!r}")
        return getattr(self, name)

    def frames(self, name):
        return int(sum(len(r) for r in self.split(name)))


def load_jsb(path=None):
    """Read the benchmark and encode every piece as an 88-key roll (chapter 08_benchmark_jsb)."""
    path = jsb_path(path)
    if path.suffix.lower() == ".npz":
        return JSB(**read_npz(path), path=path)
    raw = read_jsb(path)
    return JSB(**{s: [piece_to_roll(p) for p in raw[s]] for s in SPLITS}, path=path)


def transpose(roll, semitones):
    """Shift a roll by whole semitones; raises ``ValueError`` if a note would leave the 88 keys
    (chapter 08_benchmark_jsb)."""
    semitones = int(semitones)
    if semitones == 0:
        return roll
    out = np.zeros_like(roll)
    if semitones > 0:
        if roll[:, N_KEYS - semitones:].any():
            raise ValueError(f"transposing up {semitones} pushes notes above MIDI 108")
        out[:, semitones:] = roll[:, :N_KEYS - semitones]
    else:
        if roll[:, :-semitones].any():
            raise ValueError(f"transposing down {-semitones} pushes notes below MIDI 21")
        out[:, :semitones] = roll[:, -semitones:]
    return out


# ----------------------------------------------------------------------------------------------
# Scoring


def frame_nll(roll, probs, eps=1e-7):
    """Nats per frame: ``-sum_k log p(roll[t, k])`` for every frame ``t`` (chapter 08_benchmark_jsb).

    ``probs[t, k]`` is the model's ``p(key k down at frame t)`` given everything before it. Returns
    ``float64 [frames]``. Probabilities are clipped to ``[eps, 1 - eps]``.
    """
    roll = np.asarray(roll, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    if p.shape != roll.shape:
        raise ValueError(f"probabilities {p.shape} and roll {roll.shape} differ in shape")
    return -(roll * np.log(p) + (1 - roll) * np.log1p(-p)).sum(axis=1)


def marginal_rates(rolls, eps=1e-7):
    """Per-key ``p(key down)`` fitted on ``rolls``: the marginal baseline (chapter 08_benchmark_jsb)."""
    rates = np.concatenate(rolls).mean(axis=0)
    return np.clip(rates, eps, 1 - eps)


def marginal_predictor(rates):
    """A predictor (roll -> probs) that ignores the past and predicts ``rates`` for every frame
    (chapter 08_benchmark_jsb)."""
    rates = np.asarray(rates, dtype=np.float64)
    return lambda roll: np.broadcast_to(rates, roll.shape)


def markov_rates(rolls, eps=1e-7):
    """Per-key ``p(down | down before)``, ``p(down | up before)`` fitted on ``rolls``, each piece
    starting from a silent frame: the first-order Markov baseline (chapter 08_benchmark_jsb)."""
    prev = np.concatenate([np.vstack([np.zeros((1, N_KEYS), r.dtype), r[:-1]]) for r in rolls])
    cur = np.concatenate(rolls)
    on = prev.sum(0)
    p_on = np.where(on > 0, (prev * cur).sum(0) / np.maximum(on, 1), 0.0)
    p_off = ((1 - prev) * cur).sum(0) / np.maximum((1 - prev).sum(0), 1)
    return np.clip(p_on, eps, 1 - eps), np.clip(p_off, eps, 1 - eps)


def markov_predictor(p_on, p_off):
    """A predictor (roll -> probs): each key's probability given its own state one frame back
    (chapter 08_benchmark_jsb)."""
    def predict(roll):
        prev = np.vstack([np.zeros((1, roll.shape[1]), roll.dtype), roll[:-1]])
        return np.where(prev == 1, p_on, p_off)
    return predict


def model_probabilities(model, roll, receptive_field=None, max_states=1 << 20):
    """``p(key down)`` for every key state of a piece from a pianolab model (chapter 08_benchmark_jsb).

    The flat sequence is prefixed with ``receptive_field`` zeros (leading silence), so the state
    at flat index ``i`` is predicted from the ``RF`` states before it: input
    ``zeros(RF) ++ seq[:-1]`` of length ``RF + N - 1`` gives ``N`` outputs. Long pieces are cut
    into chunks of ``max_states`` outputs. Returns ``float64 [frames, keys]``.
    """
    from .model import model_receptive_field

    rf = int(receptive_field or model_receptive_field(model))
    roll = np.asarray(roll)
    seq = roll.reshape(-1).astype(np.float32)
    n = len(seq)
    padded = np.concatenate([np.zeros(rf, np.float32), seq[:-1]])
    out = np.empty(n, np.float64)
    for start in range(0, n, max_states):
        stop = min(n, start + max_states)
        x = padded[start:stop + rf - 1][None, :, None]
        out[start:stop] = np.asarray(model.predict_on_batch(x))[0, :, 0]
    return out.reshape(roll.shape)


def keras_predictor(model, receptive_field=None):
    """A predictor (roll -> probs) running a pianolab model, see :func:`model_probabilities`
    (chapter 08_benchmark_jsb)."""
    return lambda roll: model_probabilities(model, roll, receptive_field)


def evaluate(predictor, rolls):
    """Test NLL of a predictor on a list of rolls, in nats per frame (chapter 08_benchmark_jsb).

    ``predictor`` is a Keras pianolab model or a function ``roll -> probs [frames, 88]`` (e.g.
    :func:`marginal_predictor`). Returns a dict: ``nll`` (the first frame of each piece not
    scored), ``nll_all_frames`` (every frame scored, the first from leading silence),
    ``nll_per_state`` (``nll_all_frames / 88``), ``frames``, ``scored_frames``, ``pieces`` and
    ``per_piece`` (mean nats per scored frame of each piece).
    """
    if not callable(predictor) or hasattr(predictor, "predict_on_batch"):
        predictor = keras_predictor(predictor)
    total_all = total_rest = 0.0
    frames = scored = 0
    per_piece = []
    for roll in rolls:
        costs = frame_nll(roll, predictor(roll))
        total_all += costs.sum()
        total_rest += costs[1:].sum()
        frames += len(costs)
        scored += len(costs) - 1
        per_piece.append(float(costs[1:].mean()) if len(costs) > 1 else float("nan"))
    return {
        "nll": total_rest / scored,
        "nll_all_frames": total_all / frames,
        "nll_per_state": total_all / frames / N_KEYS,
        "frames": frames,
        "scored_frames": scored,
        "pieces": len(per_piece),
        "per_piece": per_piece,
    }


def baselines(jsb, split="test"):
    """The marginal and first-order Markov baselines fitted on ``train``, scored on ``split``.

    Returns ``{name: evaluate(...)}`` (chapter 08_benchmark_jsb).
    """
    rolls = jsb.split(split)
    return {
        "per-key marginal": evaluate(marginal_predictor(marginal_rates(jsb.train)), rolls),
        "per-key first-order Markov": evaluate(markov_predictor(*markov_rates(jsb.train)), rolls),
    }


def read_published(readme=None):
    """The table of published test NLLs from the README beside the data: ``{model: nats}``.

    Falls back to :data:`PUBLISHED` only if no README is given and none lies next to the data
    (chapter 08_benchmark_jsb).
    """
    readme = Path(readme) if readme is not None else jsb_path().parent / "README.md"
    if not readme.exists():
        return dict(PUBLISHED)
    table = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            try:
                table[cells[0]] = float(cells[1])
            except ValueError:
                continue
    return table


# ----------------------------------------------------------------------------------------------
# Training


@dataclass
class JSBConfig:
    """A JSB training run (chapter 08_benchmark_jsb).

    ``filter_increments`` describes the model (see :mod:`pianolab.model`); each training example
    is a window of ``n_targets`` key states (plus the receptive field before them) from one
    training piece, prefixed with silence, transposed by a random whole number of semitones in
    ``[-transpose, transpose]``; the Adam learning rate decays from ``learning_rate`` to
    ``learning_rate * final_lr_fraction`` along a cosine over ``steps`` (AdamW with decoupled
    ``weight_decay`` when it is > 0). ``dropout`` > 0 drops that fraction of every hidden layer's
    activations during training only (the saved model is a plain pianolab model). The validation
    NLL is measured every ``eval_every`` steps and the best model kept.
    """

    filter_increments: list = field(default_factory=lambda: [[16, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]])
    n_targets: int = 88 * 16
    batch_size: int = 16
    steps: int = 20000
    learning_rate: float = 1e-3
    final_lr_fraction: float = 0.05
    transpose: int = 5
    weight_decay: float = 0.0
    dropout: float = 0.0
    eval_every: int = 500
    seed: int = 0

    def __post_init__(self):
        from .model import _check_increments

        try:
            self.filter_increments = _check_increments(self.filter_increments)
        except (ValueError, KeyError) as exc:
            raise ConfigError("filter_increments", str(exc)) from None
        for key in ("n_targets", "batch_size", "steps", "eval_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(key, f"expected a whole number >= 1, got {v!r}")
        if isinstance(self.transpose, bool) or not isinstance(self.transpose, int) or not 0 <= self.transpose <= 12:
            raise ConfigError("transpose", f"expected a whole number of semitones in 0..12, got {self.transpose!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ConfigError("learning_rate", f"expected a number in (0, 1), got {self.learning_rate!r}")
        if not (isinstance(self.final_lr_fraction, (int, float)) and 0 < self.final_lr_fraction <= 1):
            raise ConfigError("final_lr_fraction", f"expected a number in (0, 1], got {self.final_lr_fraction!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < 1):
            raise ConfigError("weight_decay", f"expected a number in [0, 1), got {self.weight_decay!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ConfigError("dropout", f"expected a number in [0, 1), got {self.dropout!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError("seed", f"expected an int, got {self.seed!r}")

    @property
    def receptive_field(self):
        from .model import receptive_field

        return receptive_field(self.filter_increments)

    @property
    def params(self):
        from .model import count_params

        return count_params(self.filter_increments)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where="config"):
        if not isinstance(d, dict):
            raise ConfigError(where, "expected a JSON object")
        known = set(cls.__dataclass_fields__)
        for k in d:
            if k not in known:
                raise ConfigError(k, f"unknown key in {where}; expected some of {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, path):
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(path), "no such config file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), f"not valid JSON: {exc}") from None
        return cls.from_dict(d, where=str(path))


_atomic_write = _io.write_bytes
_atomic_save_model = _io.save_model


def random_transpose(roll, max_semitones, rng):
    """``(transposed roll, shift)``: shift uniform over the whole semitones in
    ``[-max_semitones, max_semitones]`` that keep every note on the 88 keys (chapter 08_benchmark_jsb)."""
    keys = np.flatnonzero(roll.any(axis=0))
    if not keys.size:
        return roll, 0
    lo = -min(max_semitones, int(keys.min()))
    hi = min(max_semitones, N_KEYS - 1 - int(keys.max()))
    shift = int(rng.integers(lo, hi + 1))
    return transpose(roll, shift), shift


def with_dropout(model, rate, seed=None):
    """A training view of a pianolab model with ``Dropout(rate)`` after every hidden layer.

    The view shares its layers (and so its weights) with ``model``; dropout acts only in training
    (chapter 08_benchmark_jsb).
    """
    import keras

    x = inputs = keras.Input(shape=(None, 1), name="key_states")
    for layer in model.layers[1:]:
        x = layer(x)
        if layer.name != "output":
            x = keras.layers.Dropout(rate, seed=seed, name=f"{layer.name}_dropout")(x)
    return keras.Model(inputs, x, name=f"{model.name}_dropout")


def sample_windows(rolls, receptive_field, n_targets, batch_size, rng, transpose_max=0):
    """A training batch of windows from single pieces (chapter 08_benchmark_jsb).

    Returns ``x float32 [B, RF + N - 1, 1]``, ``y float32 [B, N, 1]`` and weights
    ``w float32 [B, N]``. Each piece is read as ``zeros(RF) ++ sequence ++ zeros``; the first
    target index is uniform over every position where the window holds at least one state of
    the piece, and targets outside the piece get weight 0, so every state of every piece is a
    target equally often. Output ``j`` predicts the state right after the ``RF`` inputs it sees.
    """
    rf, n = int(receptive_field), int(n_targets)
    lengths = np.array([r.size for r in rolls], dtype=np.float64)
    # a piece of S states has S + N - 1 window positions
    piece_ids = rng.choice(len(rolls), size=batch_size, p=(lengths + n - 1) / (lengths + n - 1).sum())
    x = np.zeros((batch_size, rf + n - 1, 1), np.float32)
    y = np.zeros((batch_size, n, 1), np.float32)
    w = np.zeros((batch_size, n), np.float32)
    for b, i in enumerate(piece_ids):
        roll = rolls[i]
        if transpose_max:
            roll, _ = random_transpose(roll, transpose_max, rng)
        seq = roll.reshape(-1).astype(np.float32)
        s = seq.size
        start = int(rng.integers(-(n - 1), s))  # index of the first target in the piece
        # zeros(n) ++ zeros(rf) ++ piece ++ zeros(n): target k sits at index n + rf + k and is
        # predicted from the rf states before it
        padded = np.zeros(n + rf + s + n, np.float32)
        padded[n + rf:n + rf + s] = seq
        x[b, :, 0] = padded[n + start:n + start + rf + n - 1]
        y[b, :, 0] = padded[n + rf + start:n + rf + start + n]
        k = np.arange(start, start + n)
        w[b] = (k >= 0) & (k < s)
    return x, y, w


def _history_rows(path):
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


HISTORY_FIELDS = ["step", "train_loss", "valid_nll", "valid_nll_all_frames", "seconds", "states"]


def train_jsb(run_dir, config=None, steps=None, jsb=None, progress=True, max_seconds=None):
    """Train (or resume) a pianolab model on JSB in ``run_dir`` (chapter 08_benchmark_jsb).

    ``run_dir`` gets ``config.json``, ``history.csv`` (step, train loss in nats per key state,
    validation NLL in nats per frame under both conventions, wall seconds, states seen),
    ``model.keras`` (the best model by validation NLL, without optimizer state) and
    ``checkpoints/last.keras`` (with optimizer state, for resuming). ``steps`` overrides
    ``config.steps`` as the total to reach; ``max_seconds`` stops early at an evaluation.
    Returns the history rows as dicts.
    """
    import keras

    from .model import build_model, logit

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if config is None:
        if not cfg_path.exists():
            raise ConfigError(str(cfg_path), "no config.json in the run directory and no config given")
        config = JSBConfig.load(cfg_path)
    elif isinstance(config, dict):
        config = JSBConfig.from_dict(config)
    if cfg_path.exists() and JSBConfig.load(cfg_path) != config:
        raise ConfigError("config", f"{cfg_path} holds a different config; use a new run directory")
    _atomic_write(cfg_path, json.dumps(config.to_dict(), indent=1) + "\n")
    total = int(steps if steps is not None else config.steps)
    jsb = jsb if jsb is not None else load_jsb()
    rf = config.receptive_field

    ckpt = run_dir / "checkpoints" / "last.keras"
    hist_path = run_dir / "history.csv"
    rows = _history_rows(hist_path)
    if ckpt.exists() and rows:
        model = keras.models.load_model(ckpt)
        step = int(rows[-1]["step"])
        seconds0 = float(rows[-1]["seconds"])
        states = int(rows[-1]["states"])
        best = min(float(r["valid_nll"]) for r in rows)
    else:
        rows, step, seconds0, states, best = [], 0, 0.0, 0, math.inf
        rate = float(np.concatenate(jsb.train).mean())
        model = build_model(config.filter_increments, output_bias=logit(rate), seed=config.seed)
        if config.dropout > 0:
            model = with_dropout(model, config.dropout, seed=config.seed)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.steps, alpha=config.final_lr_fraction)
        if config.weight_decay > 0:
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
        else:
            optimizer = keras.optimizers.Adam(schedule)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.BinaryCrossentropy(reduction="mean_with_sample_weight"))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc="jsb train", unit="step")
    t0 = time.perf_counter()
    losses, weights = [], []
    while step < total:
        rng = np.random.default_rng([config.seed, step])
        x, y, w = sample_windows(jsb.train, rf, config.n_targets, config.batch_size, rng,
                                 config.transpose)
        loss = float(model.train_on_batch(x, y, sample_weight=w))
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step}; lower learning_rate")
        losses.append(loss)
        weights.append(float(w.sum()))
        step += 1
        states += int(w.sum())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
        elapsed = seconds0 + time.perf_counter() - t0
        out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
        if step % config.eval_every == 0 or step == total or out_of_time:
            ev = evaluate(model, jsb.valid)
            rows.append({
                "step": step,
                "train_loss": float(np.average(losses, weights=weights)),
                "valid_nll": ev["nll"],
                "valid_nll_all_frames": ev["nll_all_frames"],
                "seconds": round(elapsed, 2),
                "states": states,
            })
            losses, weights = [], []
            if ev["nll"] < best:
                best = ev["nll"]
                clean = build_model(config.filter_increments)
                clean.set_weights(model.get_weights())
                _atomic_save_model(clean, run_dir / "model.keras")
            ckpt.parent.mkdir(exist_ok=True)
            _atomic_save_model(model, ckpt)
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
            _atomic_write(hist_path, buf.getvalue())
            if bar is not None:
                bar.write(f"step {step}: valid {ev['nll']:.3f} nats/frame (best {best:.3f})")
            if out_of_time:
                break
    if bar is not None:
        bar.close()
    return rows


def load_run(run_dir=None):
    """``(config, model)`` of a JSB run; default: the shipped run ``data/models/jsb`` (chapter 08_benchmark_jsb)."""
    import keras

    from .settings import models_dir

    run_dir = Path(run_dir) if run_dir is not None else models_dir() / "jsb"
    config = JSBConfig.load(run_dir / "config.json")
    path = run_dir / "model.keras"
    if not path.exists():
        raise ConfigError(str(path), "no trained model in the run directory")
    return config, keras.models.load_model(path, compile=False)


def read_history(run_dir=None):
    """The history CSV of a JSB run as a dict of float arrays (chapter 08_benchmark_jsb)."""
    from .settings import models_dir

    run_dir = Path(run_dir) if run_dir is not None else models_dir() / "jsb"
    rows = _history_rows(run_dir / "history.csv")
    if not rows:
        raise ConfigError(str(run_dir / "history.csv"), "missing or empty history")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def main(argv=None):
    """``python -m pianolab.jsb train RUN_DIR [--config FILE] [--steps N] [--max-seconds S]`` and
    ``python -m pianolab.jsb evaluate [RUN_DIR] [--split test]`` (chapter 08_benchmark_jsb)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m pianolab.jsb", description="JSB Chorales benchmark")
    parser.add_argument("--data", default=None, help="JSB .npz, JSON or pickle (default: $PIANOLAB_JSB, then data/benchmarks)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train or resume the JSB run in RUN_DIR")
    p.add_argument("run_dir")
    p.add_argument("--config", default=None, help="JSON JSBConfig to start a new run with")
    p.add_argument("--steps", type=int, default=None, help="train until this many steps in total")
    p.add_argument("--max-seconds", type=float, default=None, help="stop at the first evaluation after this")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("evaluate", help="test NLL of a run (default: the shipped data/models/jsb)")
    p.add_argument("run_dir", nargs="?", default=None)
    p.add_argument("--split", default="test", choices=SPLITS)
    args = parser.parse_args(argv)
    try:
        data = load_jsb(args.data)
        if args.command == "train":
            config = JSBConfig.load(args.config) if args.config else None
            if args.steps is not None and args.steps < 1:
                raise ConfigError("--steps", f"expected a whole number >= 1, got {args.steps}")
            rows = train_jsb(args.run_dir, config, steps=args.steps, jsb=data,
                             progress=not args.quiet, max_seconds=args.max_seconds)
            best = min(rows, key=lambda r: float(r["valid_nll"]))
            print(f"step {rows[-1]['step']}: best valid NLL {float(best['valid_nll']):.4f} nats/frame "
                  f"at step {best['step']}")
        else:
            _, model = load_run(args.run_dir)
            ev = evaluate(model, data.split(args.split))
            print(f"{args.split}_nll={ev['nll']:.4f} {args.split}_nll_all_frames={ev['nll_all_frames']:.4f}")
    except PianolabError as exc:
        print(f"python -m pianolab.jsb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
