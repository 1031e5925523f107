"""Training runs: a validated run config, the training loop, checkpoints, history and evaluation
(chapter 04_training).

A **run directory** holds everything about one training run::

    RUN_DIR/
      config.json          the RunConfig (data, model, training, validation)
      history.csv          step, train_loss, val_loss, val_nats_per_step, batch_size, key_states, seconds
      loss.png             the loss curves (training step on x, nats per key state on y)
      model.keras          the latest model (weights + optimizer state)
      best.keras           the model with the lowest validation loss so far
      checkpoints/
        step-00000200.keras  the last few checkpoints (weights + Adam state)
        latest.json          which checkpoint is the newest, with the step count and timers
      snapshots/
        step-000600.weights.h5  weights kept for good at the steps in training.snapshot_at
                                (read back with snapshot_steps / load_snapshot; chapter 07)

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), and
``latest.json`` is written only after its checkpoint is complete. Running the same command again
after an interruption -- even ``kill -9`` -- resumes from the newest checkpoint with the optimizer
state and the step count: the batches are a pure function of ``(seed, step, batch size)``, so the
resumed run sees exactly the batches the uninterrupted one would have seen.

Training minimises the binary cross-entropy of every key state (nats per key state) with Adam. Each
training example is a window of ``RF + N - 1`` key states that predicts ``N`` of them
(``training.n_targets``): with ``N`` in the thousands, little compute goes to the receptive-field
margin (PianoNet used 24 time steps, ``N = 1728``). The batch size ramps from
``training.batch_start`` to ``training.batch_end``, doubling every ``training.batch_double_every``
steps. The loop is Keras' own ``model.fit``, called for one stretch of steps at a time, so it runs
on every Keras backend (TensorFlow, JAX) and, under TensorFlow, data-parallel through
``tf.distribute.MirroredStrategy`` (``training.distribute = "mirrored"``).
"""

import copy
import csv
import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import _io
from .encoding import DEFAULT_ENCODING, Encoding
from .errors import ConfigError, PianolabError
from .model import PRESETS, build_model, layer_plan, logit, receptive_field

SECTIONS = ("data", "model", "training", "validation")
HISTORY_COLUMNS = ("step", "train_loss", "val_loss", "val_nats_per_step", "batch_size", "key_states",
                   "seconds")


class TrainingError(PianolabError):
    """A training run had to stop, e.g. because the loss became NaN (chapter 04_training)."""


# ----------------------------------------------------------------------------------------------
# Run config
# ----------------------------------------------------------------------------------------------


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(lo, *, none=False):
    def check(v):
        return (none and v is None) or (_is_int(v) and v >= lo)
    text = f"an integer >= {lo}" + (" or null" if none else "")
    return check, text


def _str_or_none(v):
    return v is None or isinstance(v, str)


def _increments_ok(v):
    if v is None:
        return True
    if not isinstance(v, (list, tuple)) or not v:
        return False
    for block in v:
        if not isinstance(block, (list, tuple)) or not block:
            return False
        if not all(_is_int(i) and i >= 0 for i in block):
            return False
    return v[0][0] >= 1


def _bias_ok(v):
    return v == "calibrated" or _is_num(v)


def _stretch_ok(v):
    return (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(s) and s > 0 for s in v)
            and v[0] <= v[1])


def _steps_ok(v):
    return isinstance(v, (list, tuple)) and all(_is_int(s) and s >= 1 for s in v)


def _encoding_ok(v):
    if v is None:
        return True
    if not isinstance(v, dict) or set(v) - {"steps_per_second", "lowest", "n_keys"}:
        return False
    try:
        Encoding.from_dict(v)
    except (TypeError, ValueError):
        return False
    return True


# Each field: (check, what is allowed).
_RULES = {
    "data": {
        "dataset": (_str_or_none, "a path to a dataset folder (from `python -m pianolab data`) or null "
                                  "to build one from data.corpus"),
        "corpus": (_str_or_none, "a folder of MIDI files, or null for the built-in corpus"),
        "encoding": (_encoding_ok, "null or an object with steps_per_second (> 0), lowest and n_keys "
                                   "(a key window inside MIDI 0..127)"),
        "val_fraction": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
        "n_clones": _int_at_least(0),
        "stretch": (_stretch_ok, "two positive numbers [low, high] with low <= high"),
        "max_pieces": _int_at_least(1, none=True),
        "seed": _int_at_least(0),
    },
    "model": {
        "preset": (lambda v: v is None or v in PRESETS, f"one of {sorted(PRESETS)} or null"),
        "filter_increments": (_increments_ok, "null or a list of blocks, each a non-empty list of "
                                              "whole numbers >= 0 (the first >= 1)"),
        "output_bias": (_bias_ok, "'calibrated' (the logit of the training key-down rate) or a number"),
        "activation": (lambda v: isinstance(v, str) and v != "", "a Keras activation name such as 'elu'"),
    },
    "training": {
        "lr": (lambda v: _is_num(v) and v > 0, "a number > 0"),
        "n_targets": _int_at_least(1),
        "batch_start": _int_at_least(1),
        "batch_end": _int_at_least(1),
        "batch_double_every": _int_at_least(1),
        "steps": _int_at_least(0),
        "checkpoint_every": _int_at_least(1),
        "validate_every": _int_at_least(0),
        "log_every": _int_at_least(1),
        "keep_checkpoints": _int_at_least(2),
        "snapshot_at": (_steps_ok, "a list of step numbers >= 1 (weights kept in snapshots/), "
                                   "e.g. [100, 200, 400]"),
        "seed": _int_at_least(0),
        "jit_compile": (lambda v: v in (True, False, "auto"), "true, false or 'auto'"),
        "distribute": (lambda v: v in (None, "mirrored"), "null or 'mirrored' (TensorFlow only)"),
    },
    "validation": {
        "n_windows": _int_at_least(1, none=True),
        "n_targets": _int_at_least(1, none=True),
        "batch_size": _int_at_least(1),
        "seed": _int_at_least(0),
    },
}


