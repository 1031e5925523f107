"""Polyphonic-music benchmarks (Boulanger-Lewandowski et al. 2012) as 88-key rolls: reading the sets, training
on them with the one trainer (:func:`dataset`), scoring models in nats per frame (chapter 09_benchmarks)."""

import functools
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .data import dataset_from_rolls
from .encoding import Encoding
from .errors import PianolabError
from .model import binary_cross_entropy, model_receptive_field
from .settings import jsb_path, shipped_dir

#: The shipped sets (``data/benchmarks``), by the name ``data.benchmark`` takes (``BENCHMARKS``, in order).
FILES = {"jsb": "jsb_chorales.npz", "nottingham": "nottingham.npz", "musedata": "musedata.npz",
         "pianomidi": "piano_midi.npz"}
BENCHMARKS = tuple(FILES)
SPLITS = ("train", "valid", "test")  #: Split names, in the order of the original pickle.
ENCODING = Encoding(steps_per_second=2.0, lowest=21, n_keys=88)  #: 88 keys from MIDI 21 (A0), a frame played as 0.5 s.
LOWEST, N_KEYS = ENCODING.lowest, ENCODING.n_keys  #: The same key window, as two numbers.
#: Published test NLLs in nats per frame, one per set in ``BENCHMARKS`` order (None: not reported), whether
#: each is an exact likelihood or a bound on it, and where it comes from.
PUBLISHED = {
    "RNN": ((8.91, None, None, None), "exact", "Bai et al. 2018, Table 1 (from Boulanger-Lewandowski et al. 2012)"),
    "LSTM": ((8.45, 3.29, None, None), "exact", "Bai et al. 2018, Table 1"),
    "GRU": ((8.43, 3.46, None, None), "exact", "Bai et al. 2018, Table 1"),
    "TCN": ((8.10, 3.07, None, None), "exact", "Bai et al. 2018, Table 1"),
    "RNN-NADE": ((5.19, 2.31, 5.60, 7.05), "exact", "Boulanger-Lewandowski et al. 2012, in Krishnan et al. 2017, Table 4"),
    "DMM-Aug-NADE": ((5.118, 2.305, 6.049, 7.048), "bound", "Krishnan et al. 2017, Table 4 (importance-sampled)")}


class JSBError(PianolabError):
    """A benchmark file is missing or does not have the benchmark's structure; ``key`` says where in it,
    such as ``test[3][12]`` (chapter 09_benchmarks)."""

    def __init__(self, path, key, reason):
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}" + (f" at {key}" if key else "") + f": {reason}")


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain data only: a pickle runs code only through globals and persistent ids; both refuse."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a benchmark pickle is plain data")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: a benchmark pickle is plain data")


