"""Tests of pianolab.data: corpora, datasets, windows, statistics (chapter 04_training)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pianolab import data
from pianolab.encoding import DEFAULT_ENCODING, Encoding, midi_to_roll, roll_to_sequence, write_midi
from pianolab.errors import ConfigError, PianolabError

K = DEFAULT_ENCODING.n_keys
M = 50  # values per piece in synthetic splits


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def make_roll(rng, steps, density=0.05):
    roll = (rng.random((steps, K)) < density).astype(np.uint8)
    roll[0, int(rng.integers(K))] = 1
    return roll


@pytest.fixture
def midi_folder(tmp_path):
    """A folder corpus: 8 good pieces (nested, mixed-case suffixes), 2 bad files, 1 non-MIDI file."""
    folder = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    rolls = {}
    names = ["a", "b", "c", "sub/d", "sub/e", "sub/deeper/f", "g", "h"]
    suffixes = [".mid", ".MID", ".midi", ".mid", ".Midi", ".mid", ".mid", ".mid"]
    for name, suffix in zip(names, suffixes):
        roll = make_roll(rng, int(rng.integers(60, 200)))
        write_midi(roll, folder / (name + suffix))
        rolls[name] = roll
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")  # truncated header
    (folder / "sub" / "notes.mid").write_text("not MIDI")
    (folder / "readme.txt").write_text("not a MIDI file, and not named like one")
    (folder / ".hidden.mid").write_text("hidden files are ignored")
    return folder, rolls


def synthetic_split(lengths, name="train", start_value=1):
    """A split whose piece p holds values 1 + M*p + (i % M): every value names its piece and
    position (mod M), and 0 only ever comes from the silence in front of a piece (<= 5 pieces)."""
    assert len(lengths) * M < 256
    seqs, pieces, pos = [], [], 0
    for p, n in enumerate(lengths):
        seq = (start_value + M * p + (np.arange(n) % M)).astype(np.uint8)
        seqs.append(seq)
        pieces.append((f"p{p}", pos, pos + n))
        pos += n
    sequence = np.concatenate(seqs) if seqs else np.zeros(0, np.uint8)
    return data.Split(name, sequence, pieces, Encoding(48, 60, 4),
                      [{"name": f"p{p}", "source": f"p{p}", "stretch": 1.0} for p in range(len(lengths))])


def expected_window(split, p, u, rf, n):
    _, a, b = split.pieces[p]
    seq = np.asarray(split.sequence[a:b])
    padded = np.concatenate([np.zeros(rf + max(0, n - len(seq)), np.uint8), seq])
    off = rf + max(0, n - len(seq))  # padded index of piece position 0
    s = off + u - rf
    return padded[s:s + rf + n - 1], padded[s + rf:s + rf + n]


# ---------------------------------------------------------------------------------------------
# The default corpus
# ---------------------------------------------------------------------------------------------


def test_corpus_sources_are_unique_chorales_and_keyboard_works():
    from music21 import corpus

    listed = list(corpus.chorales.Iterator(returnType="filename"))
    sources, missing = data.corpus_sources()
    chorales = [s for s in sources if s["name"].startswith("chorales/")]
    keyboard = [s for s in sources if s["name"].startswith("keyboard/")]
    assert len(listed) > len(set(listed))  # the iterator repeats some chorales...
    assert len(chorales) == len({s["path"] for s in chorales})  # ...we take each file once
    assert len(chorales) == len(set(listed)) == 350
    assert len({s["name"] for s in sources}) == len(sources)
    assert [s["name"] for s in sources] == sorted(s["name"] for s in sources)
    works = {s["work"] for s in keyboard}
    assert {"joplin/maple_leaf_rag", "bach/bwv846", "mozart/k545/movement1_exposition"} <= works
    assert len(keyboard) + len(missing) == len(data.KEYBOARD_WORKS)
    for s in sources:
        assert Path(s["path"]).is_file()


def _small_sources():
    sources, _ = data.corpus_sources()
    by_work = {s["work"]: s for s in sources}
    return [by_work["bach/bwv10.7"], by_work["bach/bwv269"], by_work["mozart/k545/movement1_exposition"]]


def test_corpus_export_is_deterministic_and_reports_failures(tmp_path):
    bad_score = tmp_path / "bad.mxl"
    bad_score.write_bytes(b"this is no MusicXML")
    sources = _small_sources() + [{"name": "keyboard/bad", "work": "bad", "path": str(bad_score)}]
    with pytest.warns(UserWarning, match="bad"):
        a = data.default_corpus(progress=False, folder=tmp_path / "a", sources=sources, workers=1)
    with pytest.warns(UserWarning, match="bad"):
        b = data.default_corpus(progress=False, folder=tmp_path / "b", sources=sources[::-1], workers=2)
    files_a = [p.relative_to(a).as_posix() for p in data.midi_files(a)]
    files_b = [p.relative_to(b).as_posix() for p in data.midi_files(b)]
    assert files_a == files_b == ["chorales/bwv10.7.mid", "chorales/bwv269.mid",
                                  "keyboard/mozart_k545_movement1_exposition.mid"]
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest == json.loads((b / "manifest.json").read_text())
    assert [p["name"] for p in manifest["pieces"]] == [f[:-4] for f in files_a]
    assert manifest["failed"][0]["work"] == "bad" and manifest["failed"][0]["reason"]
    assert all(p["seconds"] > 5 and p["notes"] > 20 for p in manifest["pieces"])
    assert all(p["repeats"] for p in manifest["pieces"])
    # no temp files left behind
    assert not [p for p in a.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    # a partial build is never taken for the full default corpus
    assert not data._corpus_cache_valid(a, manifest)


def test_the_real_default_corpus_is_cached():
    """`make test` builds the default corpus before pytest; this checks it (or builds it)."""
    folder = data.default_corpus(progress=False)
    assert folder == data.default_corpus_dir()
    manifest = data.corpus_manifest(folder)
    assert manifest["version"] == data.CORPUS_VERSION
    files = data.midi_files(folder)
    assert len(files) == len(manifest["pieces"]) >= 350
    chorales = [f for f in files if f.parent.name == "chorales"]
    assert len(chorales) == 350
    assert sum(1 for f in files if f.parent.name == "keyboard") >= 8
    assert manifest["seconds"] / 60 > 150  # about 3.4 hours of music
    # reused, not rebuilt: no file is rewritten by a second call
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert data.default_corpus(progress=False) == folder
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    roll = midi_to_roll(folder / "keyboard" / "joplin_maple_leaf_rag.mid")
    assert roll.shape[0] > 48 * 60 and roll.sum() > 1000


def test_corpus_cache_is_invalid_when_a_file_is_missing(tmp_path):
    folder = data.default_corpus_dir()
    manifest = data.corpus_manifest(folder)
    if manifest is None:
        pytest.skip("default corpus not built")
    assert data._corpus_cache_valid(folder, manifest)
    assert not data._corpus_cache_valid(tmp_path, manifest)  # none of the files there
    assert not data._corpus_cache_valid(folder, dict(manifest, version=-1))
    assert not data._corpus_cache_valid(folder, dict(manifest, music21="0.0"))


# ---------------------------------------------------------------------------------------------
# Folder corpora and datasets
# ---------------------------------------------------------------------------------------------


def test_midi_files_recursive_sorted_case_insensitive(midi_folder):
    folder, rolls = midi_folder
    names = [data.piece_name(p, folder) for p in data.midi_files(folder)]
    assert names == sorted(list(rolls) + ["broken", "sub/notes"])
    with pytest.raises(ConfigError, match="corpus"):
        data.midi_files(folder / "nope")


def build_small(folder, out, **kw):
    kw = {"val_fraction": 0.25, "n_clones": 2, "seed": 3, "progress": False, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data.build_dataset(folder, out, **kw)


def test_folder_dataset_skips_bad_files_and_reports_them(midi_folder, tmp_path):
    folder, rolls = midi_folder
    with pytest.warns(UserWarning) as record:
        out = data.build_dataset(folder, tmp_path / "ds", val_fraction=0.25, n_clones=2, progress=False)
    warned = " ".join(str(w.message) for w in record)
    assert "broken.mid" in warned and "notes.mid" in warned
    ds = data.load_dataset(out)
    skipped = {s["file"]: s["reason"] for s in ds.skipped}
    assert set(skipped) == {"broken.mid", "sub/notes.mid"}
    assert all(skipped.values())
    sources = {e["source"] for e in ds.train.entries} | {e["source"] for e in ds.val.entries}
    assert sources == set(rolls)


def test_split_is_by_piece_disjoint_and_seeded(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds"))
    train_src = {e["source"] for e in ds.train.entries}
    val_src = {e["source"] for e in ds.val.entries}
    assert not train_src & val_src
    assert train_src | val_src == set(rolls)
    assert len(val_src) == 2  # 25% of 8
    again = data.load_dataset(build_small(folder, tmp_path / "ds2"))
    assert {e["source"] for e in again.val.entries} == val_src
    np.testing.assert_array_equal(again.train.sequence, ds.train.sequence)
    # the split function itself
    names = [f"piece{i:03d}" for i in range(100)]
    tr, va = data.split_pieces(names, 0.1, seed=0)
    assert len(va) == 10 and not set(tr) & set(va) and sorted(tr + va) == names
    assert data.split_pieces(names, 0.1, seed=0) == (tr, va)
    assert data.split_pieces(names, 0.1, seed=1)[1] != va
    assert data.split_pieces(names[::-1], 0.1, seed=0) == (tr, va)  # order of listing is irrelevant
    assert data.split_pieces(["x", "y"], 0.01, seed=0)[1] != []  # at least one validation piece
    assert data.split_pieces(["x"], 0.5, seed=0) == (["x"], [])
    assert data.split_pieces(names, 0.0, seed=0) == (names, [])


def test_augmentation_clones_and_stretch(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds", n_clones=3, stretch=(0.8, 1.2)))
    entries = ds.train.entries
    by_source = {}
    for e in entries:
        by_source.setdefault(e["source"], []).append(e)
    for source, group in by_source.items():
        assert len(group) == 4  # the piece and 3 clones
        assert group[0]["stretch"] == 1.0 and group[0]["name"] == source
        factors = [e["stretch"] for e in group[1:]]
        assert factors == data.stretch_factors(source, 3, (0.8, 1.2), seed=3)
        # one factor in each third of the range
        for c, f in enumerate(factors):
            assert 0.8 + 0.4 * c / 3 <= f <= 0.8 + 0.4 * (c + 1) / 3
        base_steps = rolls[source].shape[0]
        for e in group:
            steps = (e["stop"] - e["start"]) // K
            assert abs(steps - base_steps * e["stretch"]) <= 2
            # the clone is what midi_to_roll gives with that time scale
        clone = group[1]
        path = next(p for p in data.midi_files(folder) if data.piece_name(p, folder) == source)
        want = roll_to_sequence(midi_to_roll(path, time_scale=clone["stretch"]))
        np.testing.assert_array_equal(ds.train.sequence[clone["start"]:clone["stop"]], want)
    assert all(e["stretch"] == 1.0 for e in ds.val.entries)  # validation is not augmented
    assert data.stretch_factors("x", 5, seed=0) != data.stretch_factors("x", 5, seed=1)
    assert data.stretch_factors("x", 0) == []


def test_dataset_arrays_are_memory_mapped_and_match_the_encoder(midi_folder, tmp_path):
    folder, rolls = midi_folder
    out = build_small(folder, tmp_path / "ds")
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "train.npy", "val.npy"]
    ds = data.load_dataset(out)
    for split in (ds.train, ds.val):
        assert isinstance(split.sequence, np.memmap) and split.sequence.dtype == np.uint8
        assert not split.sequence.flags.writeable
        assert split.encoding == DEFAULT_ENCODING
        # pieces tile the array end to end, on whole time steps
        pos = 0
        for name, a, b in split.pieces:
            assert a == pos and b > a and (b - a) % K == 0
            pos = b
        assert pos == split.sequence.shape[0]
    for split in (ds.train, ds.val):
        for e in split.entries:
            if e["stretch"] == 1.0:
                np.testing.assert_array_equal(split.piece(e["name"]), roll_to_sequence(rolls[e["name"]]))
                np.testing.assert_array_equal(split.roll(e["name"]), rolls[e["name"]])
    arr = np.load(out / "train.npy", mmap_mode="r")
    assert arr.shape == ds.train.sequence.shape
    index = json.loads((out / "index.json").read_text())
    assert index["encoding"] == DEFAULT_ENCODING.to_dict()
    assert index["params"]["seed"] == 3 and index["params"]["n_clones"] == 2


def test_dataset_cache_reuse_and_rebuild(midi_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PIANOLAB_DATA", str(tmp_path / "home"))
    folder, _ = midi_folder
    out = build_small(folder, None)
    assert out.parent == tmp_path / "home" / "datasets" and out.name.startswith("corpus-")
    stamp = (out / "index.json").stat().st_mtime_ns
    assert build_small(folder, None) == out
    assert (out / "index.json").stat().st_mtime_ns == stamp  # reused
    other = build_small(folder, None, seed=4)
    assert other != out  # other parameters, other cache folder
    # defaults give the plain corpus name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = data.build_dataset(folder, progress=False, n_clones=0)
    assert default.name.startswith("corpus-")
    # a changed corpus file invalidates the cache
    rng = np.random.default_rng(9)
    write_midi(make_roll(rng, 77), folder / "a.mid")
    again = build_small(folder, None)
    assert again == out and (out / "index.json").stat().st_mtime_ns != stamp
    stamp = (out / "index.json").stat().st_mtime_ns
    build_small(folder, None, force=True)
    assert (out / "index.json").stat().st_mtime_ns != stamp
    # so does a change of the encoder's source
    stamp = (out / "index.json").stat().st_mtime_ns
    monkeypatch.setattr(data, "_encoder_fingerprint", lambda: "another encoder")
    assert build_small(folder, None) == out
    assert (out / "index.json").stat().st_mtime_ns != stamp


def test_max_pieces_takes_a_seeded_subset(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "a", max_pieces=4, val_fraction=0.25))
    sources = {e["source"] for e in ds.train.entries} | {e["source"] for e in ds.val.entries}
    assert len(sources) == 4 and sources <= set(rolls)
    ds2 = data.load_dataset(build_small(folder, tmp_path / "b", max_pieces=4, val_fraction=0.25))
    assert {e["source"] for e in ds2.train.entries} | {e["source"] for e in ds2.val.entries} == sources


def test_bad_parameters_name_the_key(midi_folder, tmp_path):
    folder, _ = midi_folder
    for kw, key in [({"val_fraction": 1.0}, "val_fraction"), ({"n_clones": -1}, "n_clones"),
                    ({"stretch": (1.2, 0.8)}, "stretch"), ({"stretch": 3}, "stretch"),
                    ({"max_pieces": 0}, "max_pieces"), ({"out_of_range": "clip"}, "out_of_range")]:
        with pytest.raises(ConfigError) as info:
            data.build_dataset(folder, tmp_path / "x", progress=False, **kw)
        assert info.value.key == key
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no MIDI files"):
        data.build_dataset(empty, tmp_path / "x", progress=False)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.mid").write_text("nope")
    with pytest.raises(ConfigError, match="could be encoded"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.build_dataset(only_bad, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="no pianolab dataset"):
        data.load_dataset(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rf,n", [(5, 3), (1, 1), (12, 7), (40, 4)])
def test_every_window_is_aligned_and_inside_one_piece(rf, n):
    split = synthetic_split([30, 7, 2, 55])  # pieces shorter and longer than the window
    w = data.Windows(split, rf, n)
    ids = np.arange(w.n_windows)
    pieces, us = w.locate(ids)
    x, y = w.cut(pieces, us)
    assert x.shape == (w.n_windows, rf + n - 1) and y.shape == (w.n_windows, n)
    seen = set()
    for i, (p, u) in enumerate(zip(pieces, us)):
        want_x, want_y = expected_window(split, p, u, rf, n)
        np.testing.assert_array_equal(x[i], want_x)
        np.testing.assert_array_equal(y[i], want_y)
        # only this piece's values (or silence) appear
        lo, hi = 1 + M * p, M * (p + 1)
        vals = np.concatenate([x[i], y[i]])
        assert np.all((vals == 0) | ((vals >= lo) & (vals <= hi)))
        # output j sees x[j : j + rf] and predicts the key state right after: y[j] is the element
        # that follows x[j + rf - 1] in the piece (values count up by one, mod M)
        full = np.concatenate([x[i], y[i][-1:]])
        np.testing.assert_array_equal(y[i], full[rf:rf + n])
        for j in range(n):
            last_seen, target = int(x[i][j + rf - 1]), int(y[i][j])
            if last_seen and target:
                assert target == lo + ((last_seen - lo + 1) % M)
        seen.add((int(p), int(u)))
    # windows start in the leading silence: the first window of each piece predicts its first states
    lengths = [30, 7, 2, 55]
    for p, length in enumerate(lengths):
        first_u = min(0, length - n)
        assert (p, first_u) in seen and (p, length - n) in seen
        count = sum(1 for q, _ in seen if q == p)
        assert count == max(1, length - n + 1)
    first = [i for i, (p, u) in enumerate(zip(pieces, us)) if p == 0 and u == 0][0]
    assert np.all(x[first][:rf] == 0) and y[first][0] == 1  # silence, then the piece's first state


def test_windows_of_a_piece_shorter_than_n_end_on_its_last_state():
    split = synthetic_split([3])
    w = data.Windows(split, 4, 6)
    assert w.n_windows == 1
    x, y = w.cut(*w.locate([0]))
    np.testing.assert_array_equal(y[0], [0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(x[0], [0, 0, 0, 0, 0, 0, 0, 1, 2])


def test_windows_refuse_bad_arguments():
    split = synthetic_split([10])
    with pytest.raises(ConfigError, match="receptive_field"):
        data.Windows(split, 0, 3)
    with pytest.raises(ConfigError, match="n_targets"):
        data.Windows(split, 3, 0)
    with pytest.raises(ConfigError, match="no pieces"):
        data.Windows(synthetic_split([]), 3, 3)


def test_window_sampler_is_a_deterministic_keras_pydataset():
    keras = pytest.importorskip("keras")
    split = synthetic_split([300, 20, 1000])
    sampler = data.WindowSampler(split, 16, 8, 4, seed=7)
    assert isinstance(sampler, keras.utils.PyDataset)
    x, y = sampler[0]
    assert x.shape == (4, 16 + 8 - 1, 1) and y.shape == (4, 8, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert len(sampler) == sampler.steps_per_epoch == -(-1320 // 32)
    same = data.WindowSampler(split, 16, 8, 4, seed=7)
    other = data.WindowSampler(split, 16, 8, 4, seed=8)
    for i in range(5):
        np.testing.assert_array_equal(sampler[i][0], same[i][0])
        np.testing.assert_array_equal(sampler[i][1], same[i][1])
    assert any(not np.array_equal(sampler[i][0], other[i][0]) for i in range(5))
    # every batch is made of aligned windows (y continues x by one position)
    for i in range(5):
        xb, yb = sampler[i]
        for xi, yi in zip(xb[..., 0], yb[..., 0]):
            full = np.concatenate([xi, yi[-1:]])
            np.testing.assert_array_equal(yi, full[16:24])
    # a new epoch draws new batches; batch_at is a pure function of the global step
    first = sampler[2][0]
    sampler.on_epoch_end()
    assert not np.array_equal(sampler[2][0], first)
    np.testing.assert_array_equal(sampler[2][0], same.batch_at(len(same) + 2)[0])
    # batch-size ramp
    sampler.set_batch_size(9)
    assert sampler[0][0].shape == (9, 23, 1) and sampler[0][1].shape == (9, 8, 1)
    with pytest.raises(ConfigError, match="batch_size"):
        sampler.set_batch_size(0)
    with pytest.raises(IndexError):
        sampler[len(sampler)]
    assert len(data.WindowSampler(split, 16, 8, 4, steps_per_epoch=3)) == 3
    # windows are drawn across the split roughly in proportion to each piece's windows
    counts = np.zeros(3)
    pieces, _ = sampler.windows.sample(np.random.default_rng(0), 20000)
    counts += np.bincount(pieces, minlength=3)
    share = counts / counts.sum()
    want = np.array([293, 13, 993]) / (293 + 13 + 993)
    np.testing.assert_allclose(share, want, atol=0.02)


def test_evaluation_windows_score_every_state_once():
    split = synthetic_split([30, 7, 2, 55, 16])
    rf, n = 5, 8
    covered = []
    total = 0.0
    for x, y, wgt in data.evaluation_windows(split, rf, n, batch_size=3):
        assert x.shape[1:] == (rf + n - 1, 1) and y.shape[1:] == (n, 1) and wgt.shape == y.shape[:2]
        for xi, yi, wi in zip(x[..., 0], y[..., 0], wgt):
            full = np.concatenate([xi, yi[-1:]])
            np.testing.assert_array_equal(yi, full[rf:rf + n])
            covered += [int(v) for v, keep in zip(yi, wi) if keep]
            assert all(v != 0 for v, keep in zip(yi, wi) if keep)  # no padding is scored
        total += wgt.sum()
    assert total == split.sequence.shape[0]
    assert sorted(covered) == sorted(int(v) for v in split.sequence)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_statistics_of_a_split_and_a_dataset(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds"))
    st = data.statistics(ds)
    total_steps = sum(r.shape[0] for r in rolls.values())
    assert st["pieces"] == 8 and st["key_states"] == total_steps * K
    assert st["minutes"] == pytest.approx(total_steps / 48 / 60)
    per_key = sum(r.sum(axis=0) for r in rolls.values())
    np.testing.assert_array_equal(st["per_key"], per_key)
    assert st["key_down_rate"] == pytest.approx(per_key.sum() / (total_steps * K))
    tr = data.statistics(ds.train)
    assert tr["pieces"] == 6 * 3 and tr["originals"] == 6
    assert tr["key_states"] == ds.train.sequence.shape[0]
    assert tr["key_down_rate"] == pytest.approx(ds.key_down_rate)
    assert st["train"]["key_states"] == tr["key_states"]
    np.testing.assert_array_equal(st["train"]["per_key"], tr["per_key"])
    assert st["val"]["pieces"] == 2
    # the index carries the same numbers, computed at build time
    assert ds.index["stats"]["corpus"]["key_states"] == st["key_states"]
    assert ds.index["stats"]["train"]["key_down_rate"] == pytest.approx(tr["key_down_rate"])
    with pytest.raises(TypeError):
        data.statistics([1, 2, 3])


def test_statistics_of_a_synthetic_split():
    enc = Encoding(48, 60, 4)
    roll = np.zeros((48 * 60, 4), np.uint8)  # one minute
    roll[:, 0] = 1
    roll[::2, 3] = 1
    split = data.Split("val", roll_to_sequence(roll), [("x", 0, roll.size)], enc)
    st = data.statistics(split)
    assert st["pieces"] == 1 and st["minutes"] == pytest.approx(1.0)
    assert st["key_down_rate"] == pytest.approx(1.5 / 4)
    np.testing.assert_array_equal(st["per_key"], [2880, 0, 0, 1440])


def test_the_real_default_dataset_statistics():
    """The default dataset (built by `make corpus`): about 3.4 hours, key-down rate near 4-6%."""
    out = data.default_dataset(progress=False)
    ds = data.load_dataset(out)
    st = ds.index["stats"]["corpus"]
    assert st["pieces"] >= 350 and st["minutes"] > 150
    assert 0.02 < st["key_down_rate"] < 0.08
    assert 0.02 < ds.key_down_rate < 0.08
    assert len(ds.val) >= 30 and ds.index["params"]["n_clones"] == 5
    train_src = {e["source"] for e in ds.train.entries}
    assert not train_src & {e["source"] for e in ds.val.entries}
    assert len(st["per_key"]) == K and st["per_key"][0] < st["per_key"][K // 2]


# ---------------------------------------------------------------------------------------------
# Command line and import cost
# ---------------------------------------------------------------------------------------------


def test_cli_data_on_a_folder(midi_folder, tmp_path, capsys):
    from pianolab.cli import main

    folder, _ = midi_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["data", "--corpus", str(folder), "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "8 pieces" in out and "key-down rate" in out and str(tmp_path / "ds") in out
    assert (tmp_path / "ds" / "index.json").is_file()
    assert main(["data", "--corpus", str(tmp_path / "missing"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--corpus" in err and "missing" in err
    assert main(["data", "--corpus", str(folder), "--no-dataset", "--quiet"]) == 0
    assert "10 MIDI files" in capsys.readouterr().out


def test_importing_pianolab_data_does_not_import_keras_or_music21():
    code = ("import sys, pianolab.data as d; "
            "bad = [m for m in ('keras', 'tensorflow', 'music21', 'torch', 'jax') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_errors_are_pianolab_errors():
    assert issubclass(ConfigError, PianolabError)
