"""pianolab.cli: the data and train commands; a bad flag or config ends in one line naming the flag
or key, exit status 2 (chapter 04_training)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import habit_rolls, tiny_config

from pianolab.cli import main
from pianolab.encoding import write_midi
from pianolab.encoding import DEFAULT_ENCODING
from pianolab.model import build_model, logit, receptive_field

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five small MIDI files and one that is not MIDI."""
    folder = tmp_path_factory.mktemp("cli") / "corpus"
    for name, roll in habit_rolls("piece", 5, 120, seed=4).items():
        write_midi(roll, folder / f"{name}.mid")
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00")
    return folder


def test_data_builds_a_dataset_from_a_folder(corpus, tmp_path, capsys):
    from pianolab.data import load_dataset

    assert main(["data", "--corpus", str(corpus), "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    out = capsys.readouterr().out
    ds = load_dataset(tmp_path / "ds")
    stats = ds.index["stats"]
    assert f"corpus: 6 MIDI files in {corpus}" in out
    assert f"dataset: {stats['corpus']['pieces']} pieces" in out and stats["corpus"]["pieces"] == 5
    assert f"val: {len(ds.val)} pieces" in out and "key-down rate" in out
    assert "skipped 1 files" in out and str(tmp_path / "ds") in out
    assert main(["data", "--corpus", str(corpus), "--no-dataset", "--quiet"]) == 0
    assert "6 MIDI files" in capsys.readouterr().out


def test_data_names_a_bad_corpus_flag(tmp_path, capsys):
    for folder in (tmp_path / "missing", tmp_path):  # no folder; a folder without MIDI files
        assert main(["data", "--corpus", str(folder), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pianolab data: error: --corpus: ") and str(folder) in err
        assert len(err.splitlines()) == 1


def test_train_starts_and_resumes_a_run(corpus, tmp_path, capsys):
    from pianolab.data import build_dataset
    from pianolab.runs import History

    cfg = tiny_config(steps=4, checkpoint_every=2, validate_every=2)
    cfg.data.dataset = str(build_dataset(corpus, tmp_path / "ds", n_clones=0, val_fraction=0.4, progress=False))
    cfg.to_json(tmp_path / "cfg.json")
    run = tmp_path / "run"
    assert main(["train", str(run), "--config", str(tmp_path / "cfg.json"), "--steps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    val = History.read(run).val_loss[-1]
    assert out.startswith(f"{run}: step 2, validation loss {val:.4f} nats per key state")
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    assert main(["train", str(run), "--quiet"]) == 0  # the run's own config: on to training.steps
    assert f"{run}: step 4," in capsys.readouterr().out
    assert History.read(run).final_step == 4 and np.isfinite(History.read(run).val_loss[-1])


@pytest.mark.parametrize("argv, flag", [
    (["train", "r", "--steps", "-3"], "--steps"),
    (["train", "r", "--steps", "1.5"], "--steps"),
    (["train", "r", "--steps", "many"], "--steps"),
    (["train", "r", "--stepz", "3"], "--stepz"),
    (["train"], "run_dir"),
    (["fit", "r"], "fit"),
])
def test_bad_flags_are_named_with_exit_status_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_bad_config_files_are_named(tmp_path, capsys):
    assert main(["train", str(tmp_path / "r"), "--config", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "missing.json" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": {"stepz": 3}}))
    assert main(["train", str(tmp_path / "r"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pianolab train: error: training.stepz: unknown key; allowed:") and "bad.json" in err
    assert not (tmp_path / "r").exists(), "a refused config starts no run"


def test_python_m_pianolab_exits_with_status_2_on_a_bad_flag(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pianolab", "train", str(tmp_path / "r"), "--steps", "-1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert res.returncode == 2 and "--steps" in res.stderr and "expected a number >= 0" in res.stderr


keras = pytest.importorskip("keras")


# ---------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model("tiny", output_bias=logit(0.05), seed=13).save(path)
    return path


def test_generate_writes_midi_wav_and_settings(saved_model, tmp_path):
    out = tmp_path / "perf"
    args = ["generate", str(saved_model), "--seconds", "0.5", "--streams", "2", "--quiet", "--random-seed", "5"]
    assert main(args + ["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["performance.json", "performance_00.mid", "performance_00.wav",
                                                     "performance_01.mid", "performance_01.wav"]
    assert (out / "performance_00.wav").read_bytes()[:4] == b"RIFF"
    settings = json.loads((out / "performance.json").read_text())
    assert settings["streams"] == 2 and settings["random_seed"] == 5 and settings["seconds"] == 0.5
    again = tmp_path / "again"
    assert main(args + ["--out", str(again), "--no-audio"]) == 0
    assert (again / "performance_00.mid").read_bytes() == (out / "performance_00.mid").read_bytes()
    assert not (again / "performance_00.wav").exists()


@pytest.mark.parametrize("flag, value", [("--seconds", "-1"), ("--seconds", "inf"), ("--seconds", "4000"),
                                         ("--streams", "0"), ("--streams", "1.5"), ("--temperature", "0"),
                                         ("--seed-seconds", "-2"), ("--random-seed", "-3")])
def test_generate_flags_are_checked_at_the_boundary(saved_model, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(saved_model), "--out", str(tmp_path / "x"), flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "expected" in err  # argparse names the flag and what is allowed
    assert not (tmp_path / "x").exists()


def test_generate_errors_name_the_argument(saved_model, tmp_path, capsys):
    not_midi = tmp_path / "seed.mid"
    not_midi.write_bytes(b"not midi")
    inputs = keras.Input((None, 1))
    dense = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    dense.save(tmp_path / "dense.keras")
    cases = [([str(saved_model), "--seed", "no/such/file.mid"], "--seed: 'no/such/file.mid' is neither 'silence', "
                                                                "'corpus:NAME' nor a MIDI file"),
             ([str(saved_model), "--seed", str(not_midi)], "--seed"),
             ([str(saved_model), "--seed", "corpus:no such piece"], "--seed"),
             ([str(tmp_path / "no_such_run")], "MODEL"),
             ([str(tmp_path / "dense.keras")], "Dense"),
             ([str(saved_model), "--out", str(not_midi)], "--out")]
    for args, where in cases:
        out = [] if "--out" in args else ["--out", str(tmp_path / "y")]
        assert main(["generate", *args, *out, "--quiet"]) == 2
        assert where in capsys.readouterr().err


def test_generate_reads_a_run_directory(saved_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(saved_model, run / "model.keras")
    out = tmp_path / "from_run"
    assert main(["generate", str(run), "--seconds", "0.25", "--out", str(out), "--no-audio", "--quiet"]) == 0
    assert (out / "performance_00.mid").read_bytes()[:4] == b"MThd"
    settings = json.loads((out / "performance.json").read_text())
    assert settings["encoding"] == DEFAULT_ENCODING.to_dict()  # no config.json: the default encoding
    assert settings["receptive_field"] == receptive_field("tiny")
