"""The trainer behind :func:`pianolab.train.train`: one run directory's state, stepped, validated,
checkpointed (not a pipeline stage of its own; ``benchmarks/train_throughput.py`` times its steps).
"""

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import _io
from .windows import Windows
from .errors import ConfigError, TrainingError
from .plots import plot_loss
from .runs import SNAPSHOT_FILE, History, evaluate, validation_windows


def _batch(windows, seed, step, batch_size):
    """The batch of global step ``step``: a pure function of (seed, step, batch size)."""
    x, y, w = windows.cut(*windows.sample(np.random.default_rng([int(seed), int(step)]), batch_size))
    return x.astype(np.float32)[..., None], y.astype(np.float32)[..., None], w


def _save_loss_plot(history, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4), dpi=100)
    plot_loss(history, ax=fig.add_subplot())
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def _jit(config):
    import keras
    return True if keras.backend.backend() == "jax" else config.training.jit_compile  # JAX is eager without


def _compile(model, config):
    import keras
    t = config.training
    lr = t.lr if t.lr_final is None else keras.optimizers.schedules.CosineDecay(t.lr, max(1, t.steps), t.lr_final / t.lr)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), jit_compile=_jit(config),
                  loss=keras.losses.BinaryCrossentropy(reduction="mean_with_sample_weight"))  # per key state
    return model


