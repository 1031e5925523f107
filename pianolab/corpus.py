"""The corpus: a folder of MIDI files, and the built-in one exported from music21 (chapter 01_encoding).

A corpus is any folder of MIDI files, searched recursively (``.mid`` / ``.midi``, any case).
:func:`default_corpus` exports the built-in one once from the scores bundled with music21: the
unique Bach chorales and the solo keyboard works of music21's corpus, repeats expanded, to
``data_dir()/corpus/default/`` (``chorales/*.mid``, ``keyboard/*.mid`` and ``manifest.json``).
A score that fails to convert is reported on one plain line and skipped.
"""

import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from . import _io
from .encoding import midi_to_roll
from .errors import ConfigError, PianolabError
from .settings import data_dir

# Bump when the exported corpus would change (list of works, export rules): old caches rebuild.
CORPUS_VERSION = 2
# music21 writes 10,080 MIDI ticks per quarter note; pretty_midi's load time grows with the tick
# count (a chorale took 0.4 s to read), so the export is re-timed to 480 ticks per quarter
# (about 1 ms at 120 bpm, far below one 48-steps-per-second time step).
TICKS_PER_QUARTER = 480
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




def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    _io.write_bytes(path, json.dumps(obj, indent=1) + "\n")


def _progress(total, enabled, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="piece", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _music21_version():
    from importlib import metadata

    try:
        return metadata.version("music21")
    except metadata.PackageNotFoundError:
        return None


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
    is reported on one line of stderr, listed under ``failed`` in ``manifest.json`` and skipped.

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
        print(f"default corpus: skipped {f['work']}: {f['reason']}", file=sys.stderr)
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
    _write_json(manifest_path, manifest)
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
        _io.write_bytes(path, data)
    pieces.append({"name": res["name"], "work": res["work"], "file": rel, "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest(), "seconds": res["seconds"], "notes": res["notes"],
                   "repeats": res["repeats"]})


def corpus_manifest(folder=None):
    """The manifest of an exported default corpus (dict), or None for a plain MIDI folder
    (chapter 01_encoding)."""
    folder = Path(folder) if folder is not None else default_corpus_dir()
    return _read_json(folder / "manifest.json")

