"""Polyphonic-music benchmarks: reading the sets, scoring models in nats per frame (chapter 08_benchmark_jsb).

The sets of Boulanger-Lewandowski et al. (2012), a piece a list of frames of MIDI pitches (21..108), become
flat key-state sequences like the piano corpus: :func:`dataset` trains on them with the same trainer.
"""

import functools
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
SPLITS = ("train", "valid", "test")  #: Split names, in the order of the original pickle.
LOWEST, N_KEYS = 21, 88  #: Lowest key (A0) and number of keys of the benchmark's frames.
ENCODING = BENCHMARK_ENCODING  #: 88 keys from MIDI 21, one frame (JSB: a quarter note) played as 0.5 s.
#: Published JSB test NLLs (nats per frame), with where each comes from.
PUBLISHED = {
    "per-key marginal": (11.06, "computed here: train-set key rates, every frame scored"),
    "per-key first-order Markov": (10.48, "computed here: every frame scored"),
    "RNN": (8.91, "Bai et al. 2018, Table 1 (from Boulanger-Lewandowski et al. 2012)"),
    "LSTM": (8.45, "Bai et al. 2018, Table 1"), "GRU": (8.43, "Bai et al. 2018, Table 1"),
    "TCN": (8.10, "Bai et al. 2018, Table 1"),
    "RNN-NADE": (5.19, "Boulanger-Lewandowski et al. 2012, as tabulated by Krishnan et al. 2017, Table 4")}


class JSBError(PianolabError):
    """A benchmark file is missing or does not have the benchmark's structure (chapter 08_benchmark_jsb);
    ``key`` says where in it (e.g. ``test[3][12]``)."""

    def __init__(self, path, key, reason):
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}" + (f" at {key}" if key else "") + f": {reason}")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data, never objects (chapter 08_benchmark_jsb): a pickle runs
    code only through globals and persistent ids, and both hooks refuse; :func:`read_pickle` then checks
    the shape."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: "
                                     "a JSB pickle holds only lists, tuples, dicts and ints")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: a JSB pickle holds only plain data")