@dataclass
class DataConfig:
    """Where the key states come from (chapter 04_training)."""

    dataset: str = None
    corpus: str = None
    encoding: dict = None
    val_fraction: float = 0.1
    n_clones: int = 5
    stretch: list = field(default_factory=lambda: [0.85, 1.15])
    max_pieces: int = None
    seed: int = 0


@dataclass
class ModelConfig:
    """Which network: a preset name or explicit ``filter_increments`` (chapter 03_receptive_field)."""

    preset: str = "pianonet_mini"
    filter_increments: list = None
    output_bias: object = "calibrated"
    activation: str = "elu"


@dataclass
class TrainingConfig:
    """How to train (chapter 04_training).

    ``n_targets`` key states are predicted per window (8,192 = about 114 time steps);
    the batch size starts at ``batch_start`` and doubles every ``batch_double_every`` steps up to
    ``batch_end``. ``steps`` is the total number of optimizer steps; ``checkpoint_every`` and
    ``validate_every`` (0: never) count steps; ``log_every`` sets the history's resolution.
    At each step in ``snapshot_at`` the weights are also kept for good in
    ``snapshots/step-NNNNNN.weights.h5`` (checkpoints are rotated; snapshots are not), so that the
    music of one run can be followed along its training (chapter 07_training_length).
    """

    lr: float = 1e-4
    n_targets: int = 8192
    batch_start: int = 1
    batch_end: int = 32
    batch_double_every: int = 200
    steps: int = 20000
    checkpoint_every: int = 100
    validate_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 3
    snapshot_at: list = field(default_factory=list)
    seed: int = 0
    jit_compile: object = False
    distribute: str = None


@dataclass
class ValidationConfig:
    """How the validation loss is measured (chapter 04_training).

    ``n_windows`` fixed windows (drawn once with ``seed``) of the held-out pieces, each scoring
    ``n_targets`` key states (null: the training ``n_targets``); ``n_windows = null`` scores every
    key state of the validation split (slow for big splits).
    """

    n_windows: int = 16
    n_targets: int = None
    batch_size: int = 4
    seed: int = 0


_SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig,
                    "validation": ValidationConfig}


