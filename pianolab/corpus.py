"""The corpus: a folder of MIDI files, and the built-in one exported from music21 (chapter 01_encoding).

:func:`default_corpus` exports the unique Bach chorales and the solo keyboard works of music21's
corpus once, repeats expanded, to ``data_dir()/corpus/default/`` with a ``manifest.json``.
"""

import hashlib
import io
import json
import multiprocessing as mp
import os
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from . import _io
from .encoding import midi_to_roll
from .errors import ConfigError, PianolabError
from .settings import data_dir

# Bump when the exported corpus would change (list of works, export rules): old caches rebuild.
CORPUS_VERSION = 2
# music21 writes 10,080 ticks per quarter note, slow for pretty_midi to read: re-timed to 480 (~1 ms).
TICKS_PER_QUARTER = 480
MIDI_SUFFIXES = (".mid", ".midi")

# Solo keyboard works of music21's corpus; works missing from an installed music21 are reported and skipped.
KEYBOARD_WORKS = ("bach/bwv846", "chopin/mazurka06-2", "cpebach/h186", "joplin/maple_leaf_rag",
                  "mozart/k545/movement1_exposition", "schoenberg/opus19/movement2",
                  "schoenberg/opus19/movement6", "schumann_clara/polonaise_op1n1",
                  "schumann_clara/polonaise_op1n2", "schumann_clara/polonaise_op1n3",
                  "schumann_clara/polonaise_op1n4")
# When a corpus name matches several files, prefer the first of these formats.
_FORMAT_RANK = {s: i for i, s in enumerate((".mxl", ".musicxml", ".xml", ".krn", ".mei", ".abc"))}


def midi_files(folder):
    """All ``.mid`` / ``.midi`` files (any case) under ``folder``, recursively, hidden ones skipped,
    sorted by relative path (chapter 01_encoding). The one check of a corpus folder: none found (or no
    such folder) raises ``ConfigError`` (key ``corpus``; the CLI and the config name their own)."""
    folder, found = Path(folder), []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / n for n in filenames
                  if not n.startswith(".") and n.lower().endswith(MIDI_SUFFIXES)]
    if not found:
        raise ConfigError("corpus", f"no MIDI files (.mid, .midi) under {folder}"
                                    + ("" if folder.is_dir() else " (no such folder)"))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def piece_name(path, folder):
    """A piece's path relative to the corpus folder, without the suffix (chapter 01_encoding)."""
    return Path(path).relative_to(folder).as_posix().rsplit(".", 1)[0]


def _resolve_work(name):
    """The file of a music21 corpus work ``name`` ('bach/bwv10.7'), or None when absent."""
    from music21 import corpus
    try:
        found = corpus.getWork(name)
    except Exception:
        return None
    candidates = [Path(p) for p in (found if isinstance(found, list) else [found]) if p]
    exact = [p for p in candidates if p.stem == name.rsplit("/", 1)[-1]]
    return min(exact or candidates, default=None,
               key=lambda p: (_FORMAT_RANK.get(p.suffix.lower(), len(_FORMAT_RANK)), p.name))


def _sources():
    """The default corpus' works: ``(sources, missing)``; ``sources`` sorted dicts ``{"name", "work",
    "path"}``, each score file once (music21 names some chorales twice), ``missing`` the keyboard works
    this music21 lacks."""
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
        elif path not in seen:
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
            try:  # music21's MIDI export expands repeats itself
                data = music21.midi.translate.streamToMidiFile(score).writestr()
                out["repeats"] = "expanded" if has_repeats else "none"
            except repeat.ExpanderException as exc:
                # Badly formed repeat marks: export as written, parts flattened so nothing expands.
                flat = stream.Score()
                for part in score.parts:
                    flat.insert(0, part.flatten())
                data = music21.midi.translate.streamToMidiFile(flat).writestr()
                out["repeats"] = f"not expanded ({exc})"
            data = _retime_midi(data, TICKS_PER_QUARTER)
            pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
        midi_to_roll(pm)  # raises MidiError when nothing lands in the key window
        out.update(seconds=round(float(pm.get_end_time()), 3),
                   notes=int(sum(len(i.notes) for i in pm.instruments if not i.is_drum)), midi=data)
    except Exception as exc:  # any failure of one piece: report it, go on with the others
        out["error"] = f"{type(exc).__name__}: {str(exc).strip() or type(exc).__name__}"
    return out


