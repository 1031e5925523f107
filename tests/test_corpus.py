"""pianolab.corpus: folders of MIDI files and the built-in corpus exported from music21
(chapter 01_encoding)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from pianolab import corpus
from pianolab.settings import data_dir
from pianolab.encoding import midi_to_roll, roll_to_midi, write_midi
from pianolab.errors import ConfigError


def test_midi_files_recursive_sorted_case_insensitive(tmp_path):
    names = ["b", "a", "sub/d", "sub/deeper/f"]
    suffixes = [".mid", ".MID", ".Midi", ".midi"]
    roll = np.zeros((10, 72), np.uint8)
    roll[2:5, 30] = 1
    for name, suffix in zip(names, suffixes):
        write_midi(roll, tmp_path / (name + suffix))
    (tmp_path / "readme.txt").write_text("not a MIDI file, and not named like one")
    (tmp_path / ".hidden.mid").write_text("hidden files are ignored")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.mid").write_text("so are hidden folders")
    found = corpus.midi_files(tmp_path)
    assert [corpus.piece_name(p, tmp_path) for p in found] == ["a", "b", "sub/d", "sub/deeper/f"]
    assert found[0].name == "a.MID"
    with pytest.raises(ConfigError, match="corpus"):
        corpus.midi_files(tmp_path / "nope")


def test_corpus_sources_are_unique_chorales_and_keyboard_works():
    from music21 import corpus as m21

    listed = list(m21.chorales.Iterator(returnType="filename"))
    sources, missing = corpus._sources()
    chorales = [s for s in sources if s["name"].startswith("chorales/")]
    keyboard = [s for s in sources if s["name"].startswith("keyboard/")]
    assert len(listed) > len(set(listed))  # the iterator repeats some chorales...
    assert len(chorales) == len({s["path"] for s in chorales}) == len(set(listed))  # ...we take each file once
    assert len({s["name"] for s in sources}) == len(sources)
    assert [s["name"] for s in sources] == sorted(s["name"] for s in sources)
    works = {s["work"] for s in keyboard}
    assert {"joplin/maple_leaf_rag", "bach/bwv846", "mozart/k545/movement1_exposition"} <= works
    assert len(keyboard) + len(missing) == len(corpus.KEYBOARD_WORKS)
    assert all(Path(s["path"]).is_file() for s in sources)


def _small_sources():
    sources, _ = corpus._sources()
    by_work = {s["work"]: s for s in sources}
    return [by_work["bach/bwv10.7"], by_work["bach/bwv269"], by_work["mozart/k545/movement1_exposition"]]


def test_corpus_export_is_deterministic_and_reports_failures(tmp_path, capsys):
    bad_score = tmp_path / "bad.mxl"
    bad_score.write_bytes(b"this is no MusicXML")
    sources = _small_sources() + [{"name": "keyboard/bad", "work": "bad", "path": str(bad_score)}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = corpus.default_corpus(progress=False, folder=tmp_path / "a", sources=sources, workers=1)
    # a skipped score is one plain line on stderr, not a Python warning
    skipped = [line for line in capsys.readouterr().err.splitlines() if "bad" in line]
    assert len(skipped) == 1 and skipped[0].startswith("default corpus: skipped bad: ")
    assert not [w for w in caught if "bad" in str(w.message)]
    b = corpus.default_corpus(progress=False, folder=tmp_path / "b", sources=sources[::-1], workers=2)
    files_a = [p.relative_to(a).as_posix() for p in corpus.midi_files(a)]
    files_b = [p.relative_to(b).as_posix() for p in corpus.midi_files(b)]
    assert files_a == files_b == ["chorales/bwv10.7.mid", "chorales/bwv269.mid",
                                  "keyboard/mozart_k545_movement1_exposition.mid"]
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest == json.loads((b / "manifest.json").read_text()) == corpus.corpus_manifest(a)
    assert [p["name"] for p in manifest["pieces"]] == [f[:-4] for f in files_a]
    assert manifest["failed"][0]["work"] == "bad" and manifest["failed"][0]["reason"]
    assert all(p["seconds"] > 5 and p["notes"] > 20 and p["repeats"] for p in manifest["pieces"])
    # every file written atomically: no temp files left behind
    assert not [p for p in a.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    # a partial build is never taken for the full default corpus
    assert not corpus._corpus_cache_valid(a, manifest)


def test_the_real_default_corpus_is_cached():
    """`make test` builds the default corpus before pytest; this checks it (or builds it)."""
    folder = corpus.default_corpus(progress=False)
    assert folder == data_dir() / "corpus" / "default"
    manifest = corpus.corpus_manifest(folder)
    assert manifest["version"] == corpus.CORPUS_VERSION
    files = corpus.midi_files(folder)
    assert len(files) == len(manifest["pieces"])
    # every source of this music21 is there, except the ones the manifest lists as failed
    failed = {f["name"] for f in manifest["failed"] if f["name"]}
    sources, _ = corpus._sources()
    assert sorted(corpus.piece_name(f, folder) for f in files) == [s["name"] for s in sources if s["name"] not in failed]
    assert manifest["seconds"] / 60 > 150  # about 3.4 hours of music
    # reused, not rebuilt: no file is rewritten by a second call
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert corpus.default_corpus(progress=False) == folder
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    roll = midi_to_roll(folder / "keyboard" / "joplin_maple_leaf_rag.mid")
    assert roll.shape[0] > 48 * 60 and roll.sum() > 1000


def test_corpus_cache_is_invalid_when_anything_differs(tmp_path):
    folder = corpus.default_corpus(progress=False)
    manifest = corpus.corpus_manifest(folder)
    assert corpus._corpus_cache_valid(folder, manifest)
    assert not corpus._corpus_cache_valid(tmp_path, manifest)  # none of the files there
    assert not corpus._corpus_cache_valid(folder, dict(manifest, version=-1))
    assert not corpus._corpus_cache_valid(folder, dict(manifest, music21="0.0"))
    assert not corpus._corpus_cache_valid(folder, dict(manifest, keyboard_works=[]))
    first = dict(manifest["pieces"][0], bytes=manifest["pieces"][0]["bytes"] + 1)
    assert not corpus._corpus_cache_valid(folder, dict(manifest, pieces=[first] + manifest["pieces"][1:]))


# the encoding on real scores, exported as the default corpus exports them

def _corpus_midi(work, tmp_path):
    """Export one music21 score to a MIDI file as the default corpus does."""
    pytest.importorskip("music21")
    path = corpus._resolve_work(work)
    if path is None:
        pytest.skip(f"music21 corpus lacks {work}")
    res = corpus._export_work({"name": work.replace("/", "_"), "work": work, "path": str(path)})
    assert "error" not in res, res.get("error")
    out = tmp_path / (work.replace("/", "_") + ".mid")
    out.write_bytes(res["midi"])
    return out


@pytest.mark.parametrize("work", ["bach/bwv10.7", "mozart/k545/movement1_exposition"])
def test_round_trip_real_pieces(tmp_path, work):
    src = _corpus_midi(work, tmp_path)
    roll = midi_to_roll(src)
    assert roll.shape[1] == 72 and roll.sum() > 100
    again = midi_to_roll(write_midi(roll, tmp_path / "again.mid"))
    np.testing.assert_array_equal(again, roll)
    # and a second trip changes nothing either
    np.testing.assert_array_equal(midi_to_roll(roll_to_midi(again)), roll)


def test_the_default_corpus_is_chorales_and_a_handful_of_keyboard_works():
    """Chapter 01_encoding's description of the corpus (moved from the page): hundreds of chorales, at
    least five keyboard works, nothing else."""
    folder = corpus.default_corpus(progress=False)
    names = [corpus.piece_name(f, folder) for f in corpus.midi_files(folder)]
    chorales = sum(n.startswith("chorales/") for n in names)
    keyboard = sum(n.startswith("keyboard/") for n in names)
    assert chorales + keyboard == len(names) and chorales > 300 and keyboard >= 5