@dataclass
class RunConfig:
    """A validated run config: ``data``, ``model``, ``training`` and ``validation`` sections
    (chapter 04_training).

    Build it with keyword sections (``RunConfig(model={"preset": "tiny"})``), from a dict
    (:meth:`from_dict`) or a JSON file (:meth:`from_json`). Every key is checked: an unknown key, a
    wrong type or a bad value raises :class:`~pianolab.errors.ConfigError` naming the key
    (``"training.lr"``) and what is allowed. :meth:`check_data` adds the checks that need the data
    (the receptive field must fit in the training pieces).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self):
        for name in SECTIONS:
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _section_from_dict(name, value))
            elif not isinstance(value, _SECTION_CLASSES[name]):
                raise ConfigError(name, f"expected an object (dict) of {name} settings, got {value!r}")
        self.validate()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d):
        """A RunConfig from a plain dict such as ``json.load`` gives."""
        if isinstance(d, RunConfig):
            return copy.deepcopy(d)
        if not isinstance(d, dict):
            raise ConfigError("config", f"expected an object with sections {list(SECTIONS)}, got {type(d).__name__}")
        for key in d:
            if key not in SECTIONS:
                raise ConfigError(str(key), f"unknown section; allowed: {', '.join(SECTIONS)}")
        return cls(**{name: _section_from_dict(name, d.get(name, {})) for name in SECTIONS})

    @classmethod
    def from_json(cls, path):
        """Read and validate a JSON run config."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("config", f"{path}: cannot be read ({exc.strerror or exc})") from None
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ConfigError("config", f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(exc.key, f"{exc.reason} (in {path})") from None

    def to_dict(self):
        """Plain dict (JSON-ready), every key present."""
        return {name: {f.name: copy.deepcopy(getattr(getattr(self, name), f.name))
                       for f in fields(_SECTION_CLASSES[name])} for name in SECTIONS}

    def to_json(self, path):
        """Write the config as JSON, atomically."""
        _atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    # -- checks ------------------------------------------------------------------------------
    def validate(self):
        """Check every key; raises ConfigError naming the first bad one."""
        for name in SECTIONS:
            section = getattr(self, name)
            for key, (check, allowed) in _RULES[name].items():
                value = getattr(section, key)
                if not check(value):
                    raise ConfigError(f"{name}.{key}", f"expected {allowed}, got {value!r}")
        m, t = self.model, self.training
        if m.preset is None and m.filter_increments is None:
            raise ConfigError("model.preset", "give model.preset (one of "
                              f"{sorted(PRESETS)}) or model.filter_increments")
        if m.preset is not None and m.filter_increments is not None:
            raise ConfigError("model.filter_increments", "give either model.preset or "
                              "model.filter_increments, not both (set preset to null)")
        if t.batch_end < t.batch_start:
            raise ConfigError("training.batch_end", f"expected an integer >= training.batch_start "
                              f"({t.batch_start}), got {t.batch_end}")
        return self

    def check_data(self, dataset):
        """The checks that need the data: the receptive field and the windows must fit in the
        training pieces, and both splits must hold pieces."""
        rf = self.receptive_field
        for name in ("train", "val"):
            split = getattr(dataset, name, None)
            if split is None or not len(split.pieces):
                raise ConfigError("data", f"the dataset has no {name} pieces; use a bigger corpus or "
                                          "change data.val_fraction")
        longest = max(b - a for _, a, b in dataset.train.pieces)
        enc = _encoding_of(dataset)
        if rf > longest:
            key = "model.filter_increments" if self.model.preset is None else "model.preset"
            raise ConfigError(key, f"the receptive field ({rf} key states, "
                              f"{rf / enc.n_keys / enc.steps_per_second:.1f} s) is longer than the "
                              f"longest training piece ({longest} key states, "
                              f"{longest / enc.n_keys / enc.steps_per_second:.1f} s); choose a smaller "
                              f"model (presets: {sorted(PRESETS)}) or longer pieces")
        total = int(dataset.train.sequence.shape[0])
        if self.training.n_targets > total:
            raise ConfigError("training.n_targets", f"expected at most the {total} key states of the "
                              f"training split, got {self.training.n_targets}")
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def filter_increments(self):
        """The model's ``filter_increments`` (from the preset or given)."""
        if self.model.filter_increments is not None:
            return [list(b) for b in self.model.filter_increments]
        return [list(b) for b in PRESETS[self.model.preset]]

    @property
    def receptive_field(self):
        return receptive_field(self.filter_increments)

    @property
    def val_targets(self):
        return self.validation.n_targets or self.training.n_targets

    def batch_size_at(self, step):
        """The batch size of step ``step`` (0-based) under the ramp (chapter 04_training)."""
        t = self.training
        return int(min(t.batch_end, t.batch_start * 2 ** (int(step) // t.batch_double_every)))


def _section_from_dict(name, d):
    cls = _SECTION_CLASSES[name]
    if isinstance(d, cls):
        return copy.deepcopy(d)
    if not isinstance(d, dict):
        raise ConfigError(name, f"expected an object (dict) of {name} settings, got {d!r}")
    allowed = [f.name for f in fields(cls)]
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{name}.{key}", f"unknown key; allowed keys of '{name}': {', '.join(allowed)}")
    d = copy.deepcopy(dict(d))
    if name == "model" and d.get("filter_increments") is not None and "preset" not in d:
        d["preset"] = None
    return cls(**d)


def _as_config(config):
    if config is None:
        return RunConfig()
    if isinstance(config, RunConfig):
        return copy.deepcopy(config).validate()
    if isinstance(config, dict):
        return RunConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return RunConfig.from_json(config)
    raise ConfigError("config", f"expected a RunConfig, a dict or a JSON path, got {type(config).__name__}")


# ----------------------------------------------------------------------------------------------
# Small helpers: atomic files, history
# ----------------------------------------------------------------------------------------------


_atomic_write_bytes = _io.write_bytes
_atomic_write_text = _io.write_bytes
_atomic_save_model = _io.save_model


def _atomic_copy(src, dst):
    return _atomic_write_bytes(dst, Path(src).read_bytes())


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))  # repr round-trips exactly
    return str(v)


class History:
    """The rows of ``history.csv`` (chapter 04_training).

    One row every ``training.log_every`` steps: ``step``, ``train_loss`` (mean over the steps since
    the previous row), ``val_loss`` and ``val_nats_per_step`` (where validated), ``batch_size``,
    ``key_states`` (trained so far) and ``seconds`` (of training so far). Columns are numpy arrays
    (``history.val_loss``, NaN where missing); ``history.rows`` the raw dicts.
    """

    def __init__(self, rows=(), run_dir=None):
        self.rows = [dict(r) for r in rows]
        self.run_dir = None if run_dir is None else Path(run_dir)

    @classmethod
    def read(cls, path):
        """Read ``history.csv`` (or a run directory's)."""
        path = Path(path)
        run_dir = None
        if path.is_dir():
            run_dir, path = path, path / "history.csv"
        rows = []
        if path.is_file():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    rows.append({k: _parse(k, v) for k, v in r.items()})
        return cls(rows, run_dir)

    def to_csv(self, path):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HISTORY_COLUMNS)
        for r in self.rows:
            w.writerow([_fmt(r.get(c)) for c in HISTORY_COLUMNS])
        _atomic_write_text(path, buf.getvalue())

    def column(self, name):
        return np.array([np.nan if r.get(name) is None else float(r[name]) for r in self.rows])

    step = property(lambda self: self.column("step"))
    train_loss = property(lambda self: self.column("train_loss"))
    val_loss = property(lambda self: self.column("val_loss"))
    val_nats_per_step = property(lambda self: self.column("val_nats_per_step"))
    batch_size = property(lambda self: self.column("batch_size"))
    key_states = property(lambda self: self.column("key_states"))
    seconds = property(lambda self: self.column("seconds"))

    @property
    def final_step(self):
        return int(self.rows[-1]["step"]) if self.rows else 0

    @property
    def best_val_loss(self):
        v = self.val_loss
        return float(np.nanmin(v)) if np.isfinite(v).any() else math.nan

    def as_dict(self):
        """Columns as lists (what :func:`pianolab.plots.plot_loss` also accepts)."""
        return {c: [r.get(c) for r in self.rows] for c in HISTORY_COLUMNS}

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        last = self.rows[-1] if self.rows else {}
        return (f"History({len(self.rows)} rows, step {last.get('step', 0)}, "
                f"val_loss {self.best_val_loss:.4f} best)")


def _parse(key, v):
    if v is None or v == "":
        return None
    if key in ("step", "batch_size", "key_states"):
        return int(float(v))
    return float(v)


def _plot_history(history, path):
    """loss.png: training and validation loss against the step (plain matplotlib, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    s, tl, vl = history.step, history.train_loss, history.val_loss
    ok = np.isfinite(tl)
    if ok.any():
        ax.plot(s[ok], tl[ok], "-", label="training")
    ok = np.isfinite(vl)
    if ok.any():
        ax.plot(s[ok], vl[ok], "o-", markersize=3, label="validation")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats per key state)")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    _atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _encoding_of(dataset):
    enc = getattr(dataset, "encoding", None) or getattr(getattr(dataset, "train", None), "encoding", None)
    return enc if isinstance(enc, Encoding) else DEFAULT_ENCODING


def _key_down_rate(dataset):
    rate = getattr(dataset, "key_down_rate", None)
    if rate is None:
        seq = dataset.train.sequence
        rate = float(np.count_nonzero(np.asarray(seq)) / max(1, seq.shape[0]))
    return float(rate)


def open_dataset(config, progress=True):
    """The dataset a run config names: ``data.dataset`` if set, else the dataset of
    ``data.corpus`` (built and cached on first use) (chapter 04_training)."""
    from . import data

    config = _as_config(config)
    d = config.data
    if d.dataset is not None:
        path = Path(d.dataset).expanduser()
        if not (path / "index.json").is_file():
            raise ConfigError("data.dataset", f"{path} is not a dataset folder (no index.json); build one "
                                              f"with `python -m pianolab data --out {path}`")
        return data.load_dataset(path)
    encoding = DEFAULT_ENCODING if d.encoding is None else Encoding.from_dict(d.encoding)
    corpus = None
    if d.corpus is not None:
        corpus = Path(d.corpus).expanduser()
        if not corpus.is_dir():
            raise ConfigError("data.corpus", f"{corpus} is not a folder of MIDI files")
    path = data.build_dataset(corpus, encoding=encoding, val_fraction=d.val_fraction, seed=d.seed,
                              n_clones=d.n_clones, stretch=tuple(d.stretch), max_pieces=d.max_pieces,
                              progress=progress)
    return data.load_dataset(path)


def _windows(split, rf, n):
    from .data import Windows

    return Windows(split, rf, n)


def _training_batch(windows, seed, step, batch_size):
    """The batch of global step ``step``: a pure function of (seed, step, batch size)."""
    rng = np.random.default_rng([int(seed), int(step)])
    pieces, us = windows.sample(rng, batch_size)
    x, y = windows.cut(pieces, us)
    return x.astype(np.float32)[..., None], y.astype(np.float32)[..., None]


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _bce(y, p):
    """Binary cross-entropy in nats, float64, probabilities clipped like Keras (1e-7)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _predict(model, x):
    import keras

    if _under_strategy(model):
        return keras.ops.convert_to_numpy(model(x, training=False))
    return np.asarray(model.predict_on_batch(x))


def _under_strategy(model):
    strategy = getattr(model, "_distribute_strategy", None)
    return strategy is not None and getattr(strategy, "num_replicas_in_sync", 1) > 1


def validation_windows(split, receptive_field, n_targets, n_windows, seed=0):
    """``n_windows`` fixed windows of a split, drawn with ``seed``: uint8 ``(x, y)`` (chapter 04_training)."""
    w = _windows(split, receptive_field, n_targets)
    rng = np.random.default_rng([int(seed), 1_000_003])
    pieces, us = w.sample(rng, n_windows)
    return w.cut(pieces, us)


def evaluate(model, split, *, n_targets=None, n_windows=None, batch_size=4, seed=0, n_keys=None,
             progress=False, windows=None):
    """Loss of ``model`` on a split in nats (chapter 04_training).

    With ``n_windows=None`` every key state of every piece is scored once (each piece starting
    from silence); otherwise ``n_windows`` windows drawn with ``seed`` (the same ones every time),
    each scoring ``n_targets`` key states (default: 8,192). Returns a dict: ``loss_per_state`` (mean
    binary cross-entropy per key state), ``nats_per_step`` (times the number of keys: the
    negative log-likelihood of one time step), ``key_states`` (how many were scored) and ``n_keys``.
    """
    from .model import model_receptive_field

    rf = model_receptive_field(model)
    n = int(n_targets or 8192)
    if n_keys is None:
        n_keys = getattr(getattr(split, "encoding", None), "n_keys", DEFAULT_ENCODING.n_keys)
    total, count = 0.0, 0.0
    if windows is None and n_windows is None:
        from .data import evaluation_windows

        batches = evaluation_windows(split, rf, n, batch_size=batch_size)
        n_batches = None
    else:
        x_all, y_all = windows if windows is not None else validation_windows(split, rf, n, n_windows, seed)
        batches = ((x_all[i:i + batch_size].astype(np.float32)[..., None],
                    y_all[i:i + batch_size].astype(np.float32)[..., None],
                    np.ones(y_all[i:i + batch_size].shape, np.float32))
                   for i in range(0, len(x_all), batch_size))
        n_batches = math.ceil(len(x_all) / batch_size)
    from tqdm.auto import tqdm

    for x, y, w in tqdm(batches, total=n_batches, disable=not progress, desc="evaluating", unit="batch",
                        file=sys.stderr, leave=False):
        p = _predict(model, x)[..., 0]
        total += float((_bce(y[..., 0], p) * w).sum())
        count += float(w.sum())
    loss = total / count if count else math.nan
    return {"loss_per_state": loss, "nats_per_step": loss * n_keys, "key_states": int(count),
            "n_keys": int(n_keys)}


# ----------------------------------------------------------------------------------------------
# Models of a run
# ----------------------------------------------------------------------------------------------


def _compile(model, config):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.training.lr),
                  loss="binary_crossentropy", jit_compile=_jit(config))
    return model


