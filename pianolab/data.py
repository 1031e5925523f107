"""Datasets: pieces encoded, split by piece, augmented, stored flat (chapter 04_training).

:func:`build_dataset` stores each split as ONE flat ``uint8`` array of key states (``train.npy``,
``val.npy``, memory-mapped) plus ``index.json`` naming every piece and where it starts and stops;
it is a cache, rebuilt only when the corpus, the parameters or the encoder change.
"""

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _io
from . import encoding as _encoding_module
from .corpus import default_corpus, midi_files, piece_name
from .encoding import DEFAULT_ENCODING, Encoding, load_midi, midi_to_roll, roll_to_sequence
from .errors import ConfigError, MidiError
from .settings import data_dir

# Bump when the dataset format or encoding pipeline changes.
DATASET_VERSION = 1


def _json_hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass(eq=False)
class Split:
    """One split (chapter 04_training): ``sequence`` the flat ``uint8`` key states, ``pieces`` a list of
    ``(name, start, stop)``, ``entries`` the index's records (source piece, tempo-stretch factor)."""

    name: str
    sequence: np.ndarray
    pieces: list
    encoding: Encoding
    entries: list = field(default_factory=list)

    def __len__(self):
        return len(self.pieces)

    def piece(self, i):
        """Piece ``i`` (an index or a name) as a flat key-state array."""
        names = [p[0] for p in self.pieces]
        if isinstance(i, str) and i not in names:
            raise KeyError(f"no piece {i!r} in the {self.name} split")
        _, a, b = self.pieces[names.index(i) if isinstance(i, str) else i]
        return self.sequence[a:b]

    def roll(self, i):
        """Piece ``i`` as a piano roll ``[time steps, keys]``."""
        return np.asarray(self.piece(i)).reshape(-1, self.encoding.n_keys)

    @property
    def key_down_rate(self):
        """Fraction of key states that are 1."""
        return float(np.count_nonzero(self.sequence) / max(1, self.sequence.shape[0]))


@dataclass(eq=False)
class Dataset:
    """A built dataset: ``.train`` and ``.val`` :class:`Split` s, ``.encoding``, ``.index`` (the
    JSON index) and ``.path`` (chapter 04_training)."""

    path: Path
    train: Split
    val: Split
    encoding: Encoding
    index: dict

    @property
    def key_down_rate(self):
        """Fraction of 1s over the training split (the base rate of a calibrated output bias)."""
        return self.train.key_down_rate


def _stretch_factors(name, n_clones, stretch=(0.85, 1.15), seed=0):
    """Tempo-stretch factors of a training piece's clones, one drawn in each of ``n_clones`` equal slices
    of ``stretch``, seeded by ``seed`` and the name; above 1 plays slower."""
    lo, hi = float(stretch[0]), float(stretch[1])
    name_seed = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    u = np.random.default_rng([int(seed), name_seed]).random(n_clones)
    return [round(lo + (hi - lo) * (c + u[c]) / n_clones, 6) for c in range(n_clones)]


def transpose_roll(roll, shift):
    """``roll`` moved up ``shift`` keys (down when negative), or None when a note would leave the key
    window (chapter 09_benchmarks)."""
    roll = np.asarray(roll)
    if shift == 0 or not roll.size:
        return roll
    if (shift > 0 and roll[:, roll.shape[1] - shift:].any()) or (shift < 0 and roll[:, :-shift].any()):
        return None
    return np.roll(roll, shift, axis=1)


def _transposed(name, roll, shifts):
    """``[("NAME@t+S", roll moved S keys), ...]`` for each shift ``S`` that keeps every note in the window."""
    return [(f"{name}@t{s:+d}", moved) for s in shifts if (moved := transpose_roll(roll, s)) is not None]


def _split_pieces(names, val_fraction=0.1, seed=0):
    """Piece names -> sorted (train, val) lists by a seeded shuffle: ``round(n * val_fraction)`` pieces,
    at least one and never all, go to validation."""
    names = sorted(names)
    n = len(names)
    order = np.random.default_rng(int(seed)).permutation(n)
    n_val = min(max(1, int(round(n * val_fraction))), n - 1) if val_fraction > 0 and n >= 2 else 0
    return sorted(names[i] for i in order[n_val:]), sorted(names[i] for i in order[:n_val])


def _corpus_fingerprint(folder, files):
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _encoder_fingerprint():
    """Hash of pianolab/encoding.py: a changed encoder must not be served a stale dataset."""
    return hashlib.sha256(Path(_encoding_module.__file__).read_bytes()).hexdigest()


DEFAULT_DATASET_PARAMS = dict(val_fraction=0.1, seed=0, n_clones=5, stretch=[0.85, 1.15], max_pieces=None)


