"""The models shipped under data/models: their records agree with the weights, and they fit the
budget (issue: the article's experiments; chapters 06-09 load them)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pianolab.model import layer_plan, model_receptive_field  # noqa: E402
from pianolab.config import RunConfig  # noqa: E402
from pianolab.runs import History, load_model, load_snapshot, snapshot_steps  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "data" / "models"
CORPUS_MODELS = ["deep", "shallow"]  # trained with `pianolab train` on the default corpus
SEED_MODELS = [f"small_{arch}_{seed}" for arch in ("deep", "shallow") for seed in range(3)]  # chapter 06's seeds


def test_the_shipped_models_fit_the_budget():
    # 24 MB until chapter 06's six seed runs (about 0.3 MB each, weights only) joined; the wheel carries it all.
    size = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert size < 25e6, f"data/models holds {size / 1e6:.1f} MB; the budget is 25 MB"
    for name in CORPUS_MODELS + SEED_MODELS + ["jsb"]:
        have = {p.name for p in (MODELS / name).iterdir()}
        assert {"COMMAND.txt", "README.md", "config.json", "history.csv", "model.keras"} <= have, name


@pytest.mark.parametrize("name", CORPUS_MODELS)
def test_records_agree_with_the_weights(name):
    run = MODELS / name
    summary = json.loads((run / "summary.json").read_text())
    config = RunConfig.from_json(run / "config.json")
    model = load_model(name)
    assert model.count_params() == summary["params"]
    conv = [layer for layer in model.layers if hasattr(layer, "dilation_rate") and layer.name != "output"]
    assert [(layer.filters, layer.dilation_rate[0]) for layer in conv] == layer_plan(config.filter_increments)
    assert model_receptive_field(model) == config.receptive_field == summary["receptive_field"]
    history = History.read(run)
    assert history.final_step == summary["steps"]
    assert history.val_loss[-1] == pytest.approx(summary["final_val_loss"])
    assert history.rows[-1]["key_states"] == summary["key_states"]
    assert f"{summary['steps']:,} Adam steps" in (run / "README.md").read_text()
    assert snapshot_steps(name) == summary["snapshots"] and summary["snapshots"][-1] == summary["steps"]
    final = load_snapshot(name, summary["steps"])
    for a, b in zip(final.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_deep_and_shallow_are_a_fair_pair():
    """Chapter 06's comparison: about the same parameters and receptive field, trained alike."""
    s = {n: json.loads((MODELS / n / "summary.json").read_text()) for n in CORPUS_MODELS}
    deep, shallow = s["deep"], s["shallow"]
    assert deep["blocks"] >= 3 and shallow["blocks"] == 1
    assert 3e5 <= deep["params"] <= 1e6
    assert abs(deep["params"] - shallow["params"]) / deep["params"] < 0.05
    assert abs(deep["receptive_field"] - shallow["receptive_field"]) <= 2
    assert deep["steps"] == shallow["steps"] and deep["key_states"] == shallow["key_states"]
    c = {n: RunConfig.from_json(MODELS / n / "config.json").to_dict() for n in CORPUS_MODELS}
    for section in ("data", "training", "validation"):
        assert c["deep"][section] == c["shallow"][section], section


@pytest.mark.parametrize("name", SEED_MODELS)
def test_seed_runs_records_agree_with_the_weights(name):
    run = MODELS / name
    summary, config = json.loads((run / "summary.json").read_text()), RunConfig.from_json(run / "config.json")
    model, history = load_model(name), History.read(run)
    assert model.count_params() == summary["params"]
    assert model_receptive_field(model) == config.receptive_field == summary["receptive_field"]
    assert history.final_step == summary["steps"] == config.training.steps
    assert history.val_loss[np.isfinite(history.val_loss)][-1] == pytest.approx(summary["final_val_loss"])
    assert config.training.seed == summary["training_seed"] == int(name[-1])
    assert f"{summary['steps']:,} Adam steps" in (run / "README.md").read_text()


def test_seed_runs_are_fair_pairs():
    """Chapter 06's three seeds per architecture: equal budget and reach, configs equal but the model and the
    training seed, and the same data, split and validation as the large deep/shallow pair."""
    c = {n: RunConfig.from_json(MODELS / n / "config.json").to_dict() for n in SEED_MODELS + CORPUS_MODELS}
    s = {n: json.loads((MODELS / n / "summary.json").read_text()) for n in SEED_MODELS}
    for seed in range(3):
        deep, shallow = s[f"small_deep_{seed}"], s[f"small_shallow_{seed}"]
        assert deep["blocks"] >= 3 and shallow["blocks"] == 1
        assert abs(deep["params"] - shallow["params"]) / deep["params"] < 0.01
        assert abs(deep["receptive_field"] - shallow["receptive_field"]) <= 2
        assert deep["key_states"] == shallow["key_states"]
    for n in SEED_MODELS:
        assert c[n]["data"] == c["deep"]["data"] and c[n]["validation"] == c["deep"]["validation"]
        assert {**c[n]["training"], "seed": 0, "steps": 0, "snapshot_at": []} == \
            {**c["small_deep_0"]["training"], "seed": 0, "steps": 0, "snapshot_at": []}


@pytest.mark.parametrize("name", ["jsb", "nottingham", "musedata", "pianomidi"])
def test_benchmark_models_match_their_config_and_record(name):
    """Chapter 09's models: trained from benchmarks/configs/<name>.json within 2 hours, records true."""
    run = MODELS / name
    assert {"COMMAND.txt", "README.md", "config.json", "history.csv", "model.keras", "results.json"} <= \
        {p.name for p in run.iterdir()}
    config = RunConfig.from_json(run / "config.json")
    started = RunConfig.from_json(MODELS.parent.parent / "benchmarks" / "configs" / f"{name}.json")
    assert config == started and config.data.benchmark == name
    record, history, model = json.loads((run / "results.json").read_text()), History.read(run), load_model(name)
    assert model.count_params() == record["params"] and model_receptive_field(model) == record["receptive_field"]
    assert history.final_step == record["steps"] == config.training.steps
    assert record["train_seconds"] == pytest.approx(history.seconds[-1], abs=0.1) and record["train_seconds"] <= 7200
    assert f"{record['test_nll']:.3f}" in (run / "README.md").read_text()
