"""Run configs: plain dataclasses read by ONE generic ``_from_dict`` (chapter 04_training).

A run config has four sections, ``data``, ``model``, ``training`` and ``validation``. Every field
carries its rule (a check and the words for what is allowed) in its metadata; :func:`_from_dict`
applies them at the boundary (a JSON file, a dict, ``RunConfig(model=...)``), so the stages never
check a setting again, and an unknown key or bad value raises ``ConfigError`` naming the dotted key
(``training.lr``). Dataclasses rather than pydantic: the rules fit one table-like class per section,
the messages are in the book's words, and the package needs no extra dependency.
"""

import copy
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from . import _io, benchmark
from .benchmark import BENCHMARKS
from .encoding import Encoding
from .errors import ConfigError
from .model import PRESETS, build_model, layer_plan, logit, receptive_field


def _rule(default, check, allowed):
    extra = {"metadata": {"check": check, "allowed": allowed}}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), **extra)
    return field(default=default, **extra)


def _int(lo, none=False):
    ok = lambda v: (none and v is None) or (type(v) is int and v >= lo)  # noqa: E731
    return ok, f"a whole number >= {lo}" + (" or null" if none else "")


def _num(v):
    return type(v) in (int, float) and math.isfinite(v)


def _builds(kind, make):
    """A check: null, or a ``kind`` from which ``make`` builds without an error."""
    def ok(v):
        try:
            return v is None or (isinstance(v, kind) and bool(make(v)))
        except (TypeError, ValueError):
            return False
    return ok


@dataclass
class DataConfig:
    """Where the key states come from (chapter 04_training)."""

    dataset: str = _rule(None, lambda v: v is None or isinstance(v, str),
                         "a dataset folder (from `python -m pianolab data`) or null")
    corpus: str = _rule(None, lambda v: v is None or isinstance(v, str),
                        "a folder of MIDI files, or null for the built-in corpus")
    benchmark: str = _rule(None, lambda v: v is None or v in BENCHMARKS, f"null or one of {list(BENCHMARKS)} "
                           "(its own split; of the other keys only transpose applies)")
    encoding: dict = _rule(None, _builds(dict, Encoding.from_dict),
                           "null or {steps_per_second, lowest, n_keys} inside MIDI 0..127")
    val_fraction: float = _rule(0.1, lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)")
    n_clones: int = _rule(5, *_int(0))
    stretch: list = _rule([0.85, 1.15], lambda v: isinstance(v, list) and len(v) == 2 and all(
        _num(s) and s > 0 for s in v) and v[0] <= v[1], "two numbers [low, high] with 0 < low <= high")
    transpose: list = _rule([], lambda v: isinstance(v, list) and all(type(s) is int and s and abs(s) <= 12
                            for s in v), "a list of semitone shifts in -12..12 (not 0) for training clones")
    max_pieces: int = _rule(None, *_int(1, none=True))
    seed: int = _rule(0, *_int(0))


@dataclass
class ModelConfig:
    """Which network: a preset name or explicit ``filter_increments`` (chapter 03_receptive_field)."""

    preset: str = _rule(None, lambda v: v is None or v in PRESETS, f"one of {sorted(PRESETS)} or null "
                        "(null with null filter_increments: 'pianonet_mini')")
    filter_increments: list = _rule(None, _builds(list, layer_plan), "null or a list of blocks, each a non-empty list "
                                    "of whole numbers >= 0 (the very first >= 1)")
    output_bias: object = _rule("calibrated", lambda v: v == "calibrated" or _num(v),
                                "'calibrated' (the logit of the training key-down rate) or a number")
    activation: str = _rule("elu", lambda v: isinstance(v, str) and v != "", "a Keras activation such as 'elu'")


@dataclass
class TrainingConfig:
    """How to train (chapter 04_training): Adam at ``lr`` (decaying to ``lr_final``), ``n_targets`` key
    states predicted per window, the batch size from ``batch_start`` doubling every ``batch_double_every``
    steps up to ``batch_end``; checkpoints, validation (0: never) and history rows every so many steps;
    weights kept for good at ``snapshot_at``; ``distribute: "mirrored"``: data-parallel on all devices."""

    lr: float = _rule(1e-4, lambda v: _num(v) and v > 0, "a number > 0")
    lr_final: float = _rule(None, lambda v: v is None or (_num(v) and v > 0),
                            "null (a constant lr) or a number > 0: cosine decay from lr to it over the "
                            "training.steps the run starts with")
    n_targets: int = _rule(8192, *_int(1))
    batch_start: int = _rule(1, *_int(1))
    batch_end: int = _rule(32, *_int(1))
    batch_double_every: int = _rule(200, *_int(1))
    steps: int = _rule(20000, *_int(0))
    checkpoint_every: int = _rule(100, *_int(1))
    validate_every: int = _rule(100, *_int(0))
    log_every: int = _rule(10, *_int(1))
    keep_checkpoints: int = _rule(3, *_int(2))
    snapshot_at: list = _rule([], lambda v: isinstance(v, list) and all(type(s) is int and s >= 1 for s in v),
                              "a list of step numbers >= 1, e.g. [100, 200, 400]")
    seed: int = _rule(0, *_int(0))
    jit_compile: object = _rule(False, lambda v: v in (True, False, "auto"), "true, false or 'auto'")
    distribute: str = _rule(None, lambda v: v in (None, "mirrored"), "null or 'mirrored' (TensorFlow backend)")