def build_dataset(corpus=None, out=None, *, encoding=DEFAULT_ENCODING, val_fraction=0.1, seed=0,
                  n_clones=5, stretch=(0.85, 1.15), transpose=(), max_pieces=None, progress=True, force=False):
    """Build a dataset folder from a corpus (None: the default one); returns it (chapter 07_pianonet_models).

    Unreadable MIDI files are reported and skipped; training pieces get ``n_clones`` tempo-stretched clones
    and one per ``transpose`` shift. A folder built from the same corpus, parameters and encoder is reused.
    """
    corpus = Path(default_corpus(progress=progress) if corpus is None else corpus)
    files = midi_files(corpus)
    params = dict(val_fraction=float(val_fraction), seed=int(seed), n_clones=int(n_clones),
                  stretch=[float(v) for v in stretch], max_pieces=max_pieces,
                  **({"transpose": list(transpose)} if transpose else {}))
    key = _json_hash({"version": DATASET_VERSION, "encoding": encoding.to_dict(), "params": params,
                      "encoder": _encoder_fingerprint(), "corpus": _corpus_fingerprint(corpus, files)})
    if out is None:  # the folder name depends on the parameters only: a changed corpus rebuilds in place
        tag = "" if encoding == DEFAULT_ENCODING and params == DEFAULT_DATASET_PARAMS else \
            "-" + _json_hash({"encoding": encoding.to_dict(), "params": params})[:10]
        out = data_dir() / "datasets" / f"{corpus.name or 'corpus'}{tag}"
    out = Path(out)
    try:  # a folder built from the same corpus, parameters and encoder is reused
        if not force and load_dataset(out).index.get("key") == key:
            return out
    except (ConfigError, KeyError, TypeError):
        pass

    t0 = time.perf_counter()
    midis, rolls, skipped = _encode(corpus, files, encoding, params, progress)
    train_names, val_names = _split_pieces(list(rolls), val_fraction, seed)
    entries = {"train": _augment(train_names, midis, rolls, encoding, params, progress),
               "val": [(name, name, 1.0, rolls[name]) for name in val_names]}
    del midis
    splits, stats = _write_splits(out, entries, encoding)
    stats["corpus"] = _stats([rolls[name] for name in train_names + val_names], encoding)
    index = {"format": "pianolab-dataset", "version": DATASET_VERSION, "key": key, "corpus": str(corpus),
             "encoding": encoding.to_dict(), "params": params,
             "windows": "drawn inside single pieces; before a piece's first key state the window is silence",
             "splits": splits, "skipped": skipped,
             "stats": {part: dict(st, per_key=st["per_key"].tolist()) for part, st in stats.items()},
             "build_seconds": round(time.perf_counter() - t0, 2)}
    _io.write_bytes(out / "index.json", json.dumps(index, indent=1) + "\n")
    return out


def _encode(corpus, files, encoding, params, progress):
    """Step 1: ``(midis, rolls, skipped)``, the pieces encoded in the seeded order until ``max_pieces``
    are good; unreadable files are reported and listed."""
    by_name, max_pieces = {piece_name(p, corpus): p for p in files}, params["max_pieces"]
    order = np.random.default_rng(params["seed"]).permutation(len(files))
    midis, rolls, skipped = {}, {}, []
    bar = _io.progress(total=len(files) if max_pieces is None else max_pieces, enabled=progress,
                       desc=f"encoding {corpus.name or corpus}")
    try:
        for name in (piece_name(files[i], corpus) for i in order):
            if max_pieces is not None and len(rolls) >= max_pieces:
                break
            path = by_name[name]
            try:
                midis[name] = load_midi(path)
                rolls[name] = midi_to_roll(midis[name], encoding)
                bar.update(1)
            except MidiError as exc:
                skipped.append({"file": path.relative_to(corpus).as_posix(), "reason": exc.reason})
                print(f"skipping {path}: {exc.reason}", file=sys.stderr)
    finally:
        bar.close()
    if not rolls:
        raise ConfigError("corpus", f"none of the {len(files)} MIDI files under {corpus} could be encoded")
    return midis, rolls, sorted(skipped, key=lambda s: s["file"])


def _augment(names, midis, rolls, encoding, params, progress):
    """Step 3: the training entries ``(name, source, stretch, roll)``: each piece, its tempo-stretched
    clones and its transposed copies."""
    entries = []
    for name in _io.progress(names, enabled=progress and params["n_clones"] > 0, desc="tempo-stretched clones"):
        entries.append((name, name, 1.0, rolls[name]))
        for f in _stretch_factors(name, params["n_clones"], params["stretch"], params["seed"]):
            entries.append((f"{name}@x{f:.4f}", name, f, midi_to_roll(midis[name], encoding, time_scale=f)))
        entries += [(moved_name, name, 1.0, moved)
                    for moved_name, moved in _transposed(name, rolls[name], params.get("transpose", ()))]
    return entries


def _write_splits(out, entries, encoding):
    """Step 4: each split's rolls end to end as ``{split}.npy``; its index records and statistics."""
    splits, stats = {}, {}
    for split, rows in entries.items():
        records, pos = [], 0
        for name, source, f, roll in rows:
            records.append({"name": name, "source": source, "stretch": f, "start": pos, "stop": pos + roll.size})
            pos += roll.size
        _write_npy(out / f"{split}.npy", [roll for *_, roll in rows], pos)
        splits[split] = {"file": f"{split}.npy", "key_states": pos, "pieces": records}
        stats[split] = _stats([roll for *_, roll in rows], encoding, sum(e[0] == e[1] for e in rows))
    return splits, stats


