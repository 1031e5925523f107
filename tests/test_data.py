"""pianolab.data: datasets split by piece, tempo-stretched and transposed clones, memory-mapped
arrays, the cache, statistics (chapter 04_training)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pianolab import data
from pianolab.corpus import corpus_manifest, midi_files, piece_name
from pianolab.encoding import DEFAULT_ENCODING, Encoding, midi_to_roll, roll_to_sequence, write_midi
from pianolab.errors import ConfigError

K = DEFAULT_ENCODING.n_keys


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
        roll[:, :3] = 0  # room to transpose down by 3 keys
        write_midi(roll, folder / (name + suffix))
        rolls[name] = roll
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")  # truncated header
    (folder / "sub" / "notes.mid").write_text("not MIDI")
    (folder / "readme.txt").write_text("not a MIDI file, and not named like one")
    return folder, rolls


def build_small(folder, out, **kw):
    return data.build_dataset(folder, out, **{"val_fraction": 0.25, "n_clones": 2, "seed": 3, "progress": False, **kw})


def sources(ds):
    return {e["source"] for e in ds.train.entries}, {e["source"] for e in ds.val.entries}


def test_bad_files_are_skipped_on_one_plain_line_each(midi_folder, tmp_path, capsys):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds"))
    lines = capsys.readouterr().err.splitlines()
    assert len([s for s in lines if s.startswith("skipping ")]) == 2
    assert any("broken.mid" in s for s in lines) and any("notes.mid" in s for s in lines)
    skipped = {s["file"]: s["reason"] for s in ds.index["skipped"]}
    assert set(skipped) == {"broken.mid", "sub/notes.mid"} and all(skipped.values())
    train, val = sources(ds)
    assert train | val == set(rolls)


def test_split_is_by_piece_disjoint_and_seeded(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds"))
    train, val = sources(ds)
    assert not train & val and train | val == set(rolls)
    assert len(val) == round(len(rolls) * 0.25)
    again = data.load_dataset(build_small(folder, tmp_path / "ds2"))
    assert sources(again) == (train, val)
    np.testing.assert_array_equal(again.train.sequence, ds.train.sequence)
    # the split function itself
    names = [f"piece{i:03d}" for i in range(100)]
    tr, va = data._split_pieces(names, 0.1, seed=0)
    assert len(va) == 10 and not set(tr) & set(va) and sorted(tr + va) == names
    assert data._split_pieces(names, 0.1, seed=0) == (tr, va)
    assert data._split_pieces(names, 0.1, seed=1)[1] != va
    assert data._split_pieces(names[::-1], 0.1, seed=0) == (tr, va)  # order of listing is irrelevant
    assert data._split_pieces(["x", "y"], 0.01, seed=0)[1] != []  # at least one validation piece
    assert data._split_pieces(["x"], 0.5, seed=0) == (["x"], [])
    assert data._split_pieces(names, 0.0, seed=0) == (names, [])


def test_tempo_stretched_clones(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds", n_clones=3, stretch=(0.8, 1.2)))
    by_source = {}
    for e in ds.train.entries:
        by_source.setdefault(e["source"], []).append(e)
    paths = {piece_name(p, folder): p for p in midi_files(folder)}
    for source, group in by_source.items():
        assert len(group) == 1 + 3  # the piece and 3 clones
        assert group[0]["stretch"] == 1.0 and group[0]["name"] == source
        factors = [e["stretch"] for e in group[1:]]
        assert factors == data._stretch_factors(source, 3, (0.8, 1.2), seed=3)
        for c, f in enumerate(factors):  # one factor in each third of the range
            assert 0.8 + 0.4 * c / 3 <= f <= 0.8 + 0.4 * (c + 1) / 3
        for e in group:
            assert abs((e["stop"] - e["start"]) // K - rolls[source].shape[0] * e["stretch"]) <= 2
        # a clone is what midi_to_roll gives with that time scale
        clone = group[1]
        want = roll_to_sequence(midi_to_roll(paths[source], time_scale=clone["stretch"]))
        np.testing.assert_array_equal(ds.train.piece(clone["name"]), want)
    assert all(e["stretch"] == 1.0 for e in ds.val.entries)  # validation is not augmented
    assert data._stretch_factors("x", 5, seed=0) != data._stretch_factors("x", 5, seed=1)
    assert data._stretch_factors("x", 0) == []


def test_transpose_roll_moves_keys_or_refuses():
    roll = np.zeros((3, 8), np.uint8)
    roll[0, [1, 4]] = roll[2, 6] = 1
    up = data.transpose_roll(roll, 1)
    assert [list(np.flatnonzero(r)) for r in up] == [[2, 5], [], [7]]
    down = data.transpose_roll(roll, -1)
    assert [list(np.flatnonzero(r)) for r in down] == [[0, 3], [], [5]]
    assert data.transpose_roll(roll, 2) is None  # key 6 + 2 leaves the 8 keys
    assert data.transpose_roll(roll, -2) is None  # key 1 - 2 too
    assert data.transpose_roll(roll, 0) is roll
    assert data.transpose_roll(np.zeros((4, 8), np.uint8), 7).shape == (4, 8)


def test_transposed_clones_of_training_pieces(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds", n_clones=0, transpose=(-3, 5)))
    train, _ = sources(ds)
    names = {e["name"] for e in ds.train.entries}
    for source in train:
        np.testing.assert_array_equal(ds.train.roll(f"{source}@t-3"), data.transpose_roll(rolls[source], -3))
        fits = data.transpose_roll(rolls[source], 5) is not None
        assert (f"{source}@t+5" in names) == fits  # a shift that pushes a note off the keys is left out
        if fits:
            np.testing.assert_array_equal(ds.train.roll(f"{source}@t+5"), data.transpose_roll(rolls[source], 5))
    assert not any("@" in e["name"] for e in ds.val.entries)
    assert ds.index["params"]["transpose"] == [-3, 5]
    assert data.dataset_statistics(ds.train)["originals"] == len(train)


def test_dataset_arrays_are_memory_mapped_and_match_the_encoder(midi_folder, tmp_path):
    folder, rolls = midi_folder
    out = build_small(folder, tmp_path / "ds")
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "train.npy", "val.npy"]
    ds = data.load_dataset(out)
    for split in (ds.train, ds.val):
        assert isinstance(split.sequence, np.memmap) and split.sequence.dtype == np.uint8
        assert not split.sequence.flags.writeable
        assert split.encoding == DEFAULT_ENCODING
        pos = 0  # pieces tile the array end to end, on whole time steps
        for name, a, b in split.pieces:
            assert a == pos and b > a and (b - a) % K == 0
            pos = b
        assert pos == split.sequence.shape[0]
        for e in split.entries:
            if e["stretch"] == 1.0:
                np.testing.assert_array_equal(split.piece(e["name"]), roll_to_sequence(rolls[e["name"]]))
                np.testing.assert_array_equal(split.roll(e["name"]), rolls[e["name"]])
    with pytest.raises(KeyError, match="no piece"):
        ds.val.piece("nope")
    index = json.loads((out / "index.json").read_text())
    assert index["encoding"] == DEFAULT_ENCODING.to_dict()
    assert index["params"]["seed"] == 3 and index["params"]["n_clones"] == 2


def test_another_encoding(midi_folder, tmp_path):
    folder, rolls = midi_folder
    enc = Encoding(24, 40, 30)
    ds = data.load_dataset(build_small(folder, tmp_path / "ds", encoding=enc, n_clones=0))
    assert ds.encoding == ds.train.encoding == enc
    name = ds.val.pieces[0][0]
    path = next(p for p in midi_files(folder) if piece_name(p, folder) == name)
    np.testing.assert_array_equal(ds.val.roll(0), midi_to_roll(path, enc))


def test_dataset_cache_reuse_and_rebuild(midi_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PIANOLAB_DATA", str(tmp_path / "home"))
    folder, _ = midi_folder
    out = build_small(folder, None)
    assert out.parent == tmp_path / "home" / "datasets" and out.name.startswith("corpus-")
    stamp = (out / "index.json").stat().st_mtime_ns
    assert build_small(folder, None) == out
    assert (out / "index.json").stat().st_mtime_ns == stamp  # reused
    assert build_small(folder, None, seed=4) != out  # other parameters, other cache folder
    assert build_small(folder, None, transpose=(2,)) != out
    # a changed corpus file invalidates the cache
    write_midi(make_roll(np.random.default_rng(9), 77), folder / "a.mid")
    assert build_small(folder, None) == out and (out / "index.json").stat().st_mtime_ns != stamp
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
    a = data.load_dataset(build_small(folder, tmp_path / "a", max_pieces=4))
    b = data.load_dataset(build_small(folder, tmp_path / "b", max_pieces=4))
    assert len(set.union(*sources(a))) == 4 and set.union(*sources(a)) <= set(rolls)
    assert sources(a) == sources(b)


def test_errors_name_the_corpus_or_dataset(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no MIDI files") as err:
        data.build_dataset(empty, tmp_path / "x", progress=False)
    assert err.value.key == "corpus" and str(empty) in str(err.value)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.mid").write_text("nope")
    with pytest.raises(ConfigError, match="none of the 1 MIDI files"):
        data.build_dataset(only_bad, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="no pianolab dataset"):
        data.load_dataset(tmp_path / "nothing")


def test_an_old_or_damaged_dataset_is_refused(midi_folder, tmp_path):
    folder, _ = midi_folder
    out = build_small(folder, tmp_path / "ds", n_clones=0)
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps(dict(index, version=data.DATASET_VERSION + 1)))
    with pytest.raises(ConfigError, match="rebuild it"):
        data.load_dataset(out)
    (out / "index.json").write_text(json.dumps(index))
    np.save(out / "val.npy", np.zeros(3, np.uint8))
    with pytest.raises(ConfigError, match="val.npy: expected"):
        data.load_dataset(out)
    assert build_small(folder, tmp_path / "ds", n_clones=0) == out  # the cache check rebuilds it
    assert data.load_dataset(out).val.sequence.shape == (index["splits"]["val"]["key_states"],)


def test_dataset_from_rolls_holds_splits_in_memory():
    rng = np.random.default_rng(1)
    train = {"p": make_roll(rng, 10), "p@t+2": make_roll(rng, 4), "q": make_roll(rng, 7)}
    val = {"v": make_roll(rng, 5)}
    ds = data.dataset_from_rolls(train, val, DEFAULT_ENCODING, name="mem")
    assert [p[0] for p in ds.train.pieces] == list(train) and str(ds.path) == "mem"
    for name, roll in train.items():
        np.testing.assert_array_equal(ds.train.roll(name), roll)
    np.testing.assert_array_equal(ds.val.roll("v"), val["v"])
    assert ds.train.sequence.dtype == np.uint8 and ds.train.sequence.size == sum(r.size for r in train.values())
    assert data.dataset_statistics(ds.train)["originals"] == 2  # the clone 'p@t+2' has source 'p'
    assert ds.key_down_rate == pytest.approx(np.mean(np.concatenate([r.reshape(-1) for r in train.values()])))


def test_statistics_of_a_split_and_a_dataset(midi_folder, tmp_path):
    folder, rolls = midi_folder
    ds = data.load_dataset(build_small(folder, tmp_path / "ds"))
    st = data.dataset_statistics(ds)
    total_steps = sum(r.shape[0] for r in rolls.values())
    assert st["pieces"] == len(rolls) and st["key_states"] == total_steps * K
    assert st["minutes"] == pytest.approx(total_steps / DEFAULT_ENCODING.steps_per_second / 60, abs=1e-3)
    per_key = sum(r.sum(axis=0) for r in rolls.values())
    np.testing.assert_array_equal(st["per_key"], per_key)
    assert st["key_down_rate"] == pytest.approx(per_key.sum() / (total_steps * K))
    tr = data.dataset_statistics(ds.train)
    n_train = len(sources(ds)[0])
    assert tr["pieces"] == n_train * (1 + 2) and tr["originals"] == n_train
    assert tr["key_states"] == ds.train.sequence.shape[0]
    assert tr["key_down_rate"] == pytest.approx(ds.key_down_rate)
    assert st["train"]["key_states"] == tr["key_states"] and st["val"]["pieces"] == len(rolls) - n_train
    np.testing.assert_array_equal(st["train"]["per_key"], tr["per_key"])
    # the index carries the same numbers, computed at build time
    assert ds.index["stats"]["corpus"]["key_states"] == st["key_states"]
    assert ds.index["stats"]["train"]["key_down_rate"] == pytest.approx(tr["key_down_rate"])


def test_statistics_of_a_synthetic_split():
    enc = Encoding(48, 60, 4)
    roll = np.zeros((48 * 60, 4), np.uint8)  # one minute
    roll[:, 0] = 1
    roll[::2, 3] = 1
    st = data.dataset_statistics(data.Split("val", roll_to_sequence(roll), [("x", 0, roll.size)], enc))
    assert st["pieces"] == 1 and st["minutes"] == pytest.approx(1.0)
    assert st["key_down_rate"] == pytest.approx(1.5 / 4)
    np.testing.assert_array_equal(st["per_key"], [48 * 60, 0, 0, 48 * 30])


def test_the_real_default_dataset():
    """The default dataset (built by `make corpus`): every corpus piece, split by piece, about 5% keys down."""
    ds = data.load_dataset()
    st = ds.index["stats"]["corpus"]
    assert st["pieces"] == len(corpus_manifest()["pieces"]) - len(ds.index["skipped"])
    assert st["minutes"] == pytest.approx(corpus_manifest()["seconds"] / 60, rel=0.02)
    assert 0.02 < st["key_down_rate"] < 0.08 and 0.02 < ds.key_down_rate < 0.08
    assert len(ds.val) == round(st["pieces"] * ds.index["params"]["val_fraction"])
    assert ds.index["stats"]["train"]["pieces"] == (1 + ds.index["params"]["n_clones"]) * (st["pieces"] - len(ds.val))
    train, val = sources(ds)
    assert not train & val
    assert len(st["per_key"]) == K and st["per_key"][0] < st["per_key"][K // 2]


def test_importing_pianolab_data_does_not_import_keras_or_music21():
    code = ("import sys, pianolab.data as d; "
            "bad = [m for m in ('keras', 'tensorflow', 'music21', 'torch', 'jax') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