def _jit(config):
    import keras

    jit = config.training.jit_compile
    if keras.backend.backend() == "jax":
        return True  # without jit, JAX would run every step eagerly
    return jit


def make_model(config, dataset):
    """The untrained model of a run config; ``output_bias='calibrated'`` uses the key-down rate of
    the training split (chapter 02_chain_rule)."""
    config = _as_config(config)
    bias = config.model.output_bias
    if bias == "calibrated":
        bias = logit(_key_down_rate(dataset))
    return build_model(config.filter_increments, output_bias=float(bias),
                       activation=config.model.activation, seed=config.training.seed)


def load_model(path, which="latest", compile=False):
    """A trained model from a ``.keras`` file, a run directory (``which``: 'latest' = model.keras,
    'best' = best.keras) or the name of a shipped model under ``data/models`` (chapter 04_training)."""
    import keras

    from .settings import models_dir

    path = Path(path)
    if not path.exists() and not path.is_absolute() and (models_dir() / path).exists():
        path = models_dir() / path
    if path.is_dir():
        if which not in ("latest", "best"):
            raise ConfigError("which", f"expected 'latest' or 'best', got {which!r}")
        f = path / ("model.keras" if which == "latest" else "best.keras")
        if not f.is_file() and which == "best":
            f = path / "model.keras"
        if not f.is_file():
            raise ConfigError("model", f"{path} holds no model.keras: train it first "
                                       f"(`python -m pianolab train {path}`)")
        path = f
    if not path.is_file():
        raise ConfigError("model", f"{path}: no such model file, run directory or shipped model "
                                   f"(shipped: {sorted(p.name for p in models_dir().glob('*') if p.is_dir())})")
    return keras.models.load_model(path, compile=compile)


