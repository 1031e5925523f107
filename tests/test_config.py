"""pianolab.config: one validation mechanism for run configs; every error names the dotted key."""

import json
from dataclasses import dataclass

import pytest

from pianolab.config import DataConfig, RunConfig, _from_dict
from pianolab.encoding import Encoding
from pianolab.errors import ConfigError
from pianolab.model import PRESETS, receptive_field


def test_round_trip_through_json(tmp_path):
    cfg = RunConfig(data={"transpose": [-2, 3], "encoding": {"steps_per_second": 24, "lowest": 40, "n_keys": 48}},
                    model={"preset": "tiny"}, training={"lr": 1e-3, "lr_final": 1e-5, "snapshot_at": [5, 10]},
                    validation={"n_windows": None})
    path = cfg.to_json(tmp_path / "c.json")
    again = RunConfig.from_json(path)
    assert again == cfg and again.to_dict() == cfg.to_dict() == json.loads(path.read_text())
    assert again.encoding == Encoding(24, 40, 48)
    assert not [p for p in tmp_path.iterdir() if p.name != "c.json"], "temporary files left behind"


def test_defaults_and_derived_values():
    cfg = RunConfig()
    assert cfg.model.preset == "pianonet_mini" and cfg.filter_increments == PRESETS["pianonet_mini"]
    assert cfg.receptive_field == receptive_field("pianonet_mini")
    assert cfg.encoding == Encoding() and cfg.data.benchmark is None and cfg.data.transpose == []
    assert cfg.training.lr_final is None and cfg.val_targets == cfg.training.n_targets
    # explicit filter_increments replace the default preset
    c = RunConfig.from_dict({"model": {"filter_increments": [[2, 2], [2]]}})
    assert c.model.preset is None and c.receptive_field == 1 + (1 + 2) + 1
    assert RunConfig(validation={"n_targets": 99}).val_targets == 99
    # mutable defaults are not shared between configs
    a, b = RunConfig(), RunConfig()
    a.data.stretch.append(9)
    assert b.data.stretch == DataConfig().stretch


def test_batch_size_ramp_doubles_up_to_batch_end():
    cfg = RunConfig(training={"batch_start": 1, "batch_end": 4, "batch_double_every": 4})
    assert [cfg.batch_size_at(s) for s in range(14)] == [1] * 4 + [2] * 4 + [4] * 6
    flat = RunConfig(training={"batch_start": 3, "batch_end": 3})
    assert {flat.batch_size_at(s) for s in range(0, 10_000, 97)} == {3}


def test_sections_may_be_given_as_dataclasses_or_tuples():
    cfg = RunConfig(data=DataConfig(n_clones=2), training={"snapshot_at": (4, 8)})
    assert cfg.data.n_clones == 2 and cfg.training.snapshot_at == [4, 8]
    assert RunConfig.from_dict(cfg) == cfg


@pytest.mark.parametrize("bad, key", [
    ({"trainig": {}}, "trainig"),
    ({"model": "tiny"}, "model"),
    ({"training": {"learning_rate": 0.1}}, "training.learning_rate"),
    ({"training": {"lr": "fast"}}, "training.lr"),
    ({"training": {"lr": -1}}, "training.lr"),
    ({"training": {"lr": float("nan")}}, "training.lr"),
    ({"training": {"lr_final": 0}}, "training.lr_final"),
    ({"training": {"n_targets": 10.5}}, "training.n_targets"),
    ({"training": {"steps": True}}, "training.steps"),
    ({"training": {"batch_start": 8, "batch_end": 4}}, "training.batch_end"),
    ({"training": {"keep_checkpoints": 1}}, "training.keep_checkpoints"),
    ({"training": {"distribute": "horovod"}}, "training.distribute"),
    ({"training": {"jit_compile": "yes"}}, "training.jit_compile"),
    ({"training": {"snapshot_at": [0, 100]}}, "training.snapshot_at"),
    ({"training": {"snapshot_at": 100}}, "training.snapshot_at"),
    ({"model": {"preset": "huge"}}, "model.preset"),
    ({"model": {"preset": "tiny", "filter_increments": [[2]]}}, "model.filter_increments"),
    ({"model": {"filter_increments": [[0, 2]]}}, "model.filter_increments"),
    ({"model": {"filter_increments": [[]]}}, "model.filter_increments"),
    ({"model": {"output_bias": "auto"}}, "model.output_bias"),
    ({"model": {"activation": ""}}, "model.activation"),
    ({"data": {"encoding": {"n_keys": 200}}}, "data.encoding"),
    ({"data": {"encoding": {"keys": 88}}}, "data.encoding"),
    ({"data": {"benchmark": "bach"}}, "data.benchmark"),
    ({"data": {"transpose": [0]}}, "data.transpose"),
    ({"data": {"transpose": [13]}}, "data.transpose"),
    ({"data": {"transpose": 2}}, "data.transpose"),
    ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
    ({"data": {"stretch": [1.2, 0.8]}}, "data.stretch"),
    ({"data": {"n_clones": -1}}, "data.n_clones"),
    ({"data": {"max_pieces": 0}}, "data.max_pieces"),
    ({"validation": {"n_windows": 0}}, "validation.n_windows"),
])
def test_errors_name_the_dotted_key(bad, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(bad)
    assert err.value.key == key and str(err.value).startswith(f"{key}: ")
    assert "expected" in str(err.value) or "allowed" in str(err.value) or "give" in str(err.value)
    # the keyword constructor goes through the same rules
    if isinstance(bad, dict) and all(k in ("data", "model", "training", "validation") for k in bad):
        with pytest.raises(ConfigError) as err:
            RunConfig(**bad)
        assert err.value.key == key


def test_an_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"training": {"stepz": 3}})
    assert "steps" in err.value.reason and "snapshot_at" in err.value.reason


def test_the_generic_reader_works_for_any_rule_table():
    """from_dict is not tied to RunConfig: a dataclass whose fields carry rules is read the same way."""
    from pianolab.config import _int, _rule

    @dataclass
    class Section:
        count: int = _rule(3, *_int(1))

    assert _from_dict(Section, {}, "x").count == 3
    assert _from_dict(Section, {"count": 7}, "x").count == 7
    with pytest.raises(ConfigError) as err:
        _from_dict(Section, {"count": 0}, "outer.x")
    assert err.value.key == "outer.x.count" and ">= 1" in err.value.reason


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "c.json"
    with pytest.raises(ConfigError, match="cannot be read"):
        RunConfig.from_json(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json(p)
    p.write_text(json.dumps({"training": {"lr": "x"}}))
    with pytest.raises(ConfigError, match=r"expected a number > 0.*c\.json") as err:
        RunConfig.from_json(p)
    assert err.value.key == "training.lr"
