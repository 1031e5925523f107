"""Corpora, datasets and training windows (chapter 04_training).

Three stages, each cached on disk and rebuilt only when its inputs change:

1. **A corpus** is a folder of MIDI files, searched recursively (``.mid`` / ``.midi``, any case).
   :func:`default_corpus` exports the built-in one once from the scores bundled with music21:
   the unique Bach chorales and the solo keyboard works of music21's corpus, repeats expanded, to
   ``data_dir()/corpus/default/`` (``chorales/*.mid``, ``keyboard/*.mid`` and ``manifest.json``).
2. **A dataset** (:func:`build_dataset`) encodes every piece of a corpus with
   :func:`pianolab.encoding.midi_to_roll`, splits the pieces (never their time steps) into a
   training and a validation set with a seeded shuffle, adds tempo-stretched clones of every
   training piece, and stores each split as ONE flat ``uint8`` array of key states (``train.npy``,
   ``val.npy``, memory-mappable) plus ``index.json`` that names every piece and where it starts and
   stops in the array. Files that are not readable MIDI are reported and skipped.
3. **Training windows** (:class:`WindowSampler`, a ``keras.utils.PyDataset``) cut
   ``(x, y)`` pairs out of a split. A window never mixes two pieces: it is drawn inside a single
   piece, and the part of it that reaches back before the piece's first key state is silence
   (zeros) -- which is exactly how a performance starts at generation time. With receptive field
   ``RF`` and ``N`` targets, think of the piece's sequence ``seq`` with ``RF`` zeros in front,
   ``P = [0] * RF + seq``; a window at ``s`` is ``x = P[s : s + RF + N - 1]`` and
   ``y = P[s + RF : s + RF + N] = seq[s : s + N]``, so output ``j`` of a 'valid' causal stack sees
   ``x[j : j + RF]`` and predicts the key state right after it. ``s`` runs over ``0 .. len(seq) - N``:
   the first key states of every piece are trained too. A piece shorter than ``N`` key states gets
   more zeros in front, so its single window ends on its last key state.
"""

import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _io
from .encoding import DEFAULT_ENCODING, Encoding, load_midi, midi_to_roll, roll_to_sequence
from .errors import ConfigError, MidiError, PianolabError
from .settings import data_dir

# Bump when the exported corpus would change (list of works, export rules): old caches rebuild.
CORPUS_VERSION = 2
# music21 writes 10,080 MIDI ticks per quarter note; pretty_midi's load time grows with the tick
# count (a chorale took 0.4 s to read), so the export is re-timed to 480 ticks per quarter
# (about 1 ms at 120 bpm, far below one 48-steps-per-second time step).
TICKS_PER_QUARTER = 480
# Bump when the dataset format or encoding pipeline changes.
DATASET_VERSION = 1

MIDI_SUFFIXES = (".mid", ".midi")

# Solo keyboard works of music21's corpus (names as music21.corpus.parse takes them). Works missing
# from an installed music21 are reported in the manifest and skipped.
KEYBOARD_WORKS = (
    "bach/bwv846",  # J. S. Bach, Prelude in C major, BWV 846 (Well-Tempered Clavier I)
    "chopin/mazurka06-2",  # Chopin, Mazurka op. 6 no. 2
    "cpebach/h186",  # C. P. E. Bach, H. 186
    "joplin/maple_leaf_rag",  # Joplin, Maple Leaf Rag
    "mozart/k545/movement1_exposition",  # Mozart, Sonata K. 545, 1st movement (exposition)
    "schoenberg/opus19/movement2",  # Schoenberg, Six Little Piano Pieces op. 19
    "schoenberg/opus19/movement6",
    "schumann_clara/polonaise_op1n1",  # Clara Schumann, Polonaises op. 1
    "schumann_clara/polonaise_op1n2",
    "schumann_clara/polonaise_op1n3",
    "schumann_clara/polonaise_op1n4",
)
# When a corpus name matches several files, prefer this format.
_FORMAT_PREFERENCE = (".mxl", ".musicxml", ".xml", ".krn", ".mei", ".abc")


# ----------------------------------------------------------------------------------------------
# Small helpers: atomic writes, JSON, hashing
# ----------------------------------------------------------------------------------------------


_atomic_write_bytes = _io.write_bytes


def _atomic_write_json(path, obj):
    text = json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=True) + "\n"
    return _atomic_write_bytes(path, text.encode("utf-8"))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _progress(iterable=None, *, enabled, total=None, desc=None, unit="piece"):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def _music21_version():
    from importlib import metadata

    try:
        return metadata.version("music21")
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------
# Corpora
# ----------------------------------------------------------------------------------------------