def _run_dir(run_dir):
    """A run directory, or the name of a shipped model under data/models."""
    run_dir = Path(run_dir)
    if not run_dir.exists() and not run_dir.is_absolute():
        from .settings import models_dir

        if (models_dir() / run_dir).is_dir():
            return models_dir() / run_dir
    return run_dir


def encoding_of(run_dir):
    """The :class:`~pianolab.encoding.Encoding` a run (or shipped model, or a ``.keras`` file in a run
    directory) was trained with: ``data.encoding`` of its ``config.json``, the default encoding when
    that is null or there is no config (chapter 09_pianonet_models)."""
    run_dir = _run_dir(run_dir)
    path = (run_dir if run_dir.is_dir() else run_dir.parent) / "config.json"
    if not path.is_file():
        return DEFAULT_ENCODING
    encoding = RunConfig.from_json(path).data.encoding
    return DEFAULT_ENCODING if encoding is None else Encoding.from_dict(encoding)


def load_run(run_dir, which="latest"):
    """``(config, model)`` of a run directory (chapter 04_training)."""
    run_dir = _run_dir(run_dir)
    config = RunConfig.from_json(run_dir / "config.json")
    return config, load_model(run_dir, which=which)


def snapshot_path(run_dir, step):
    """Where a run keeps its weight snapshot of ``step`` (chapter 07_training_length)."""
    return Path(run_dir) / "snapshots" / f"step-{int(step):06d}.weights.h5"


def snapshot_steps(run_dir):
    """The steps at which a run (or shipped model) kept a weight snapshot, ascending
    (chapter 07_training_length)."""
    folder = _run_dir(run_dir) / "snapshots"
    found = (re.fullmatch(r"step-(\d+)\.weights\.h5", p.name) for p in folder.glob("step-*.weights.h5"))
    return sorted(int(m.group(1)) for m in found if m)