class Trainer:
    """One run directory's training state: ``Trainer(run_dir, config, dataset)`` resumes from the
    newest checkpoint or builds a fresh model; ``train_steps(k)`` runs ``k`` optimizer steps;
    ``run(total)`` trains up to ``total`` steps with validation, history, checkpoints and snapshots."""

    def __init__(self, run_dir, config, dataset, progress=True):
        import keras
        self.run_dir, self.config, self.dataset, self.progress = Path(run_dir), config, dataset, progress
        self.ckpt_dir = self.run_dir / "checkpoints"
        for folder in (self.run_dir, self.ckpt_dir, self.run_dir / "snapshots"):
            _io.remove_temp_files(folder)  # debris of writes killed half-way
        self.windows = Windows(dataset.train, config.receptive_field, config.training.n_targets)
        self._val = self._twin = self.strategy = None
        if config.training.distribute == "mirrored":
            import tensorflow as tf  # the config allows 'mirrored' on the TensorFlow backend only
            if keras.backend.backend() != "tensorflow":
                raise ConfigError("training.distribute", f"'mirrored' needs KERAS_BACKEND=tensorflow, not "
                                                         f"{keras.backend.backend()!r}")
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            self.strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        state = self._read_state()
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            if state is None:
                self.model = _compile(config.build_model(dataset), config)
                self.step, self.seconds, self.key_states, self.pending = 0, 0.0, 0, [0.0, 0]
                self.best_val, self.checkpoint_step, self.history = math.inf, None, History()
            else:
                self.model = keras.models.load_model(self.ckpt_dir / state["file"], compile=True)
                self.model.jit_compile = _jit(config)
                self.step, self.seconds = int(state["step"]), float(state["seconds"])
                self.key_states, self.pending = int(state["key_states"]), list(state["pending"])
                self.best_val = math.inf if state.get("best_val") is None else float(state["best_val"])
                self.checkpoint_step = self.step
                self.history = History(r for r in History.read(self.run_dir).rows if r["step"] <= self.step)
        self.resumed = state is not None

    def _read_state(self):
        path = self.ckpt_dir / "latest.json"
        try:
            state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except ValueError as exc:
            raise TrainingError(f"{path}: unreadable ({exc}); remove it to start again") from None
        if state is not None and not (self.ckpt_dir / state["file"]).is_file():
            raise TrainingError(f"{path} names {state['file']}, which is missing; remove latest.json to start again")
        return state

    def checkpoint(self):
        """Write the model with its optimizer state, the history and then ``latest.json``."""
        name = f"step-{self.step:08d}.keras"
        _io.save_model(self.model, self.ckpt_dir / name)
        self.history.to_csv(self.run_dir / "history.csv")
        state = {"step": self.step, "file": name, "seconds": self.seconds, "key_states": self.key_states,
                 "pending": self.pending, "best_val": self.best_val if math.isfinite(self.best_val) else None,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _io.write_bytes(self.ckpt_dir / "latest.json", json.dumps(state, indent=1) + "\n")
        _io.write_bytes(self.run_dir / "model.keras", (self.ckpt_dir / name).read_bytes())
        self.checkpoint_step = self.step
        for old in sorted(self.ckpt_dir.glob("step-*.keras"))[:-self.config.training.keep_checkpoints]:
            old.unlink(missing_ok=True)
        try:
            _save_loss_plot(self.history, self.run_dir / "loss.png")
        except Exception as exc:  # a plot must never stop a run
            print(f"pianolab train: could not draw loss.png ({exc})", file=sys.stderr)

    def snapshot(self):
        """Keep the current weights for good (weights only: through an uncompiled twin, since a
        compiled model's ``save_weights`` adds the Adam moments)."""
        self._twin = self._twin or self.config.build_model()
        self._twin.set_weights(self.model.get_weights())
        with _io.atomic_path(self.run_dir / SNAPSHOT_FILE.format(self.step), suffix=".weights.h5") as tmp:
            self._twin.save_weights(tmp)

    def train_steps(self, k, bar=None, batch_size=None):
        """Run ``k`` optimizer steps at the ramp's batch size (or ``batch_size``); the per-step losses.
        One ``train_on_batch`` a step; under a strategy one ``fit`` for the ``k``, which splits every
        batch over the replicas (each step then reports the mean loss of the ``k``)."""
        b = self.config.batch_size_at(self.step) if batch_size is None else int(batch_size)
        if self.strategy:  # every replica needs a share of the batch
            b = -(-b // self.strategy.num_replicas_in_sync) * self.strategy.num_replicas_in_sync
        t0, seed, seen = time.perf_counter(), self.config.training.seed, []
        batches = (_batch(self.windows, seed, s, b) for s in range(self.step, self.step + k))
        batches = (seen.append(int(w.sum())) or (x, y, w) for x, y, w in batches)
        if self.strategy:
            mean = self.model.fit(batches, steps_per_epoch=k, epochs=1, verbose=0, shuffle=False).history["loss"][0]
            losses = [float(mean)] * k
        else:
            losses = [float(np.asarray(self.model.train_on_batch(*batch)).reshape(-1)[0]) for batch in batches]
        if bar is not None:
            bar.update(k)
        if not all(map(math.isfinite, losses)):
            kept = f"its last good checkpoint is step {self.checkpoint_step}" if self.checkpoint_step else \
                "it had written no checkpoint yet"
            raise TrainingError(f"the training loss became {losses[-1]} by step {self.step + k} (batch size {b}, "
                                f"lr {self.config.training.lr}); the run stopped and {kept}. Lower training.lr.")
        self.seconds += time.perf_counter() - t0
        self.step += k
        self.key_states += sum(seen)
        return losses

    def validate(self):
        v, t0 = self.config.validation, time.perf_counter()
        if v.n_windows is not None and self._val is None:
            self._val = validation_windows(self.dataset.val, self.config.receptive_field, self.config.val_targets,
                                           v.n_windows, v.seed)
        model = self.model
        if self.strategy:  # under MirroredStrategy predict_on_batch returns one copy of the batch per replica
            model = self._twin = self._twin or self.config.build_model()
            model.set_weights(self.model.get_weights())
        res = evaluate(model, self.dataset.val, n_targets=self.config.val_targets, windows=self._val,
                       batch_size=v.batch_size)
        self.seconds += time.perf_counter() - t0
        if res["loss_per_state"] < self.best_val:
            self.best_val = res["loss_per_state"]
            _io.save_model(self.model, self.run_dir / "best.keras")
        return res

    def _row(self, val=None):
        row = {"step": self.step, "train_loss": self.pending[0] / self.pending[1] if self.pending[1] else None,
               "val_loss": val and val["loss_per_state"], "val_nats_per_step": val and val["nats_per_step"],
               "batch_size": self.config.batch_size_at(max(0, self.step - 1)), "key_states": self.key_states,
               "seconds": round(self.seconds, 3)}
        self.pending = [0.0, 0]
        if self.history.rows and self.history.rows[-1]["step"] == self.step:
            self.history.rows[-1].update({k: v for k, v in row.items() if v is not None})
        else:
            self.history.rows.append(row)
        return row

    def run(self, total):
        """Train until ``total`` steps in all; returns the :class:`History`."""
        t, total = self.config.training, int(total)
        if self.step == 0 and not self.history.rows and t.validate_every:
            self._row(self.validate())
            self.history.to_csv(self.run_dir / "history.csv")
        with _io.progress(total=total, initial=self.step, enabled=self.progress, unit="step",
                          desc=f"training {self.run_dir.name}") as bar:
            while self.step < total:
                s = self.step
                stops = [total, _next(s, t.log_every), _next(s, t.checkpoint_every)] + [a for a in t.snapshot_at if a > s]
                stops += [_next(s, t.batch_double_every)] if self.config.batch_size_at(s) < t.batch_end else []
                stops += [_next(s, t.validate_every)] if t.validate_every else []
                losses = self.train_steps(min(stops) - s, bar)
                self.pending = [self.pending[0] + float(np.sum(losses)), self.pending[1] + len(losses)]
                s = self.step
                validate = bool(t.validate_every) and (s % t.validate_every == 0 or s == total)
                if s % t.log_every == 0 or validate or s == total:
                    val = self.validate() if validate else None
                    row = self._row(val)
                    self.history.to_csv(self.run_dir / "history.csv")
                    bar.set_postfix({"loss": f"{row['train_loss']:.4f}", "batch": row["batch_size"]}
                                    | ({"val": f"{val['loss_per_state']:.4f}"} if val else {}), refresh=False)
                if s in t.snapshot_at:
                    self.snapshot()
                if s % t.checkpoint_every == 0 or s == total:
                    self.checkpoint()
        if self.checkpoint_step != self.step:
            self.checkpoint()
        return History(self.history.rows)


def _next(s, every):
    return (s // every + 1) * every
