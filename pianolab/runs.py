"""Run directories: history, trained models, snapshots and evaluation (chapter 04_training).

What :mod:`pianolab.train` writes, read back: ``history.csv`` as a :class:`History`, the models of a
run or of a shipped model under ``data/models`` (by name), its weight snapshots, and the loss of a
model on a split.
"""

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from . import _io
from .windows import Windows
from .config import RunConfig
from .encoding import Encoding
from .errors import ConfigError
from .model import binary_cross_entropy, model_receptive_field
from .settings import models_dir

SNAPSHOT_FILE = "snapshots/step-{:06d}.weights.h5"  #: Where a run keeps its weights at a step, ``.format(step)``.
HISTORY_COLUMNS = ("step", "train_loss", "val_loss", "val_nats_per_step", "batch_size", "key_states", "seconds")


class History:
    """The rows of ``history.csv`` (chapter 06_shallow_vs_deep): ``history.rows`` the dicts, a column as an
    array (``history.val_loss``, NaN where a row has no value)."""

    def __init__(self, rows=()):
        self.rows = [dict(r) for r in rows]

    @classmethod
    def read(cls, path):
        """Read ``history.csv`` or a run directory's (no file: no rows)."""
        path = Path(path) / "history.csv" if Path(path).is_dir() else Path(path)
        if not path.is_file():
            return cls()
        ints = ("step", "batch_size", "key_states")
        with open(path, newline="") as f:
            return cls([{k: None if v in ("", None) else int(float(v)) if k in ints else float(v) for k, v in r.items()}
                        for r in csv.DictReader(f)])

    def to_csv(self, path):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HISTORY_COLUMNS)
        for r in self.rows:
            w.writerow(["" if r.get(c) is None else repr(float(r[c])) if isinstance(r[c], float) else r[c]
                        for c in HISTORY_COLUMNS])
        _io.write_bytes(path, buf.getvalue())

    def column(self, name):
        return np.array([np.nan if r.get(name) is None else float(r[name]) for r in self.rows])

    def __getattr__(self, name):
        if name in HISTORY_COLUMNS:
            return self.column(name)
        raise AttributeError(name)

    def __len__(self):
        return len(self.rows)

    final_step = property(lambda self: int(self.rows[-1]["step"]) if self.rows else 0)


def validation_windows(split, receptive_field, n_targets, n_windows, seed=0):
    """``n_windows`` fixed windows of a split, drawn with ``seed``: ``(x, y, w)`` as
    :meth:`~pianolab.windows.Windows.cut` gives them (chapter 04_training)."""
    w = Windows(split, receptive_field, n_targets)
    return w.cut(*w.sample(np.random.default_rng([int(seed), 1_000_003]), n_windows))


def evaluate(model, split, *, n_targets=None, n_windows=None, batch_size=4, seed=0, windows=None):
    """Loss of ``model`` on a split (chapter 04_training), over every key state of every piece once
    (``n_windows=None``), ``n_windows`` fixed windows drawn with ``seed``, or given ``windows`` (from
    :func:`validation_windows`): ``loss_per_state`` (nats per key state), ``nats_per_step`` (times the
    number of keys), ``key_states`` (how many were scored) and ``n_keys``."""
    rf, n, n_keys = model_receptive_field(model), int(n_targets or 8192), split.encoding.n_keys
    if windows is None and n_windows is None:
        batches = Windows(split, rf, n).tiles(batch_size)
    else:
        xs, ys, ws = windows if windows is not None else validation_windows(split, rf, n, n_windows, seed)
        batches = ((xs[i:i + batch_size, :, None], ys[i:i + batch_size, :, None], ws[i:i + batch_size])
                   for i in range(0, len(xs), batch_size))
    total = count = 0.0
    for x, y, w in batches:
        p = np.asarray(model.predict_on_batch(x.astype(np.float32)))[..., 0]
        total, count = total + float((binary_cross_entropy(y[..., 0], p) * w).sum()), count + float(w.sum())
    loss = total / count if count else math.nan
    return {"loss_per_state": loss, "nats_per_step": loss * n_keys, "key_states": int(count), "n_keys": n_keys}


def _run_path(path):
    """A run directory, ``.keras`` file or the name of a shipped model under ``data/models``, as a path."""
    path = Path(path).expanduser()
    return models_dir() / path if not path.exists() and (models_dir() / path).exists() else path


def load_model(path, which="latest", compile=False):
    """A trained model from a ``.keras`` file, a run directory (``which``: 'latest' = model.keras,
    'best' = best.keras) or a shipped model's name (chapter 04_training)."""
    import keras
    path = _run_path(path)
    if which not in ("latest", "best"):
        raise ConfigError("which", f"expected 'latest' or 'best', got {which!r}")
    if path.is_dir():
        best = path / "best.keras"
        path = best if which == "best" and best.is_file() else path / "model.keras"
        if not path.is_file():
            raise ConfigError("model", f"{path.parent} holds no model.keras: train it first "
                                       f"(`python -m pianolab train {path.parent}`)")
    if not path.is_file():
        shipped = sorted(p.name for p in models_dir().glob("*") if p.is_dir())
        raise ConfigError("model", f"{path}: no such model file, run directory or shipped model (shipped: {shipped})")
    return keras.models.load_model(path, compile=compile)


def load_run(run_dir, which="latest"):
    """``(config, model)`` of a run directory or shipped model (chapter 04_training)."""
    return RunConfig.from_json(_run_path(run_dir) / "config.json"), load_model(run_dir, which=which)


def snapshot_steps(run_dir):
    """The steps at which a run kept a weight snapshot, ascending (chapter 08_training_length)."""
    found = (re.fullmatch(r"step-(\d+)\.weights\.h5", p.name) for p in (_run_path(run_dir) / "snapshots").glob("*"))
    return sorted(int(m.group(1)) for m in found if m)


def load_snapshot(run_dir, step):
    """A run's model as it was at snapshot ``step`` (chapter 08_training_length)."""
    path = _run_path(run_dir) / SNAPSHOT_FILE.format(int(step))
    if not path.is_file():
        raise ConfigError("step", f"{_run_path(run_dir)} has no snapshot at step {step}; it has "
                                  f"{snapshot_steps(run_dir) or 'none (set training.snapshot_at to keep some)'}")
    model = RunConfig.from_json(_run_path(run_dir) / "config.json").build_model()
    model.load_weights(path)
    return model


def encoding_of(run_dir):
    """The :class:`~pianolab.encoding.Encoding` a run or shipped model was trained with, from its
    ``config.json`` (the default encoding when it has none) (chapter 07_pianonet_models)."""
    path = _run_path(run_dir)
    config = (path.parent if path.is_file() else path) / "config.json"
    return RunConfig.from_json(config).encoding if config.is_file() else Encoding()