def load_snapshot(run_dir, step):
    """A run's model as it was at snapshot ``step``: the architecture from its ``config.json``, then
    the snapshot's weights (chapter 07_training_length)."""
    run_dir = _run_dir(run_dir)
    path = snapshot_path(run_dir, step)
    if not path.is_file():
        have = snapshot_steps(run_dir)
        raise ConfigError("step", f"{run_dir} has no snapshot at step {step}; it has "
                                  f"{have if have else 'none (set training.snapshot_at to keep some)'}")
    model = _architecture(RunConfig.from_json(run_dir / "config.json"))
    model.load_weights(path)
    return model


def _architecture(config):
    """The run's network, uncompiled, weights not yet meaningful (for loading weights into)."""
    return build_model(config.filter_increments, activation=config.model.activation)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def _make_strategy(config):
    if config.training.distribute != "mirrored":
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError("training.distribute", f"'mirrored' needs the TensorFlow backend; "
                                                 f"KERAS_BACKEND is {keras.backend.backend()!r}")
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


_STEP_LOG = None


def _step_log(bar, first_step):
    """A Keras callback: per-step losses (from fit's running mean), progress, and a stop on NaN."""
    global _STEP_LOG
    if _STEP_LOG is None:
        import keras

        class StepLog(keras.callbacks.Callback):
            def __init__(self, bar, first_step):
                super().__init__()
                self.bar = bar
                self.first_step = first_step
                self.losses = []
                self.prev_mean = 0.0
                self.bad_step = None

            def on_train_batch_end(self, batch, logs=None):
                # fit reports the mean loss since the start of the epoch (one epoch per call here,
                # one batch size): undo the running mean to get this step's loss.
                mean = float((logs or {}).get("loss", math.nan))
                i = len(self.losses) + 1
                self.losses.append(mean * i - self.prev_mean * (i - 1) if i > 1 else mean)
                self.prev_mean = mean
                if self.bar is not None:
                    self.bar.update(1)
                if not math.isfinite(mean):
                    self.bad_step = self.first_step + i
                    self.model.stop_training = True

        _STEP_LOG = StepLog
    return _STEP_LOG(bar, first_step)


