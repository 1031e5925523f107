"""Training runs: the one loop, checkpoints, snapshots, history (chapter 04_training).

A run directory holds ``config.json``, ``history.csv``, ``loss.png``, ``model.keras`` (latest),
``best.keras``, ``snapshots/step-NNNNNN.weights.h5`` (kept for good) and ``checkpoints/`` (model +
Adam state, then ``latest.json``), each written atomically: the same command after ``kill -9``
resumes from the newest checkpoint, and since the batch of step ``s`` is a pure function of ``(seed,
s, batch size)`` it sees the batches the uninterrupted run would have. A step is one
``train_on_batch`` (BCE in nats per key state, Adam); ``training.distribute = "mirrored"`` runs the
same batches through ``fit`` under TensorFlow's ``MirroredStrategy``, one share per device.
"""

from pathlib import Path

from ._trainer import Trainer
from .config import RunConfig
from .errors import ConfigError
from .model import count_params, layer_plan


def _check_data(config, dataset):
    """The rules that need the data: both splits hold pieces, the receptive field fits."""
    for split in (dataset.train, dataset.val):
        if not split.pieces:
            raise ConfigError("data", f"the dataset has no {split.name} pieces; use a bigger corpus or "
                                      "change data.val_fraction")
    rf, longest = config.receptive_field, max(b - a for _, a, b in dataset.train.pieces)
    if rf > longest:
        key = "model.filter_increments" if config.model.preset is None else "model.preset"
        raise ConfigError(key, f"the receptive field ({rf} key states) is longer than the longest training "
                               f"piece ({longest} key states); choose a smaller model or longer pieces")
    if config.training.n_targets > dataset.train.sequence.shape[0]:
        raise ConfigError("training.n_targets", f"expected at most the {dataset.train.sequence.shape[0]} key "
                                                f"states of the training split, got {config.training.n_targets}")


def train(run_dir, config=None, steps=None, progress=True, *, dataset=None):
    """Train (or resume) the run in ``run_dir``; returns its :class:`History` (chapter 04_training).
    ``config``: a :class:`~pianolab.config.RunConfig`, a dict or a JSON path (None: the run's own, or
    the defaults); a run resumes with more ``training.steps`` or ``snapshot_at``, nothing else changed.
    ``steps``: train until this many in all. ``dataset``: splits instead of those ``config.data`` names."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    existing = RunConfig.from_json(path) if path.is_file() else None
    if config is None:
        config = existing or RunConfig()
    elif not isinstance(config, RunConfig):
        config = RunConfig.from_json(config) if isinstance(config, (str, Path)) else RunConfig.from_dict(config)
    a, b = (existing or config).to_dict(), config.to_dict()
    for s, k in ((s, k) for s in a for k in a[s] if a[s][k] != b[s][k] and k not in ("steps", "snapshot_at")):
        raise ConfigError(f"{s}.{k}", f"{run_dir} already holds a run with {a[s][k]!r} here, not {b[s][k]!r}; "
                                      "use a new run directory, or resume it without a new config")
    if steps is not None and not (type(steps) is int and steps >= 0):
        raise ConfigError("steps", f"expected a whole number >= 0, got {steps!r}")
    dataset = dataset if dataset is not None else config.open_dataset(progress=progress)
    _check_data(config, dataset)
    if existing is None or existing.to_dict() != config.to_dict():
        config.to_json(path)
    return Trainer(run_dir, config, dataset, progress=progress).run(config.training.steps if steps is None else steps)


def describe(config):
    """One line on a config's model: layers, parameters, receptive field (chapter 04_training)."""
    inc = config.filter_increments
    return (f"{len(layer_plan(inc))} layers in {len(inc)} blocks, {count_params(inc):,} parameters, "
            f"receptive field {config.receptive_field:,} key states")