def _write_npy(path, rolls, total):
    """Write the rolls laid end to end as one flat uint8 .npy, atomically."""
    with _io.atomic_path(path, suffix=".npy") as tmp:
        arr, pos = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total,)), 0
        for flat in map(roll_to_sequence, rolls):
            arr[pos:pos + flat.size], pos = flat, pos + flat.size
        arr.flush()
        del arr


def _stats(rolls, encoding, originals=None):
    k = encoding.n_keys
    per_key = sum((np.asarray(r).reshape(-1, k).sum(axis=0, dtype=np.int64) for r in rolls), np.zeros(k, np.int64))
    steps = sum(np.asarray(r).size for r in rolls) // k
    down, key_states = int(per_key.sum()), steps * k
    return {"pieces": len(rolls), "originals": len(rolls) if originals is None else int(originals),
            "steps": int(steps), "minutes": round(steps / encoding.steps_per_second / 60.0, 3),
            "key_states": int(key_states), "key_down": down,
            "key_down_rate": down / key_states if key_states else 0.0, "per_key": per_key}


def load_dataset(path=None):
    """Open a dataset folder written by :func:`build_dataset`, memory-mapped read-only; ``None`` opens
    (and if needed builds) the default dataset (chapter 04_training)."""
    path = Path(build_dataset(None, progress=False) if path is None else path)
    index = _io.read_json(path / "index.json")
    if not index or index.get("format") != "pianolab-dataset":
        raise ConfigError("dataset", f"{path} holds no pianolab dataset (index.json missing or unreadable); "
                                     f"build one with build_dataset() or `python -m pianolab data --out {path}`")
    if index.get("version") != DATASET_VERSION:
        raise ConfigError("dataset", f"{path} has format version {index.get('version')}, "
                                     f"this pianolab reads {DATASET_VERSION}: rebuild it with force=True")
    encoding, splits = Encoding.from_dict(index["encoding"]), {}
    for split in ("train", "val"):
        info = index["splits"][split]
        try:
            seq = np.load(path / info["file"], mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ConfigError("dataset", f"{path / info['file']}: cannot be read ({exc})") from None
        if seq.shape != (info["key_states"],) or seq.dtype != np.uint8:
            raise ConfigError("dataset", f"{path / info['file']}: expected {info['key_states']} uint8 "
                                         f"key states, found {seq.shape} {seq.dtype}")
        pieces = [(p["name"], int(p["start"]), int(p["stop"])) for p in info["pieces"]]
        splits[split] = Split(split, seq, pieces, encoding, list(info["pieces"]))
    return Dataset(path, splits["train"], splits["val"], encoding, index)


def dataset_statistics(split_or_dataset):
    """Statistics of a split or dataset (chapter 04_training): ``pieces``, ``originals``, ``steps``,
    ``minutes``, ``key_states``, ``key_down_rate``, ``per_key``; a :class:`Dataset`'s are its original
    pieces', with each split's under ``'train'`` and ``'val'``."""
    ds = split_or_dataset
    if isinstance(ds, Dataset):
        originals = [ds.train.piece(i) for i, e in enumerate(ds.train.entries) if e["name"] == e["source"]]
        out = _stats(originals + [ds.val.piece(i) for i in range(len(ds.val))], ds.encoding)
        out["train"], out["val"] = dataset_statistics(ds.train), dataset_statistics(ds.val)
        return out
    return _stats([ds.piece(i) for i in range(len(ds))], ds.encoding,
                  sum(1 for e in ds.entries if e["name"] == e["source"]) if ds.entries else None)


def dataset_from_rolls(train, val, encoding, name="rolls", transpose=()):
    """A :class:`Dataset` held in memory from ``{piece name: roll}`` dicts of training and validation
    pieces, e.g. a benchmark's, each training piece followed by its copy in every ``transpose`` shift
    that keeps its notes in the key window, as :func:`build_dataset` adds them (chapter 09_benchmarks)."""
    train = {piece: roll for name, original in train.items()
             for piece, roll in [(name, original), *_transposed(name, original, transpose)]}
    splits = []
    for split, rolls in (("train", train), ("val", val)):
        seqs = [roll_to_sequence(r) for r in rolls.values()]
        ends = np.cumsum([0] + [len(q) for q in seqs])
        pieces = [(n, int(a), int(b)) for n, a, b in zip(rolls, ends[:-1], ends[1:])]
        entries = [{"name": n, "source": n.split("@")[0], "start": a, "stop": b} for n, a, b in pieces]
        seq = np.concatenate(seqs) if seqs else np.zeros(0, np.uint8)
        splits.append(Split(split, seq.astype(np.uint8), pieces, encoding, entries))
    return Dataset(Path(name), *splits, encoding, {})