class Trainer:
    """One run directory's training state; :func:`train` drives it (chapter 04_training).

    ``Trainer(run_dir, config, dataset)`` opens the run: it resumes from the newest checkpoint when
    there is one, else builds a fresh model. ``train_steps(k)`` runs ``k`` optimizer steps
    (``benchmarks/train_throughput.py`` times it); ``run(total)`` trains up to ``total`` steps with
    validation, history rows, checkpoints and progress.
    """

    def __init__(self, run_dir, config, dataset, progress=True):
        import keras

        self.run_dir = Path(run_dir)
        self.config = config
        self.dataset = dataset
        self.progress = progress
        self.encoding = _encoding_of(dataset)
        self.rf = config.receptive_field
        t = config.training
        self.windows = _windows(dataset.train, self.rf, t.n_targets)
        self.strategy = _make_strategy(config)
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy is not None else 1
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._val = None
        self._twin = None  # an uncompiled copy of the model, for weights-only snapshots
        state = self._read_state()
        scope = self.strategy.scope() if self.strategy is not None else _nullcontext()
        with scope:
            if state is None:
                self.model = _compile(make_model(config, dataset), config)
                self.step, self.seconds, self.key_states = 0, 0.0, 0
                self.pending = [0.0, 0]
                self.best_val, self.checkpoint_step = math.inf, None
                self.history = History([], self.run_dir)
                self.resumed = False
            else:
                self.model = keras.models.load_model(self.ckpt_dir / state["file"], compile=True)
                self.model.jit_compile = _jit(config)
                self.step = int(state["step"])
                self.seconds = float(state["seconds"])
                self.key_states = int(state["key_states"])
                self.pending = list(state["pending"])
                self.best_val = float(state.get("best_val", math.inf))
                self.checkpoint_step = self.step
                iters = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
                if iters != self.step:
                    raise TrainingError(f"{self.ckpt_dir / state['file']}: the optimizer has taken {iters} "
                                        f"steps but the checkpoint says {self.step}; the run directory "
                                        "is inconsistent")
                hist = History.read(self.run_dir)
                self.history = History([r for r in hist.rows if r["step"] <= self.step], self.run_dir)
                self.resumed = True

    # -- state on disk -------------------------------------------------------------------------
    def _read_state(self):
        path = self.ckpt_dir / "latest.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TrainingError(f"{path}: unreadable ({exc}); remove it to restart from the previous "
                                "checkpoint file") from None
        if not (self.ckpt_dir / state["file"]).is_file():
            raise TrainingError(f"{path} names {state['file']}, which is missing; remove latest.json "
                                "to start again")
        return state

    def checkpoint(self):
        """Write the model + optimizer, the history and then ``latest.json`` (all atomic)."""
        name = f"step-{self.step:08d}.keras"
        _atomic_save_model(self.model, self.ckpt_dir / name)
        self.history.to_csv(self.run_dir / "history.csv")
        state = {"step": self.step, "file": name, "seconds": self.seconds, "key_states": self.key_states,
                 "pending": self.pending, "best_val": None if not math.isfinite(self.best_val) else self.best_val,
                 "receptive_field": self.rf, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _atomic_write_text(self.ckpt_dir / "latest.json", json.dumps(state, indent=1) + "\n")
        _atomic_copy(self.ckpt_dir / name, self.run_dir / "model.keras")
        self.checkpoint_step = self.step
        keep = self.config.training.keep_checkpoints
        old = sorted(p for p in self.ckpt_dir.glob("step-*.keras"))
        for p in old[:-keep]:
            p.unlink(missing_ok=True)
        try:
            _plot_history(self.history, self.run_dir / "loss.png")
        except Exception as exc:  # a plot must never stop a run
            print(f"pianolab train: could not draw loss.png ({exc})", file=sys.stderr)

    def snapshot(self):
        """Keep the current weights for good: ``snapshots/step-NNNNNN.weights.h5`` (atomic).

        The weights alone: a compiled model's ``save_weights`` also writes the Adam moments (three
        times the size), so the weights go through an uncompiled twin of the model.
        """
        if self._twin is None:
            self._twin = _architecture(self.config)
        self._twin.set_weights(self.model.get_weights())
        path = snapshot_path(self.run_dir, self.step)
        with _io.atomic_path(path, suffix=".weights.h5") as tmp:
            self._twin.save_weights(tmp)
        return path

    # -- training ------------------------------------------------------------------------------
    def batch_size_at(self, step):
        b = self.config.batch_size_at(step)
        return int(math.ceil(b / self.replicas) * self.replicas)

    def _batches(self, first, stop, batch_size):
        seed = self.config.training.seed
        for s in range(first, stop):
            yield _training_batch(self.windows, seed, s, batch_size)

    def train_steps(self, k, bar=None, batch_size=None):
        """Run ``k`` optimizer steps at the current batch size of the ramp (or ``batch_size``);
        returns the per-step losses.

        Without a distribution strategy every step is one ``model.train_on_batch`` (no per-call
        set-up, an exact loss per step); under ``tf.distribute`` the ``k`` steps are one
        ``model.fit`` call, which splits every batch across the replicas.
        """
        b = self.batch_size_at(self.step) if batch_size is None else int(batch_size)
        t0 = time.perf_counter()
        losses, bad = [], None
        if self.strategy is None:
            seed = self.config.training.seed
            for s in range(self.step, self.step + k):
                x, y = _training_batch(self.windows, seed, s, b)
                loss = float(np.asarray(self.model.train_on_batch(x, y)).reshape(-1)[0])
                losses.append(loss)
                if bar is not None:
                    bar.update(1)
                if not math.isfinite(loss):
                    bad = s + 1
                    break
        else:
            cb = _step_log(bar, self.step)
            self.model.fit(self._batches(self.step, self.step + k, b), steps_per_epoch=k, epochs=1,
                           verbose=0, callbacks=[cb], shuffle=False)
            losses, bad = cb.losses, cb.bad_step
        self.seconds += time.perf_counter() - t0
        if bad is not None:
            kept = (f"kept its last good checkpoint (step {self.checkpoint_step}) in {self.ckpt_dir}"
                    if self.checkpoint_step is not None else "had written no checkpoint yet")
            raise TrainingError(
                f"the training loss became {losses[-1]} at step {bad} (batch size {b}, "
                f"lr {self.config.training.lr}); the run stopped and {kept}. Lower training.lr or "
                "check the data for non-finite values.")
        self.step += len(losses)
        self.key_states += len(losses) * b * self.config.training.n_targets
        return losses

    def validate(self):
        v = self.config.validation
        t0 = time.perf_counter()
        if v.n_windows is None:
            res = evaluate(self.model, self.dataset.val, n_targets=self.config.val_targets,
                           batch_size=v.batch_size, n_keys=self.encoding.n_keys)
        else:
            if self._val is None:
                self._val = validation_windows(self.dataset.val, self.rf, self.config.val_targets,
                                               v.n_windows, v.seed)
            res = evaluate(self.model, self.dataset.val, windows=self._val, batch_size=v.batch_size,
                           n_keys=self.encoding.n_keys)
        self.seconds += time.perf_counter() - t0
        if res["loss_per_state"] < self.best_val:
            self.best_val = res["loss_per_state"]
            _atomic_save_model(self.model, self.run_dir / "best.keras")
        return res

    def _row(self, val=None):
        train_loss = self.pending[0] / self.pending[1] if self.pending[1] else None
        self.pending = [0.0, 0]
        row = {"step": self.step, "train_loss": train_loss,
               "val_loss": None if val is None else val["loss_per_state"],
               "val_nats_per_step": None if val is None else val["nats_per_step"],
               "batch_size": self.batch_size_at(max(0, self.step - 1)),
               "key_states": self.key_states, "seconds": round(self.seconds, 3)}
        if self.history.rows and self.history.rows[-1]["step"] == self.step:
            old = self.history.rows[-1]
            for k, v in row.items():
                if v is not None:
                    old[k] = v
        else:
            self.history.rows.append(row)
        return row

    def run(self, total):
        """Train until ``total`` steps in all; returns the :class:`History`."""
        from tqdm.auto import tqdm

        t = self.config.training
        total = int(total)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t_start = time.perf_counter()
        if self.step == 0 and not self.history.rows and t.validate_every:
            row = self._row(self.validate())
            self.history.to_csv(self.run_dir / "history.csv")
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc=f"training {self.run_dir.name}",
                   unit="step", file=sys.stderr, dynamic_ncols=True)
        if self.resumed and self.progress:
            bar.write(f"resuming {self.run_dir} at step {self.step}")
        try:
            while self.step < total:
                s = self.step
                stops = [total, _next_multiple(s, t.log_every), _next_multiple(s, t.checkpoint_every)]
                if self.config.batch_size_at(s) < t.batch_end:
                    stops.append(_next_multiple(s, t.batch_double_every))
                if t.validate_every:
                    stops.append(_next_multiple(s, t.validate_every))
                stops += [a for a in t.snapshot_at if a > s]
                k = min(stops) - s
                losses = self.train_steps(k, bar)
                self.pending[0] += float(np.sum(losses))
                self.pending[1] += len(losses)
                s = self.step
                validate = bool(t.validate_every) and (s % t.validate_every == 0 or s == total)
                if s % t.log_every == 0 or validate or s == total:
                    val = self.validate() if validate else None
                    row = self._row(val)
                    self.history.to_csv(self.run_dir / "history.csv")
                    if self.progress:
                        post = {"loss": f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "-",
                                "batch": row["batch_size"]}
                        if val is not None:
                            post["val"] = f"{val['loss_per_state']:.4f}"
                        bar.set_postfix(post, refresh=False)
                if s in t.snapshot_at:
                    self.snapshot()
                if s % t.checkpoint_every == 0 or s == total:
                    self.checkpoint()
        finally:
            bar.close()
        if self.checkpoint_step != self.step:
            self.checkpoint()
        self.wall_seconds = time.perf_counter() - t_start
        return History(self.history.rows, self.run_dir)