@dataclass
class ValidationConfig:
    """How the validation loss is measured (chapter 04_training): ``n_windows`` fixed windows of the
    held-out pieces drawn once with ``seed`` (null: every key state), each scoring ``n_targets`` key
    states (null: the training ``n_targets``)."""

    n_windows: int = _rule(16, *_int(1, none=True))
    n_targets: int = _rule(None, *_int(1, none=True))
    batch_size: int = _rule(4, *_int(1))
    seed: int = _rule(0, *_int(0))


def _from_dict(cls, d, where):
    """A validated ``cls`` (a config dataclass) from a plain dict; ``where`` prefixes error keys."""
    if isinstance(d, cls):
        d = _to_dict(d)
    if not isinstance(d, dict):
        raise ConfigError(where, f"expected an object (dict) of settings, got {d!r}")
    known = {f.name: f for f in fields(cls)}
    for key in (k for k in d if k not in known):
        raise ConfigError(f"{where}.{key}".lstrip("."), f"unknown key; allowed: {', '.join(known)}")
    values = {}
    for name, f in known.items():
        key = f"{where}.{name}".lstrip(".")
        if is_dataclass(f.type):
            values[name] = _from_dict(f.type, d.get(name, {}), key)
            continue
        if name not in d:
            continue
        v = list(d[name]) if isinstance(d[name], tuple) else copy.deepcopy(d[name])
        if not f.metadata["check"](v):
            raise ConfigError(key, f"expected {f.metadata['allowed']}, got {v!r}")
        values[name] = v
    return cls(**values)


def _to_dict(obj):
    """A config dataclass as a plain, JSON-ready dict."""
    return {f.name: _to_dict(getattr(obj, f.name)) if is_dataclass(f.type) else copy.deepcopy(getattr(obj, f.name))
            for f in fields(obj)}


@dataclass
class RunConfig:
    """A validated run config (chapter 04_training): ``RunConfig(model={"preset": "tiny"})``,
    :meth:`from_dict` or :meth:`from_json`; each section is checked by :func:`_from_dict` (the
    sections given as dicts), then the rules that tie keys together."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, _from_dict(f.type, getattr(self, f.name), f.name))
        m, t = self.model, self.training
        if m.preset is None and m.filter_increments is None:
            m.preset = "pianonet_mini"
        if m.preset is not None and m.filter_increments is not None:
            raise ConfigError("model.filter_increments", "give model.preset or model.filter_increments, "
                                                         "not both (set the other to null)")
        if t.batch_end < t.batch_start:
            raise ConfigError("training.batch_end", f"expected a whole number >= training.batch_start "
                                                    f"({t.batch_start}), got {t.batch_end}")

    @classmethod
    def from_dict(cls, d):
        """A RunConfig from a plain dict such as ``json.load`` gives."""
        return _from_dict(cls, d, "")

    @classmethod
    def from_json(cls, path):
        """Read and validate a JSON run config; errors name the file too."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("config", f"{path}: cannot be read ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise ConfigError("config", f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(exc.key, f"{exc.reason} (in {path})") from None

    def to_dict(self):
        return _to_dict(self)

    def to_json(self, path):
        """Write the config as JSON, atomically."""
        return _io.write_bytes(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @property
    def filter_increments(self):
        """The model's ``filter_increments`` (from the preset or given)."""
        return [list(b) for b in (self.model.filter_increments or PRESETS[self.model.preset])]

    @property
    def receptive_field(self):
        return receptive_field(self.filter_increments)

    @property
    def encoding(self):
        """The data's :class:`~pianolab.encoding.Encoding` (a benchmark's, or the default one when null)."""
        d = self.data
        return benchmark.ENCODING if d.benchmark else Encoding.from_dict(d.encoding) if d.encoding else Encoding()

    @property
    def val_targets(self):
        return self.validation.n_targets or self.training.n_targets

    def batch_size_at(self, step):
        """The batch size of step ``step`` (0-based) under the ramp (chapter 04_training)."""
        t = self.training
        return int(min(t.batch_end, t.batch_start * 2 ** (int(step) // t.batch_double_every)))

    def build_model(self, dataset=None):
        """The untrained model: with ``dataset``, one to train (``model.output_bias`` 'calibrated': the
        logit of its training key-down rate; weights seeded with ``training.seed``); without, the
        architecture only, for weights read from a file."""
        bias = self.model.output_bias if dataset is not None else 0.0
        bias = logit(dataset.train.key_down_rate) if bias == "calibrated" else bias
        return build_model(self.filter_increments, output_bias=float(bias), activation=self.model.activation,
                           seed=None if dataset is None else self.training.seed)

    def open_dataset(self, progress=True):
        """The dataset ``data`` names: ``data.benchmark`` (with its ``transpose`` shifts), ``data.dataset``,
        else the (cached) dataset built from ``data.corpus``."""
        from . import data
        d = self.data
        if d.benchmark is not None:
            return benchmark.dataset(benchmark.load(d.benchmark), d.transpose)
        try:  # data checks the folder (once); its error is re-named after the key that gave the folder
            if d.dataset is not None:
                return data.load_dataset(Path(d.dataset).expanduser())
            return data.load_dataset(data.build_dataset(
                None if d.corpus is None else Path(d.corpus).expanduser(), encoding=self.encoding,
                val_fraction=d.val_fraction, seed=d.seed, n_clones=d.n_clones, stretch=tuple(d.stretch),
                transpose=tuple(d.transpose), max_pieces=d.max_pieces, progress=progress))
        except ConfigError as exc:
            raise ConfigError("data.dataset" if d.dataset is not None else "data.corpus", exc.reason) from None