def _retime_midi(data, ticks_per_quarter):
    """MIDI bytes with every event moved to the nearest tick of a new resolution (order kept)."""
    import mido
    src = mido.MidiFile(file=io.BytesIO(data))
    old = src.ticks_per_beat
    if old == ticks_per_quarter:
        return data
    out = mido.MidiFile(type=src.type, ticks_per_beat=ticks_per_quarter)
    for track in src.tracks:
        out.tracks.append(new_track := mido.MidiTrack())
        now = prev = 0
        for msg in track:
            now += msg.time
            tick = (2 * now * ticks_per_quarter + old) // (2 * old)  # round half up, in integers
            new_track.append(msg.copy(time=tick - prev))
            prev = tick
    buf = io.BytesIO()
    out.save(file=buf)
    return buf.getvalue()


def _corpus_cache_valid(folder, manifest):
    """True when ``manifest`` describes the corpus this pianolab/music21 would build, all present."""
    found = [manifest.get(k) for k in ("format", "version", "music21", "ticks_per_quarter", "keyboard_works")] \
        if isinstance(manifest, dict) and manifest.get("pieces") else None
    if found != ["pianolab-corpus", CORPUS_VERSION, metadata.version("music21"), TICKS_PER_QUARTER, list(KEYBOARD_WORKS)]:
        return False
    try:
        return all((folder / p["file"]).stat().st_size == p["bytes"] for p in manifest["pieces"])
    except OSError:
        return False


def default_corpus(progress=True, force=False, *, folder=None, sources=None, workers=None):
    """Export the built-in corpus to MIDI once, deterministically; returns its folder (chapter 01_encoding).
    Failed scores are reported on stderr and listed under ``failed``; a folder whose manifest matches
    (versions, works, file sizes) is reused unless ``force``. ``folder``, ``sources``, ``workers``: tests."""
    folder = Path(folder) if folder is not None else data_dir() / "corpus" / "default"
    manifest_path, custom = folder / "manifest.json", sources is not None
    if not force and not custom and _corpus_cache_valid(folder, _io.read_json(manifest_path)):
        return folder
    t0 = time.perf_counter()
    sources, missing = _sources() if sources is None else (sources, [])
    sources = sorted(sources, key=lambda s: s["name"])
    workers = max(1, min(min(2, os.cpu_count() or 1) if workers is None else int(workers), len(sources) or 1))
    pieces, failed = [], []
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    bar = _io.progress(total=len(sources), enabled=progress, desc="default corpus (music21 -> MIDI)")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for res in pool.imap(_export_work, sources, chunksize=1) if pool else map(_export_work, sources):
            bar.update(1)
            if "error" in res:
                failed.append({"name": res["name"], "work": res["work"], "reason": res["error"]})
                continue
            rel, data = res["name"] + ".mid", res.pop("midi")
            path = folder / rel
            if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
                _io.write_bytes(path, data)
            pieces.append({"name": res["name"], "work": res["work"], "file": rel, "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "seconds": res["seconds"],
                           "notes": res["notes"], "repeats": res["repeats"]})
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()

    keep = {p["file"] for p in pieces}  # stale MIDI files of an earlier build go
    for path in (p for p in folder.rglob("*.mid") if p.relative_to(folder).as_posix() not in keep):
        path.unlink()

    failed += [{"name": None, "work": work, "reason": "not in this music21 corpus"} for work in missing]
    for f in failed:
        print(f"default corpus: skipped {f['work']}: {f['reason']}", file=sys.stderr)
    manifest = {"format": "pianolab-corpus", "version": CORPUS_VERSION, "music21": metadata.version("music21"),
                "keyboard_works": list(KEYBOARD_WORKS), "ticks_per_quarter": TICKS_PER_QUARTER,
                "description": "Bach chorales (unique files of music21's chorale iterator) and the solo "
                               "keyboard works of music21's corpus, repeats expanded, exported with "
                               "music21.midi.translate and re-timed to 480 ticks per quarter note.",
                "pieces": pieces, "failed": failed, "seconds": round(sum(p["seconds"] for p in pieces), 3)}
    if custom:  # a partial build: never taken for the full cache
        manifest.update(version=None, custom_sources=True)
    _io.write_bytes(manifest_path, json.dumps(manifest, indent=1) + "\n")
    if progress:
        print(f"default corpus: {len(pieces)} pieces, {manifest['seconds'] / 60:.1f} minutes, {len(failed)} "
              f"skipped, built in {time.perf_counter() - t0:.1f} s -> {folder}", file=sys.stderr)
    return folder


def corpus_manifest(folder=None):
    """The manifest of an exported default corpus (its pieces, their sources, what failed), or None for a
    plain MIDI folder (chapter 01_encoding)."""
    return _io.read_json(Path(folder if folder is not None else data_dir() / "corpus" / "default") / "manifest.json")