def _next_multiple(s, every):
    return (s // every + 1) * every


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _resolve_run_config(run_dir, config):
    """The config of a run: a new run's config is written to config.json; an existing run's must
    match (only training.steps and training.snapshot_at may change)."""
    path = run_dir / "config.json"
    existing = RunConfig.from_json(path) if path.is_file() else None
    if config is None:
        return existing if existing is not None else RunConfig(), existing
    config = _as_config(config)
    if existing is not None:
        a, b = existing.to_dict(), config.to_dict()
        for key in ("steps", "snapshot_at"):  # a run may be extended and snapshotted further
            a["training"].pop(key)
            b["training"].pop(key)
        if a != b:
            diff = _first_difference(a, b)
            raise ConfigError(diff, f"{run_dir} already holds a run with a different config "
                              f"({_lookup(a, diff)!r} there, {_lookup(b, diff)!r} now); use a new run "
                              "directory, or resume it without --config")
    return config, existing


def _first_difference(a, b, prefix=""):
    for k in a:
        if a[k] != b.get(k):
            if isinstance(a[k], dict) and isinstance(b.get(k), dict):
                return _first_difference(a[k], b[k], f"{prefix}{k}.")
            return f"{prefix}{k}"
    return prefix.rstrip(".") or "config"


def _lookup(d, dotted):
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def train(run_dir, config=None, steps=None, progress=True, *, dataset=None):
    """Train (or resume) the run in ``run_dir`` (chapter 04_training).

    ``config``: a :class:`RunConfig`, a dict or a JSON path for a new run (``None``: the run's own
    ``config.json``, or the defaults for an empty directory). ``steps``: train until this many
    steps in all (default ``training.steps``). ``dataset``: an object with ``.train`` and ``.val``
    splits (each with ``.sequence`` and ``.pieces``) to use instead of the config's data section.
    Re-running the same call after an interruption resumes from the newest checkpoint. Returns the
    :class:`History`.
    """
    run_dir = Path(run_dir)
    config, existing = _resolve_run_config(run_dir, config)
    if steps is not None:
        if not (_is_int(steps) and steps >= 0):
            raise ConfigError("steps", f"expected an integer >= 0, got {steps!r}")
    total = config.training.steps if steps is None else int(steps)
    if dataset is None:
        dataset = open_dataset(config, progress=progress)
    config.check_data(dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    if existing is None or existing.to_dict() != config.to_dict():
        config.to_json(run_dir / "config.json")
    trainer = Trainer(run_dir, config, dataset, progress=progress)
    return trainer.run(total)


def cli_train(args):
    """``python -m pianolab train RUN_DIR [--config cfg.json] [--steps N] [--quiet]`` (chapter 04_training)."""
    steps = getattr(args, "steps", None)
    if steps is not None and steps < 0:
        raise ConfigError("--steps", f"expected an integer >= 0, got {steps}")
    config = getattr(args, "config", None)
    if config is not None and not Path(config).is_file():
        raise ConfigError("--config", f"{config}: no such file (a JSON run config is expected)")
    progress = not getattr(args, "quiet", False)
    history = train(args.run_dir, config=config, steps=steps, progress=progress)
    last = history.rows[-1] if history.rows else {}
    val = history.val_loss
    val_text = f"{val[np.isfinite(val)][-1]:.4f}" if np.isfinite(val).any() else "n/a"
    print(f"{args.run_dir}: step {last.get('step', 0)}, validation loss {val_text} nats per key state, "
          f"{last.get('seconds', 0.0):.0f} s of training")
    return 0


def describe(config):
    """One-line summary of a config's model: layers, parameters, receptive field (chapter 04_training)."""
    from .model import count_params

    config = _as_config(config)
    inc = config.filter_increments
    return (f"{len(layer_plan(inc))} layers in {len(inc)} blocks, {count_params(inc):,} parameters, "
            f"receptive field {receptive_field(inc):,} key states")