def read(path):
    """The rolls ``{"train" | "valid" | "test": [uint8 [frames, 88]]}`` of a bit-packed ``.npz`` (as shipped
    in ``data/benchmarks``), a JSON ``{split: [piece = [frame = [MIDI pitch]]]}`` or the original
    ``JSB Chorales.pickle``, unpickling plain data only (appendix_b_foreign_files)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JSBError(path, None, "no such file (set PIANOLAB_JSB or pass the path)") from None
    if raw[:4] == b"PK\x03\x04":  # a zip archive: an .npz
        return _unpack(path, raw)
    if raw[:1] == b"\x80" or path.suffix.lower() in (".pickle", ".pkl"):
        try:  # Python 2 strings as latin-1, as the original pickle needs
            obj = _PlainUnpickler(io.BytesIO(raw), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise JSBError(path, None, f"not a plain-data pickle: {exc}") from None
    else:
        try:
            obj = json.loads(raw)
        except ValueError as exc:  # bad JSON or bad UTF-8
            raise JSBError(path, None, f"not an .npz, a pickle or valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise JSBError(path, None, f"expected a dict with keys {list(SPLITS)}, got {type(obj).__name__}")
    return {split: _split_rolls(obj, split, path) for split in SPLITS}


def _split_rolls(obj, split, path):
    """The rolls of ``obj[split]``, checked in one pass; a :class:`JSBError` names the first bad key."""
    if split not in obj:
        raise JSBError(path, split, f"missing split; expected keys {list(SPLITS)}, found {list(obj)}")
    if not isinstance(obj[split], (list, tuple)) or not obj[split]:
        raise JSBError(path, split, "expected a non-empty list of pieces")
    rolls = []
    for i, piece in enumerate(obj[split]):
        if not isinstance(piece, (list, tuple)) or not piece:
            raise JSBError(path, f"{split}[{i}]", "expected a non-empty list of frames")
        rolls.append(np.zeros((len(piece), N_KEYS), np.uint8))
        for t, frame in enumerate(piece):
            if not isinstance(frame, (list, tuple)):
                raise JSBError(path, f"{split}[{i}][{t}]", f"expected a list of MIDI pitches, not {type(frame).__name__}")
            for p in frame:  # a whole number on the 88 keys (True and False, 1 and 0, are not)
                if not isinstance(p, (int, float)) or not LOWEST <= p < LOWEST + N_KEYS or p != int(p):
                    raise JSBError(path, f"{split}[{i}][{t}]", f"expected a whole MIDI pitch in 21..108, not {p!r}")
                rolls[-1][t, int(p) - LOWEST] = 1
    return rolls


def _unpack(path, raw):
    """The rolls of a bit-packed ``.npz`` (format: ``data/benchmarks/convert.py``), checked."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise JSBError(path, None, f"not a numpy .npz: {exc}") from None
    out = {}
    for split in SPLITS:
        bits, lengths = arrays.get(f"{split}_frames"), arrays.get(f"{split}_lengths")
        if bits is None or lengths is None or bits.dtype != np.uint8 or bits.shape[1:] != (N_KEYS // 8,) \
                or lengths.dtype.kind not in "iu" or lengths.ndim != 1 or len(lengths) < 1 or (lengths < 1).any() \
                or lengths.sum() != len(bits):
            raise JSBError(path, split, f"expected arrays {split}_frames, uint8 [frames, {N_KEYS // 8}], and "
                                        f"{split}_lengths, one or more whole numbers >= 1 summing to the frames")
        out[split] = np.split(np.unpackbits(bits, axis=1, count=N_KEYS), np.cumsum(lengths)[:-1])
    return out


def load(name):
    """A benchmark's rolls ``{split: [uint8 [frames, 88]]}`` by the name ``data.benchmark`` takes; ``"jsb"``
    honours ``$PIANOLAB_JSB`` (chapter 09_benchmarks)."""
    if name not in FILES:
        raise JSBError(name, None, f"unknown benchmark; expected one of {list(FILES)}")
    return read(jsb_path() if name == "jsb" else shipped_dir() / "benchmarks" / FILES[name])


def dataset(rolls, transpose=()):
    """A benchmark's training and validation pieces as a :class:`pianolab.data.Dataset`, each training piece
    also in every ``transpose`` shift that keeps its notes on the 88 keys (chapter 09_benchmarks)."""
    return dataset_from_rolls({f"train/{i:03d}": r for i, r in enumerate(rolls["train"])},
                              {f"valid/{i:03d}": r for i, r in enumerate(rolls["valid"])}, ENCODING, transpose=transpose)


def model_probabilities(model, roll, receptive_field=None, max_states=1 << 20):
    """``p(key down)`` for every key state of a piece from a pianolab model, ``float64 [frames, keys]``; the
    input is ``zeros(RF) ++ seq[:-1]`` (leading silence), in chunks of ``max_states`` (chapter 09_benchmarks)."""
    rf, roll = int(receptive_field or model_receptive_field(model)), np.asarray(roll)
    padded = np.concatenate([np.zeros(rf, np.float32), roll.reshape(-1)[:-1].astype(np.float32)])
    out = np.empty(roll.size, np.float64)
    for start in range(0, roll.size, max_states):
        stop = min(roll.size, start + max_states)
        out[start:stop] = np.asarray(model.predict_on_batch(padded[start:stop + rf - 1][None, :, None]))[0, :, 0]
    return out.reshape(roll.shape)


def nll_per_frame(predictor, rolls):
    """NLL in nats per frame of a pianolab model or a function ``roll -> probs`` on ``rolls``: ``nll`` (first
    frame of each piece not scored, the published convention), ``nll_all_frames``, ``nll_per_state``,
    ``frames``, ``scored_frames``, ``pieces``, ``per_piece`` (chapter 09_benchmarks)."""
    if not callable(predictor) or hasattr(predictor, "predict_on_batch"):
        predictor = functools.partial(model_probabilities, predictor)
    costs = []
    for roll in rolls:  # nats per frame: -sum_k log p(state of key k)
        x, p = np.asarray(roll, np.float64), np.asarray(predictor(roll))
        if p.shape != x.shape:
            raise ValueError(f"probabilities {p.shape} and roll {x.shape} differ in shape")
        costs.append(binary_cross_entropy(x, p).sum(axis=1))
    frames, scored = sum(len(c) for c in costs), sum(len(c) - 1 for c in costs)
    total_all, total_rest = sum(c.sum() for c in costs), sum(c[1:].sum() for c in costs)
    return {"nll": total_rest / scored, "nll_all_frames": total_all / frames,
            "nll_per_state": total_all / frames / N_KEYS, "frames": frames, "scored_frames": scored,
            "pieces": len(costs), "per_piece": [float(c[1:].mean()) if len(c) > 1 else float("nan") for c in costs]}


def baselines(rolls, split="test", eps=1e-7):
    """The per-key marginal (``p(key down)``) and first-order Markov (``p(key down | its state a frame before)``,
    silence before a piece) baselines fitted on ``train``, scored on ``split`` (chapter 09_benchmarks)."""
    before = lambda roll: np.pad(roll[:-1], ((1, 0), (0, 0)))  # noqa: E731
    now = np.concatenate(rolls["train"]).astype(np.float64)
    was = np.concatenate([before(r) for r in rolls["train"]])
    rate = lambda hits, seen: np.clip(hits.sum(0) / np.maximum(seen.sum(0), 1), eps, 1 - eps)  # noqa: E731
    q, p_on, p_off = rate(now, np.ones_like(now)), rate(was * now, was), rate((1 - was) * now, 1 - was)
    return {"per-key marginal": nll_per_frame(lambda roll: np.broadcast_to(q, roll.shape), rolls[split]),
            "per-key first-order Markov": nll_per_frame(lambda roll: np.where(before(roll) == 1, p_on, p_off), rolls[split])}
