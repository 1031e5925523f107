"""Polyphonic-music benchmarks: reading the data and scoring models in nats per frame
(chapter 08_benchmark_jsb).

The sets of Boulanger-Lewandowski et al. (2012), in their split ``train`` / ``valid`` / ``test``: a
piece is a list of frames (JSB: one per quarter note), a frame the MIDI pitches (21..108) sounding.
A piece becomes a binary roll ``[frames, 88]`` and then ONE flat sequence of key states, exactly like
the piano corpus (:data:`ENCODING`: 88 keys from MIDI 21, two frames per second when we listen).
:func:`dataset` hands the training and validation pieces to :func:`pianolab.train.train`, so a
benchmark model is trained by the same trainer as the piano models (``data.benchmark``).

The metric: negative log-likelihood in nats per frame, the sum over the 88 keys of ``-log p(key
state)`` averaged over frames. :func:`evaluate` reports ``nll`` (the first frame of each piece not
scored: the published tables' convention, e.g. the TCN code of Bai et al. 2018) and
``nll_all_frames`` (every frame, the first predicted from leading silence). A model over the flat
sequence predicts the keys of a frame one after another, each given the keys below it (like NADE),
so it can model chords; models that predict the 88 keys of a frame independently cannot.
"""

import io
import json
import pickle
from pathlib import Path

import numpy as np

from .config import BENCHMARK_ENCODING, BENCHMARKS
from .data import dataset_from_rolls, transpose_roll
from .errors import PianolabError
from .model import model_receptive_field
from .settings import jsb_path, shipped_dir

#: The shipped sets (``data/benchmarks``), by the name ``data.benchmark`` takes.
FILES = dict(zip(BENCHMARKS, ("jsb_chorales.npz", "nottingham.npz", "musedata.npz", "piano_midi.npz")))
#: Split names, in the order of the original pickle.
SPLITS = ("train", "valid", "test")
#: Lowest key (A0) and number of keys of the benchmark's frames.
LOWEST, N_KEYS = 21, 88
#: 88 keys from MIDI 21, one frame (JSB: a quarter note) played as 0.5 s.
ENCODING = BENCHMARK_ENCODING
#: Published JSB test NLLs (nats per frame), with where each comes from.
PUBLISHED = {
    "per-key marginal": (11.06, "computed here: train-set key rates, every frame scored"),
    "per-key first-order Markov": (10.48, "computed here: every frame scored"),
    "RNN": (8.91, "Bai et al. 2018, Table 1 (from Boulanger-Lewandowski et al. 2012)"),
    "LSTM": (8.45, "Bai et al. 2018, Table 1"),
    "GRU": (8.43, "Bai et al. 2018, Table 1"),
    "TCN": (8.10, "Bai et al. 2018, Table 1"),
    "RNN-NADE": (5.19, "Boulanger-Lewandowski et al. 2012, as tabulated by Krishnan et al. 2017, Table 4"),
}


class JSBError(PianolabError):
    """A benchmark file is missing or does not have the benchmark's structure (chapter 08_benchmark_jsb);
    ``key`` says where in it (e.g. ``test[3][12]``)."""

    def __init__(self, path, key, reason):
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}" + (f" at {key}" if key else "") + f": {reason}")


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
    """``{split: [uint8 roll [frames, 88]]}`` from a bit-packed ``.npz``, the format of ``data/benchmarks``
    (see its README; chapter 08_benchmark_jsb)."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise JSBError(path, None, "no such file") from None
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
            if bits.dtype != np.uint8 or bits.shape[1:] != (N_KEYS // 8,) or lengths.ndim != 1 \
                    or (lengths < 1).any() or lengths.sum() != len(bits):
                raise JSBError(path, split, f"expected uint8 [frames, {N_KEYS // 8}] and piece lengths >= 1 "
                                            "summing to the frames")
            out[split] = np.split(np.unpackbits(bits, axis=1, count=N_KEYS), np.cumsum(lengths)[:-1])
    return out


def read_jsb(path=None):
    """The raw benchmark ``{split: [piece]}`` from the shipped ``.npz``, a JSON or the original pickle
    (chapter 08_benchmark_jsb); ``path`` defaults to :func:`pianolab.settings.jsb_path`."""
    path = jsb_path(path)
    if path.suffix.lower() == ".npz":
        return {s: [roll_to_piece(r) for r in rolls] for s, rolls in read_npz(path).items()}
    if path.suffix.lower() in (".pickle", ".pkl"):
        return read_pickle(path)
    try:
        return check_structure(json.loads(path.read_text(encoding="utf-8")), path)
    except FileNotFoundError:
        raise JSBError(path, None, "no such file (set PIANOLAB_JSB or pass the path)") from None
    except json.JSONDecodeError as exc:
        raise JSBError(path, None, f"not valid JSON: {exc}") from None


def piece_to_roll(piece):
    """Frames of MIDI pitches -> binary roll ``uint8 [frames, 88]`` (chapter 08_benchmark_jsb)."""
    roll = np.zeros((len(piece), N_KEYS), dtype=np.uint8)
    for t, frame in enumerate(piece):
        roll[t, [int(p) - LOWEST for p in frame]] = 1
    return roll


def roll_to_piece(roll):
    """Binary roll ``[frames, 88]`` -> frames of sorted MIDI pitches (chapter 08_benchmark_jsb)."""
    return [[int(k) + LOWEST for k in np.flatnonzero(row)] for row in np.asarray(roll)]


def load_jsb(path=None):
    """JSB Chorales as rolls: ``{split: [uint8 [frames, 88]]}`` (chapter 08_benchmark_jsb)."""
    path = jsb_path(path)
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    return {s: [piece_to_roll(p) for p in pieces] for s, pieces in read_jsb(path).items()}


def dataset(rolls, transpose=()):
    """The training and validation pieces of a benchmark as a :class:`pianolab.data.Dataset` for
    :func:`pianolab.train.train`; each training piece also in every ``transpose`` shift that keeps
    its notes on the 88 keys (chapter 08_benchmark_jsb)."""
    train = {}
    for i, roll in enumerate(rolls["train"]):
        train[f"train/{i:03d}"] = roll
        for s in transpose:
            moved = transpose_roll(roll, s)
            if moved is not None:
                train[f"train/{i:03d}@t{s:+d}"] = moved
    return dataset_from_rolls(train, {f"valid/{i:03d}": r for i, r in enumerate(rolls["valid"])}, ENCODING)


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


def baselines(rolls, split="test"):
    """The marginal and first-order Markov baselines fitted on ``train``, scored on ``split``
    (chapter 08_benchmark_jsb)."""
    return {"per-key marginal": evaluate(marginal_predictor(marginal_rates(rolls["train"])), rolls[split]),
            "per-key first-order Markov": evaluate(markov_predictor(*markov_rates(rolls["train"])), rolls[split])}


def load(name):
    """A benchmark's rolls ``{split: [uint8 [frames, 88]]}`` by name (``data.benchmark``; chapter 08_benchmark_jsb)."""
    if name not in FILES:
        raise JSBError(name, None, f"unknown benchmark; expected one of {list(FILES)}")
    return load_jsb() if name == "jsb" else read_npz(shipped_dir() / "benchmarks" / FILES[name])