def read_pickle(path):
    """Read the original ``JSB Chorales.pickle`` safely with :class:`RestrictedUnpickler` (Python 2 strings
    as latin-1); returns the checked ``{split: [piece, ...]}`` (chapter 08_benchmark_jsb)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JSBError(path, None, "no such file (set PIANOLAB_JSB or pass the path)") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise JSBError(path, None, f"not a plain-data pickle: {exc}") from None
    return _check_structure(obj, path)


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


def _check_structure(obj, path="<data>"):
    """A clean copy of ``{split: [piece]}``, piece = [frame], frame = [int pitch]; else :class:`JSBError`
    naming the path and the key (``split[piece][frame]``) of the first problem."""
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
        if not isinstance(obj[split], (list, tuple)) or not obj[split]:
            raise JSBError(path, split, "expected a non-empty list of pieces")
        out[split] = []
        for i, piece in enumerate(obj[split]):
            if not isinstance(piece, (list, tuple)) or not piece:
                raise JSBError(path, f"{split}[{i}]", "expected a non-empty list of frames")
            out[split].append([])
            for t, frame in enumerate(piece):
                if not isinstance(frame, (list, tuple)):
                    raise JSBError(path, f"{split}[{i}][{t}]",
                                   f"expected a list of MIDI pitches, got {type(frame).__name__}")
                out[split][-1].append(sorted({_pitch(p, path, f"{split}[{i}][{t}]") for p in frame}))
    return out


def read_npz(path):
    """``{split: [uint8 roll [frames, 88]]}`` from a bit-packed ``.npz`` of ``data/benchmarks``
    (chapter 08_benchmark_jsb)."""
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
        return _check_structure(json.loads(path.read_text(encoding="utf-8")), path)
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
    """A benchmark's training and validation pieces as a :class:`pianolab.data.Dataset`, each training piece
    also in every ``transpose`` shift that keeps its notes on the 88 keys (chapter 08_benchmark_jsb)."""
    train = {}
    for i, roll in enumerate(rolls["train"]):
        train[f"train/{i:03d}"] = roll
        for s in transpose:
            if (moved := transpose_roll(roll, s)) is not None:
                train[f"train/{i:03d}@t{s:+d}"] = moved
    return dataset_from_rolls(train, {f"valid/{i:03d}": r for i, r in enumerate(rolls["valid"])}, ENCODING)


def frame_nll(roll, probs, eps=1e-7):
    """Nats per frame, ``-sum_k log p(roll[t, k])``, given ``probs[t, k] = p(key k down at frame t)``
    clipped to ``[eps, 1 - eps]``: ``float64 [frames]`` (chapter 08_benchmark_jsb)."""
    roll = np.asarray(roll, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    if p.shape != roll.shape:
        raise ValueError(f"probabilities {p.shape} and roll {roll.shape} differ in shape")
    return -(roll * np.log(p) + (1 - roll) * np.log1p(-p)).sum(axis=1)


def marginal_rates(rolls, eps=1e-7):
    """Per-key ``p(key down)`` fitted on ``rolls``: the marginal baseline (chapter 08_benchmark_jsb)."""
    return np.clip(np.concatenate(rolls).mean(axis=0), eps, 1 - eps)


def marginal_predictor(rates):
    """A predictor (roll -> probs): ``rates`` at every frame, the past ignored (chapter 08_benchmark_jsb)."""
    rates = np.asarray(rates, dtype=np.float64)
    return lambda roll: np.broadcast_to(rates, roll.shape)


def markov_rates(rolls, eps=1e-7):
    """Per-key ``p(down | down before)``, ``p(down | up before)`` fitted on ``rolls``, each piece
    starting from a silent frame: the first-order Markov baseline (chapter 08_benchmark_jsb)."""
    prev = np.concatenate([np.pad(r[:-1], ((1, 0), (0, 0))) for r in rolls])  # silence before a piece
    cur = np.concatenate(rolls)
    p_on = (prev * cur).sum(0) / np.maximum(prev.sum(0), 1)
    p_off = ((1 - prev) * cur).sum(0) / np.maximum((1 - prev).sum(0), 1)
    return np.clip(p_on, eps, 1 - eps), np.clip(p_off, eps, 1 - eps)


def markov_predictor(p_on, p_off):
    """A predictor (roll -> probs): each key's probability given its own state one frame back
    (chapter 08_benchmark_jsb)."""
    return lambda roll: np.where(np.pad(roll[:-1], ((1, 0), (0, 0))) == 1, p_on, p_off)


def model_probabilities(model, roll, receptive_field=None, max_states=1 << 20):
    """``p(key down)`` for every key state of a piece from a pianolab model, ``float64 [frames, keys]``;
    the input is ``zeros(RF) ++ seq[:-1]`` (leading silence), in chunks of ``max_states`` outputs
    (chapter 08_benchmark_jsb)."""
    rf = int(receptive_field or model_receptive_field(model))
    roll = np.asarray(roll)
    n = roll.size
    padded = np.concatenate([np.zeros(rf, np.float32), roll.reshape(-1)[:-1].astype(np.float32)])
    out = np.empty(n, np.float64)
    for start in range(0, n, max_states):
        stop = min(n, start + max_states)
        x = padded[start:stop + rf - 1][None, :, None]
        out[start:stop] = np.asarray(model.predict_on_batch(x))[0, :, 0]
    return out.reshape(roll.shape)


def evaluate(predictor, rolls):
    """NLL in nats per frame of a pianolab model or a function ``roll -> probs`` on ``rolls``: ``nll`` (first
    frame of each piece not scored, the published convention), ``nll_all_frames``, ``nll_per_state``,
    ``frames``, ``scored_frames``, ``pieces``, ``per_piece`` (chapter 08_benchmark_jsb)."""
    if not callable(predictor) or hasattr(predictor, "predict_on_batch"):
        predictor = functools.partial(model_probabilities, predictor)
    costs = [frame_nll(roll, predictor(roll)) for roll in rolls]
    frames, scored = sum(len(c) for c in costs), sum(len(c) - 1 for c in costs)
    total_all, total_rest = sum(c.sum() for c in costs), sum(c[1:].sum() for c in costs)
    per_piece = [float(c[1:].mean()) if len(c) > 1 else float("nan") for c in costs]
    return {"nll": total_rest / scored, "nll_all_frames": total_all / frames,
            "nll_per_state": total_all / frames / N_KEYS, "frames": frames, "scored_frames": scored,
            "pieces": len(costs), "per_piece": per_piece}


def baselines(rolls, split="test"):
    """The marginal and first-order Markov baselines fitted on ``train``, scored on ``split``
    (chapter 08_benchmark_jsb)."""
    train, scored = rolls["train"], rolls[split]
    return {"per-key marginal": evaluate(marginal_predictor(marginal_rates(train)), scored),
            "per-key first-order Markov": evaluate(markov_predictor(*markov_rates(train)), scored)}


def load(name):
    """A benchmark's rolls ``{split: [uint8 [frames, 88]]}`` by the name ``data.benchmark`` takes
    (chapter 08_benchmark_jsb)."""
    if name not in FILES:
        raise JSBError(name, None, f"unknown benchmark; expected one of {list(FILES)}")
    return load_jsb() if name == "jsb" else read_npz(shipped_dir() / "benchmarks" / FILES[name])
