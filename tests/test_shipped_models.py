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


def test_the_shipped_models_fit_the_budget():
    size = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert size < 24e6, f"data/models holds {size / 1e6:.1f} MB; the budget is 24 MB"
    for name in CORPUS_MODELS + ["jsb"]:
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