def midi_files(folder):
    """All MIDI files under ``folder``, recursively, sorted by relative path (chapter 04_training).

    A file counts when its name ends in ``.mid`` or ``.midi`` (any case); hidden files and folders
    (names starting with '.') are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("corpus", f"{folder} is not a folder of MIDI files")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(MIDI_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def piece_name(path, folder):
    """A piece's name in a corpus: its path relative to the corpus folder, without the suffix
    (chapter 04_training)."""
    rel = Path(path).relative_to(folder).as_posix()
    return rel.rsplit(".", 1)[0]


def _resolve_work(name):
    """The file of a music21 corpus work ``name`` ('bach/bwv10.7'), or None when absent."""
    from music21 import corpus

    try:
        found = corpus.getWork(name)
    except Exception:
        return None
    candidates = found if isinstance(found, list) else [found]
    candidates = [Path(p) for p in candidates if p]
    stem = name.rsplit("/", 1)[-1]
    exact = [p for p in candidates if p.stem == stem]
    pool = exact or candidates
    if not pool:
        return None

    def rank(p):
        suffix = p.suffix.lower()
        order = _FORMAT_PREFERENCE.index(suffix) if suffix in _FORMAT_PREFERENCE else len(_FORMAT_PREFERENCE)
        return (order, p.name)

    return sorted(pool, key=rank)[0]


def corpus_sources():
    """The works of the default corpus: ``(sources, missing)`` (chapter 04_training).

    ``sources`` is a sorted list of dicts ``{"name", "work", "path"}``: ``name`` is the piece's
    name in the exported corpus ('chorales/bwv10.7', 'keyboard/joplin_maple_leaf_rag'), ``work``
    music21's name and ``path`` the score file. music21's chorale iterator lists 371 chorales but
    only 350 distinct files (some chorales appear under two catalogue numbers); every file is
    taken once. ``missing`` lists keyboard works this music21 installation does not have.
    """
    from music21 import corpus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chorale_names = list(corpus.chorales.Iterator(returnType="filename"))
    sources, seen, missing = [], set(), []
    works = [(w, "chorales") for w in sorted(set(chorale_names))] + [(w, "keyboard") for w in KEYBOARD_WORKS]
    for work, kind in works:
        path = _resolve_work(work)
        if path is None:
            missing.append(work)
            continue
        if path in seen:  # the chorale iterator names some files twice
            continue
        seen.add(path)
        name = path.stem if kind == "chorales" else work.replace("/", "_")
        sources.append({"name": f"{kind}/{name}", "work": work, "path": str(path)})
    names = [s["name"] for s in sources]
    if len(set(names)) != len(names):  # two files with the same stem: keep names unique
        raise PianolabError(f"default corpus: duplicate piece names {sorted(n for n in names if names.count(n) > 1)}")
    sources.sort(key=lambda s: s["name"])
    return sources, missing


def _export_work(source):
    """Worker: one music21 score -> MIDI bytes. Returns a dict with 'midi' bytes or 'error'."""
    import io

    import music21
    import pretty_midi
    from music21 import converter, repeat, stream

    out = {"name": source["name"], "work": source["work"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = converter.parse(source["path"])
            has_repeats = any(True for _ in score.recurse().getElementsByClass(
                (repeat.RepeatMark, music21.spanner.RepeatBracket)))
            try:
                # music21's MIDI export expands repeats itself (Stream.expandRepeats).
                data = music21.midi.translate.streamToMidiFile(score).writestr()
                out["repeats"] = "expanded" if has_repeats else "none"
            except repeat.ExpanderException as exc:
                # Badly formed repeat marks: export the score as written (parts flattened, so the
                # exporter does not try to expand again).
                flat = stream.Score()
                for part in score.parts:
                    flat.insert(0, part.flatten())
                data = music21.midi.translate.streamToMidiFile(flat).writestr()
                out["repeats"] = f"not expanded ({exc})"
            data = _retime_midi(data, TICKS_PER_QUARTER)
            pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
        midi_to_roll(pm)  # raises MidiError when nothing lands in the key window
        out["seconds"] = round(float(pm.get_end_time()), 3)
        out["notes"] = int(sum(len(i.notes) for i in pm.instruments if not i.is_drum))
        out["midi"] = data
    except Exception as exc:  # any failure of one piece: report it, go on with the others
        reason = str(exc).strip() or type(exc).__name__
        out["error"] = f"{type(exc).__name__}: {reason}"
    return out


def _retime_midi(data, ticks_per_quarter):
    """MIDI bytes with every event moved to the nearest tick of a new resolution (order kept)."""
    import io

    import mido

    src = mido.MidiFile(file=io.BytesIO(data))
    old = src.ticks_per_beat
    if old == ticks_per_quarter:
        return data
    out = mido.MidiFile(type=src.type, ticks_per_beat=ticks_per_quarter)
    for track in src.tracks:
        new_track = mido.MidiTrack()
        now = prev = 0
        for msg in track:
            now += msg.time
            tick = (2 * now * ticks_per_quarter + old) // (2 * old)  # round half up, in integers
            new_track.append(msg.copy(time=tick - prev))
            prev = tick
        out.tracks.append(new_track)
    buf = io.BytesIO()
    out.save(file=buf)
    return buf.getvalue()


def _corpus_cache_valid(folder, manifest):
    """True when ``manifest`` describes the corpus this pianolab/music21 would build, all present."""
    if not manifest or manifest.get("format") != "pianolab-corpus":
        return False
    if manifest.get("version") != CORPUS_VERSION or manifest.get("music21") != _music21_version():
        return False
    if list(manifest.get("keyboard_works", [])) != list(KEYBOARD_WORKS):
        return False
    if manifest.get("ticks_per_quarter") != TICKS_PER_QUARTER:
        return False
    for piece in manifest.get("pieces", []):
        path = folder / piece["file"]
        try:
            if path.stat().st_size != piece["bytes"]:
                return False
        except OSError:
            return False
    return bool(manifest.get("pieces"))


def default_corpus_dir():
    """Where :func:`default_corpus` keeps the exported MIDI files: ``data_dir()/corpus/default``
    (chapter 01_encoding)."""
    return data_dir() / "corpus" / "default"


def default_corpus(progress=True, force=False, *, folder=None, sources=None, workers=None):
    """Export the built-in corpus to MIDI once and return its folder (chapter 04_training).

    The corpus is made of music21's bundled scores: the unique Bach chorales and the solo keyboard
    works listed in :data:`KEYBOARD_WORKS`, repeats expanded (a score whose repeat marks music21
    cannot expand is exported as written, and the manifest says so). A score that fails to convert
    is reported with a warning, listed under ``failed`` in ``manifest.json`` and skipped.

    The export is deterministic: the same music21 gives the same bytes, in fixed file names,
    written atomically, the manifest last. A folder whose manifest matches (format version,
    music21 version, list of works, every file present with its recorded size) is reused as is;
    ``force=True`` rebuilds. ``folder`` (default ``data_dir()/corpus/default``) and ``sources``
    (default :func:`corpus_sources`) exist for tests and small builds; ``workers`` processes
    (default: 2 when there are two or more CPU cores) share the work.
    """
    folder = Path(folder) if folder is not None else default_corpus_dir()
    manifest_path = folder / "manifest.json"
    custom = sources is not None
    if not force and not custom and _corpus_cache_valid(folder, _read_json(manifest_path)):
        return folder

    t0 = time.perf_counter()
    missing = []
    if sources is None:
        sources, missing = corpus_sources()
    sources = sorted(sources, key=lambda s: s["name"])
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    workers = max(1, min(int(workers), len(sources) or 1))

    folder.mkdir(parents=True, exist_ok=True)
    pieces, failed = [], []
    bar = _progress(total=len(sources), enabled=progress, desc="default corpus (music21 -> MIDI)")
    try:
        if workers > 1:
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(workers) as pool:
                results = pool.imap(_export_work, sources, chunksize=1)
                for res in results:
                    _store_export(folder, res, pieces, failed)
                    bar.update(1)
        else:
            for source in sources:
                _store_export(folder, _export_work(source), pieces, failed)
                bar.update(1)
    finally:
        bar.close()

    # Remove stale MIDI files of an earlier build (only inside the corpus' own subfolders).
    keep = {p["file"] for p in pieces}
    for path in midi_files(folder):
        rel = path.relative_to(folder).as_posix()
        if rel not in keep:
            path.unlink()

    for work in missing:
        failed.append({"name": None, "work": work, "reason": "not in this music21 corpus"})
    for f in failed:
        warnings.warn(f"default corpus: skipped {f['work']}: {f['reason']}", stacklevel=2)
    manifest = {
        "format": "pianolab-corpus",
        "version": CORPUS_VERSION,
        "music21": _music21_version(),
        "keyboard_works": list(KEYBOARD_WORKS),
        "ticks_per_quarter": TICKS_PER_QUARTER,
        "description": "Bach chorales (unique files of music21's chorale iterator) and the solo "
                       "keyboard works of music21's corpus, repeats expanded, exported with "
                       "music21.midi.translate and re-timed to 480 ticks per quarter note.",
        "pieces": pieces,
        "failed": failed,
        "seconds": round(sum(p["seconds"] for p in pieces), 3),
    }
    if custom:
        manifest["custom_sources"] = True  # a partial build: never taken for the full cache
        manifest["version"] = None
    _atomic_write_json(manifest_path, manifest)
    if progress:
        print(f"default corpus: {len(pieces)} pieces, {manifest['seconds'] / 60:.1f} minutes, "
              f"{len(failed)} skipped, built in {time.perf_counter() - t0:.1f} s -> {folder}",
              file=sys.stderr)
    return folder


def _store_export(folder, res, pieces, failed):
    if "error" in res:
        failed.append({"name": res["name"], "work": res["work"], "reason": res["error"]})
        return
    rel = res["name"] + ".mid"
    data = res.pop("midi")
    path = folder / rel
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        _atomic_write_bytes(path, data)
    pieces.append({"name": res["name"], "work": res["work"], "file": rel, "bytes": len(data),
                   "sha256": _sha256(data), "seconds": res["seconds"], "notes": res["notes"],
                   "repeats": res["repeats"]})


def corpus_manifest(folder=None):
    """The manifest of an exported default corpus (dict), or None for a plain MIDI folder
    (chapter 01_encoding)."""
    folder = Path(folder) if folder is not None else default_corpus_dir()
    return _read_json(folder / "manifest.json")


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Split:
    """One split of a dataset (chapter 04_training).

    ``sequence`` is the flat ``uint8`` key-state array (memory-mapped from ``train.npy`` /
    ``val.npy``), ``pieces`` a list of ``(name, start, stop)`` in key states, ``encoding`` the
    :class:`~pianolab.encoding.Encoding`. ``entries`` holds the index's full records (source piece,
    tempo-stretch factor).
    """

    name: str
    sequence: np.ndarray
    pieces: list
    encoding: Encoding
    entries: list = field(default_factory=list)

    def __len__(self):
        return len(self.pieces)

    def piece(self, i):
        """Piece ``i`` (an index or a name) as a flat key-state array."""
        if isinstance(i, str):
            names = [p[0] for p in self.pieces]
            if i not in names:
                raise KeyError(f"no piece {i!r} in the {self.name} split")
            i = names.index(i)
        _, a, b = self.pieces[i]
        return self.sequence[a:b]

    def roll(self, i):
        """Piece ``i`` as a piano roll ``[time steps, keys]``."""
        return np.asarray(self.piece(i)).reshape(-1, self.encoding.n_keys)

    @property
    def key_states(self):
        return int(self.sequence.shape[0])

    @property
    def key_down_rate(self):
        """Fraction of key states that are 1."""
        n = self.key_states
        return float(np.count_nonzero(self.sequence) / n) if n else 0.0


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
        """Fraction of 1s over the training split (the base rate a calibrated output bias uses)."""
        stats = self.index.get("stats", {}).get("train")
        if stats and stats.get("key_states") == self.train.key_states:
            return float(stats["key_down_rate"])
        return self.train.key_down_rate

    @property
    def skipped(self):
        """Files of the corpus that could not be encoded: list of ``{"file", "reason"}``."""
        return list(self.index.get("skipped", []))


def _check_params(val_fraction, n_clones, stretch, max_pieces):
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ConfigError("val_fraction", f"expected a number in [0, 1), got {val_fraction!r}")
    if not (isinstance(n_clones, int) and n_clones >= 0):
        raise ConfigError("n_clones", f"expected an integer >= 0, got {n_clones!r}")
    try:
        lo, hi = (float(v) for v in stretch)
    except (TypeError, ValueError):
        raise ConfigError("stretch", f"expected two factors (low, high), got {stretch!r}") from None
    if not (0 < lo <= hi):
        raise ConfigError("stretch", f"expected 0 < low <= high, got {stretch!r}")
    if max_pieces is not None and not (isinstance(max_pieces, int) and max_pieces >= 1):
        raise ConfigError("max_pieces", f"expected an integer >= 1 or None, got {max_pieces!r}")
    return lo, hi


def _name_seed(name):
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def stretch_factors(name, n_clones, stretch=(0.85, 1.15), seed=0):
    """The tempo-stretch factors of a training piece's clones (chapter 04_training).

    The range is cut into ``n_clones`` equal slices and one factor is drawn uniformly in each, from
    a generator seeded by ``seed`` and the piece's name: spread over the whole range, reproducible,
    and independent of the other pieces. A factor above 1 plays slower (longer piece).
    """
    lo, hi = float(stretch[0]), float(stretch[1])
    rng = np.random.default_rng([int(seed), _name_seed(name)])
    u = rng.random(n_clones)
    return [round(lo + (hi - lo) * (c + u[c]) / n_clones, 6) for c in range(n_clones)]


def split_pieces(names, val_fraction=0.1, seed=0):
    """Split piece names into (train, val) lists by a seeded shuffle (chapter 04_training).

    ``round(len(names) * val_fraction)`` pieces (at least one when ``val_fraction > 0`` and
    there are two pieces or more, never all of them) go to validation. Both lists come back sorted.
    """
    names = sorted(names)
    n = len(names)
    order = np.random.default_rng(int(seed)).permutation(n)
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


def _corpus_fingerprint(folder, files):
    h = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        h.update(path.relative_to(folder).as_posix().encode("utf-8"))
        h.update(b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _encoder_fingerprint():
    """Hash of pianolab/encoding.py: a changed encoder must not be served a stale dataset."""
    from . import encoding as _encoding

    return _sha256(Path(_encoding.__file__).read_bytes())


DEFAULT_DATASET_PARAMS = dict(val_fraction=0.1, seed=0, n_clones=5, stretch=(0.85, 1.15),
                              max_pieces=None, sustain=False, out_of_range="fold")


def _dataset_valid(out, key):
    index = _read_json(out / "index.json")
    if not index or index.get("key") != key or index.get("version") != DATASET_VERSION:
        return False
    for split in ("train", "val"):
        info = index["splits"][split]
        path = out / info["file"]
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        if arr.shape != (info["key_states"],) or arr.dtype != np.uint8:
            return False
    return True


def build_dataset(corpus=None, out=None, *, encoding=DEFAULT_ENCODING, val_fraction=0.1, seed=0,
                  n_clones=5, stretch=(0.85, 1.15), max_pieces=None, progress=True, force=False,
                  sustain=False, out_of_range="fold"):
    """Encode a corpus into a dataset folder and return it (chapter 04_training).

    ``corpus``: a folder of MIDI files (default: :func:`default_corpus`). Every file is encoded
    with ``encoding`` (``sustain`` and ``out_of_range`` as in
    :func:`~pianolab.encoding.midi_to_roll`); one that raises :class:`~pianolab.errors.MidiError`
    is reported with a warning, listed under ``skipped`` in the index and left out.
    ``max_pieces`` keeps that many pieces, the first ones of a seeded shuffle.

    Pieces (not time steps) are split into training and validation by :func:`split_pieces`.
    Every training piece is stored as is plus ``n_clones`` tempo-stretched copies with factors
    from :func:`stretch_factors` in ``stretch``; validation pieces are not stretched.

    Output, in ``out`` (default ``data_dir()/datasets/<corpus folder name>``, with a parameter hash
    appended when the parameters are not the defaults): ``train.npy`` and ``val.npy``, flat
    ``uint8`` arrays of key states, each piece's roll flattened time-major and the pieces laid end
    to end; ``index.json`` with the encoding, the parameters, every piece's ``name``, ``source``,
    ``stretch``, ``start`` and ``stop`` (in key states), the skipped files and the statistics. The
    folder is a cache keyed on the corpus contents and every parameter: a matching one is reused
    unless ``force`` (the key also covers the source of :mod:`pianolab.encoding`, so a changed
    encoder rebuilds). Files are written atomically, the index last.
    """
    lo, hi = _check_params(val_fraction, n_clones, stretch, max_pieces)
    if out_of_range not in ("fold", "drop"):
        raise ConfigError("out_of_range", f"expected 'fold' or 'drop', got {out_of_range!r}")
    if not isinstance(encoding, Encoding):
        encoding = Encoding.from_dict(dict(encoding))
    if corpus is None:
        corpus = default_corpus(progress=progress)
    corpus = Path(corpus)
    files = midi_files(corpus)
    if not files:
        raise ConfigError("corpus", f"no MIDI files (.mid, .midi) under {corpus}")

    params = dict(val_fraction=float(val_fraction), seed=int(seed), n_clones=int(n_clones),
                  stretch=[lo, hi], max_pieces=max_pieces, sustain=bool(sustain),
                  out_of_range=out_of_range)
    key = _sha256(json.dumps({
        "version": DATASET_VERSION, "encoding": encoding.to_dict(), "params": params,
        "encoder": _encoder_fingerprint(), "corpus": _corpus_fingerprint(corpus, files)},
        sort_keys=True).encode("utf-8"))
    if out is None:
        name = corpus.name or "corpus"
        is_default = (encoding == DEFAULT_ENCODING and params == dict(
            DEFAULT_DATASET_PARAMS, stretch=list(DEFAULT_DATASET_PARAMS["stretch"])))
        # The folder name depends on the parameters only: a changed corpus rebuilds in place.
        tag = _sha256(json.dumps({"encoding": encoding.to_dict(), "params": params},
                                 sort_keys=True).encode("utf-8"))[:10]
        out = data_dir() / "datasets" / (name if is_default else f"{name}-{tag}")
    out = Path(out)
    if not force and _dataset_valid(out, key):
        return out

    t0 = time.perf_counter()
    by_name = {piece_name(p, corpus): p for p in files}
    order = np.random.default_rng(int(seed)).permutation(len(files))
    shuffled = [piece_name(files[i], corpus) for i in order]

    # Encode pieces in the seeded order until max_pieces good ones are collected.
    rolls, midis, skipped = {}, {}, []
    bar = _progress(total=len(shuffled) if max_pieces is None else max_pieces, enabled=progress,
                    desc=f"encoding {corpus.name or corpus}")
    try:
        for name in shuffled:
            if max_pieces is not None and len(rolls) >= max_pieces:
                break
            path = by_name[name]
            try:
                pm = load_midi(path)
                rolls[name] = midi_to_roll(pm, encoding, sustain=sustain, out_of_range=out_of_range)
                midis[name] = pm
                bar.update(1)
            except MidiError as exc:
                skipped.append({"file": path.relative_to(corpus).as_posix(), "reason": exc.reason})
                warnings.warn(f"skipping {path}: {exc.reason}", stacklevel=2)
    finally:
        bar.close()
    if not rolls:
        raise ConfigError("corpus", f"none of the {len(files)} MIDI files under {corpus} could be encoded")
    skipped.sort(key=lambda s: s["file"])

    train_names, val_names = split_pieces(list(rolls), val_fraction, seed)
    train_entries = []
    for name in _progress(train_names, enabled=progress and n_clones > 0, desc="tempo-stretched clones"):
        train_entries.append((name, name, 1.0, rolls[name]))
        for c, f in enumerate(stretch_factors(name, n_clones, (lo, hi), seed)):
            clone = midi_to_roll(midis[name], encoding, sustain=sustain, out_of_range=out_of_range,
                                 time_scale=f)
            train_entries.append((f"{name}@x{f:.4f}", name, f, clone))
    val_entries = [(name, name, 1.0, rolls[name]) for name in val_names]
    del midis

    out.mkdir(parents=True, exist_ok=True)
    splits, stats = {}, {}
    for split, entries in (("train", train_entries), ("val", val_entries)):
        records, pos = [], 0
        for name, source, f, roll in entries:
            n = roll.size
            records.append({"name": name, "source": source, "stretch": f, "start": pos, "stop": pos + n})
            pos += n
        _write_npy(out / f"{split}.npy", [roll for *_, roll in entries], pos)
        splits[split] = {"file": f"{split}.npy", "key_states": pos, "pieces": records}
        stats[split] = _stats_of_rolls([roll for *_, roll in entries], [e[2] == 1.0 for e in entries],
                                       encoding)
    originals = [roll for _, _, f, roll in train_entries if f == 1.0] + [r for *_, r in val_entries]
    stats["corpus"] = _stats_of_rolls(originals, [True] * len(originals), encoding)

    index = {
        "format": "pianolab-dataset",
        "version": DATASET_VERSION,
        "key": key,
        "corpus": str(corpus),
        "encoding": encoding.to_dict(),
        "params": params,
        "windows": "drawn inside single pieces; before a piece's first key state the window is silence",
        "splits": splits,
        "skipped": skipped,
        "stats": stats,
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    _atomic_write_json(out / "index.json", index)
    return out


def _write_npy(path, rolls, total):
    """Write the rolls laid end to end as one flat uint8 .npy, atomically."""
    with _io.atomic_path(path, suffix=".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total,))
        pos = 0
        for roll in rolls:
            flat = roll_to_sequence(roll)
            arr[pos:pos + flat.size] = flat
            pos += flat.size
        arr.flush()
        del arr


def _stats_of_rolls(rolls, is_original, encoding):
    per_key = np.zeros(encoding.n_keys, dtype=np.int64)
    steps = 0
    for roll in rolls:
        per_key += roll.sum(axis=0, dtype=np.int64)
        steps += roll.shape[0]
    key_states = steps * encoding.n_keys
    down = int(per_key.sum())
    return {
        "pieces": len(rolls),
        "originals": int(sum(bool(x) for x in is_original)),
        "steps": int(steps),
        "minutes": round(steps / encoding.steps_per_second / 60.0, 3),
        "key_states": int(key_states),
        "key_down": down,
        "key_down_rate": down / key_states if key_states else 0.0,
        "per_key": per_key.tolist(),
    }


def default_dataset(progress=True, force=False):
    """The dataset of the default corpus with the default parameters, built when missing
    (chapter 04_training)."""
    return build_dataset(None, progress=progress, force=force)


def load_dataset(path=None):
    """Open a dataset folder written by :func:`build_dataset` (chapter 04_training).

    The arrays are memory-mapped read-only (``np.load(..., mmap_mode='r')``): opening costs
    nothing and many processes share the pages. ``path=None`` opens (and if needed builds) the
    default dataset.
    """
    if path is None:
        path = default_dataset(progress=False)
    path = Path(path)
    index = _read_json(path / "index.json")
    if not index or index.get("format") != "pianolab-dataset":
        raise ConfigError("dataset", f"{path} holds no pianolab dataset (index.json missing or unreadable); "
                                     "build one with build_dataset() or `python -m pianolab data`")
    if index.get("version") != DATASET_VERSION:
        raise ConfigError("dataset", f"{path} has format version {index.get('version')}, "
                                     f"this pianolab reads {DATASET_VERSION}: rebuild it with force=True")
    encoding = Encoding.from_dict(index["encoding"])
    splits = {}
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


def statistics(split_or_dataset):
    """Statistics of a split or a dataset (chapter 04_training).

    Returns ``pieces`` (stored pieces, clones included), ``originals`` (pieces at their own tempo),
    ``minutes``, ``key_states``, ``key_down_rate`` (fraction of 1s, about 4% for the default
    corpus) and ``per_key`` (how many time steps each key is down, an ``int64`` array of
    ``n_keys``). For a :class:`Dataset` the figures are those of its pieces at their own tempo
    (training originals plus validation: the corpus as encoded), with the same figures of each
    split under ``'train'`` and ``'val'``.
    """
    if isinstance(split_or_dataset, Dataset):
        ds = split_or_dataset
        train, val = statistics(ds.train), statistics(ds.val)
        keep = [i for i, e in enumerate(ds.train.entries) if float(e.get("stretch", 1.0)) == 1.0]
        parts = [(ds.train, i) for i in keep] + [(ds.val, i) for i in range(len(ds.val))]
        out = _stats_of_parts(parts, ds.encoding)
        out["train"], out["val"] = train, val
        return out
    if isinstance(split_or_dataset, Split):
        split = split_or_dataset
        out = _stats_of_parts([(split, i) for i in range(len(split))], split.encoding)
        if split.entries:
            out["originals"] = sum(1 for e in split.entries if float(e.get("stretch", 1.0)) == 1.0)
        return out
    raise TypeError(f"statistics() takes a Split or a Dataset, got {type(split_or_dataset).__name__}")


def _stats_of_parts(parts, encoding):
    k = encoding.n_keys
    per_key = np.zeros(k, dtype=np.int64)
    steps = 0
    for split, i in parts:
        _, a, b = split.pieces[i]
        roll = np.asarray(split.sequence[a:b]).reshape(-1, k)
        per_key += roll.sum(axis=0, dtype=np.int64)
        steps += roll.shape[0]
    key_states = steps * k
    down = int(per_key.sum())
    return {
        "pieces": len(parts),
        "originals": len(parts),
        "steps": steps,
        "minutes": steps / encoding.steps_per_second / 60.0,
        "key_states": key_states,
        "key_down_rate": down / key_states if key_states else 0.0,
        "per_key": per_key,
    }


# ----------------------------------------------------------------------------------------------
# Training windows
# ----------------------------------------------------------------------------------------------


class Windows:
    """The numpy core of :class:`WindowSampler`: which windows exist and how one is cut
    (chapter 04_training).

    For piece ``p`` of ``L`` key states the window at ``u`` (the position of its first target in the
    piece) has ``x = seq[u - RF : u + N - 1]`` and ``y = seq[u : u + N]``, positions before 0 being
    silence; ``u`` runs over ``min(0, L - N) .. L - N``. All windows of the split are equally
    likely to be drawn.
    """

    def __init__(self, split, receptive_field, n_targets):
        receptive_field, n_targets = int(receptive_field), int(n_targets)
        if receptive_field < 1:
            raise ConfigError("receptive_field", f"expected an integer >= 1, got {receptive_field}")
        if n_targets < 1:
            raise ConfigError("n_targets", f"expected an integer >= 1, got {n_targets}")
        if not split.pieces:
            raise ConfigError("split", f"the {split.name} split has no pieces to draw windows from")
        self.split = split
        self.sequence = split.sequence
        self.receptive_field = receptive_field
        self.n_targets = n_targets
        self.starts = np.array([a for _, a, _ in split.pieces], dtype=np.int64)
        self.lengths = np.array([b - a for _, a, b in split.pieces], dtype=np.int64)
        self.first_u = np.minimum(0, self.lengths - n_targets)  # first target position
        counts = self.lengths - n_targets - self.first_u + 1  # >= 1 per piece
        self.cum = np.cumsum(counts)
        self.n_windows = int(self.cum[-1])

    @property
    def window_length(self):
        return self.receptive_field + self.n_targets - 1

    def locate(self, window_ids):
        """Global window numbers -> (piece index, first target position ``u``) arrays."""
        window_ids = np.asarray(window_ids, dtype=np.int64)
        p = np.searchsorted(self.cum, window_ids, side="right")
        before = np.where(p > 0, self.cum[np.maximum(p - 1, 0)], 0)
        return p, self.first_u[p] + (window_ids - before)

    def cut(self, pieces, us, out_x=None, out_y=None):
        """Windows (piece ``pieces[i]``, first target ``us[i]``) -> uint8 ``x [B, RF+N-1]``, ``y [B, N]``."""
        rf, n = self.receptive_field, self.n_targets
        b = len(pieces)
        x = np.zeros((b, rf + n - 1), dtype=np.uint8) if out_x is None else out_x
        y = np.zeros((b, n), dtype=np.uint8) if out_y is None else out_y
        seq = self.sequence
        for i, (p, u) in enumerate(zip(pieces, us)):
            a = int(self.starts[p])
            u = int(u)
            lo = u - rf  # piece position of x[0]
            skip = max(0, -lo)
            if skip:
                x[i, :skip] = 0
            x[i, skip:] = seq[a + lo + skip:a + u + n - 1]
            yskip = max(0, -u)
            if yskip:
                y[i, :yskip] = 0
            y[i, yskip:] = seq[a + u + yskip:a + u + n]
        return x, y

    def sample(self, rng, batch_size):
        """Draw ``batch_size`` windows uniformly from all windows: (pieces, us)."""
        ids = rng.integers(0, self.n_windows, size=int(batch_size))
        return self.locate(ids)


def _window_sampler_class():
    import keras

    class WindowSampler(keras.utils.PyDataset):
        """Random training windows of a split, as a ``keras.utils.PyDataset`` (chapter 04_training).

        Batch ``i`` is ``(x float32 [B, RF+N-1, 1], y float32 [B, N, 1])``: ``B`` windows drawn
        uniformly from all windows of the split (see :class:`Windows`), each inside a single piece,
        aligned so that output ``j`` of a model with receptive field ``RF`` and 'valid' padding sees
        ``x[j : j+RF]`` and predicts ``y[j]``, the key state right after. Batch contents depend only
        on ``(seed, global step, batch size)``: the sampler is deterministic, and a resumed run gets
        the same batches (``batch_at(step)``). ``set_batch_size(b)`` changes the batch size
        (batch-size ramp). ``steps_per_epoch`` (default: enough batches to cover the split's key
        states once) is ``len(sampler)``; ``on_epoch_end`` moves on to the next block of steps.
        Extra keyword arguments (``workers``, ``use_multiprocessing``, ``max_queue_size``) go to
        ``PyDataset``. Works on every Keras backend: the batches are numpy arrays.
        """

        def __init__(self, split, receptive_field, n_targets, batch_size, *, seed=0,
                     steps_per_epoch=None, **kwargs):
            super().__init__(**kwargs)
            self.windows = Windows(split, receptive_field, n_targets)
            self.split = split
            self.receptive_field = self.windows.receptive_field
            self.n_targets = self.windows.n_targets
            self.seed = int(seed)
            self.set_batch_size(batch_size)
            if steps_per_epoch is None:
                steps_per_epoch = max(1, math.ceil(split.sequence.shape[0] / (self.batch_size * self.n_targets)))
            if not (isinstance(steps_per_epoch, (int, np.integer)) and steps_per_epoch >= 1):
                raise ConfigError("steps_per_epoch", f"expected an integer >= 1, got {steps_per_epoch!r}")
            self.steps_per_epoch = int(steps_per_epoch)
            self.epoch = 0

        def set_batch_size(self, batch_size):
            """Windows per batch from now on (the trainer's batch-size ramp)."""
            if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
                raise ConfigError("batch_size", f"expected an integer >= 1, got {batch_size!r}")
            self.batch_size = int(batch_size)

        def __len__(self):
            return self.steps_per_epoch

        def batch_at(self, step, batch_size=None):
            """The batch of global step ``step``: a pure function of (seed, step, batch size)."""
            b = self.batch_size if batch_size is None else int(batch_size)
            rng = np.random.default_rng([self.seed, int(step)])
            pieces, us = self.windows.sample(rng, b)
            x, y = self.windows.cut(pieces, us)
            return (x.astype(np.float32)[..., None], y.astype(np.float32)[..., None])

        def __getitem__(self, idx):
            if idx < 0 or idx >= self.steps_per_epoch:
                raise IndexError(f"batch {idx} out of range 0..{self.steps_per_epoch - 1}")
            return self.batch_at(self.epoch * self.steps_per_epoch + int(idx))

        def on_epoch_end(self):
            self.epoch += 1

    WindowSampler.__module__ = __name__
    return WindowSampler


def __getattr__(name):
    # WindowSampler subclasses keras.utils.PyDataset; it is created on first use so that importing
    # pianolab.data (and `python -m pianolab data`) does not import Keras and TensorFlow.
    if name == "WindowSampler":
        cls = _window_sampler_class()
        globals()["WindowSampler"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def evaluation_windows(split, receptive_field, n_targets, batch_size=8):
    """Windows that score every key state of a split exactly once (chapter 04_training).

    Yields ``(x float32 [B, RF+N-1, 1], y float32 [B, N, 1], weight float32 [B, N])`` in a fixed
    order: each piece is tiled by consecutive windows (first target positions 0, N, 2N, ...); the
    last window of a piece is moved back to end on its last key state, and the targets it shares
    with the window before get weight 0. ``sum(weight * loss) / sum(weight)`` is the loss per key
    state of the whole split.
    """
    w = Windows(split, receptive_field, n_targets)
    n = w.n_targets
    plan = []
    for p, length in enumerate(w.lengths):
        length = int(length)
        if length <= n:
            plan.append((p, length - n, max(0, n - length), n))
            continue
        u = 0
        while u + n <= length:
            plan.append((p, u, 0, n))
            u += n
        if u < length:
            plan.append((p, length - n, n - (length - u), n))
    for i in range(0, len(plan), batch_size):
        chunk = plan[i:i + batch_size]
        x, y = w.cut([c[0] for c in chunk], [c[1] for c in chunk])
        weight = np.zeros((len(chunk), n), dtype=np.float32)
        for j, (_, _, a, b) in enumerate(chunk):
            weight[j, a:b] = 1.0
        yield x.astype(np.float32)[..., None], y.astype(np.float32)[..., None], weight


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def cli_data(args):
    """``python -m pianolab data [--corpus DIR] [--out DIR] [--force] [--no-dataset] [--quiet]``
    (chapter 04_training): build (or check) the corpus and the dataset, print a summary."""
    progress = not getattr(args, "quiet", False)
    force = bool(getattr(args, "force", False))
    t0 = time.perf_counter()
    if getattr(args, "corpus", None):
        corpus = Path(args.corpus).expanduser()
        if not corpus.is_dir():
            raise ConfigError("--corpus", f"{corpus} is not a folder (expected a folder of MIDI files)")
        n_files = len(midi_files(corpus))
        if n_files == 0:
            raise ConfigError("--corpus", f"no MIDI files (.mid, .midi) under {corpus}")
        print(f"corpus: {n_files} MIDI files in {corpus}")
    else:
        corpus = default_corpus(progress=progress, force=force)
        manifest = corpus_manifest(corpus) or {}
        print(f"corpus: {len(manifest.get('pieces', []))} pieces, "
              f"{manifest.get('seconds', 0) / 60:.1f} minutes, "
              f"{len(manifest.get('failed', []))} skipped -> {corpus}")
    if getattr(args, "no_dataset", False):
        return 0
    out = build_dataset(corpus, getattr(args, "out", None), progress=progress, force=force)
    index = _read_json(out / "index.json")
    st = index["stats"]
    c, tr, va = st["corpus"], st["train"], st["val"]
    print(f"dataset: {c['pieces']} pieces, {c['minutes']:.1f} minutes, {c['key_states']:,} key states, "
          f"key-down rate {c['key_down_rate']:.2%}")
    print(f"  train: {tr['originals']} pieces + {tr['pieces'] - tr['originals']} tempo-stretched clones, "
          f"{tr['key_states']:,} key states; val: {va['pieces']} pieces, {va['key_states']:,} key states")
    if index.get("skipped"):
        print(f"  skipped {len(index['skipped'])} files (see index.json)")
    print(f"  -> {out}  ({time.perf_counter() - t0:.1f} s)")
    return 0
