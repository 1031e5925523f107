"""What the reader sees: piano rolls, the flattening, loss curves, key histograms (chapter 01_encoding).

Conventions of the whole book: a piano roll has time in seconds on the x-axis and note names on
the y-axis (every C labelled, e.g. ``C4`` = middle C); a loss curve has the training step on the
x-axis and the loss in nats per key state on the y-axis; every axis is labelled with its unit.
Each function draws into ``ax`` (or new axes) and returns the axes, so figures compose.
"""

import csv
import math
import os
from pathlib import Path

import numpy as np

from .encoding import DEFAULT_ENCODING, note_name

__all__ = ["plot_roll", "plot_flattening", "plot_loss", "plot_key_histogram", "read_history"]

ROLL_CMAP = "Greys"
EDGE_KEYS = 8  # keys at each end of the keyboard where edge aversion acts (chapter 05_fast_wavenet)


def _new_axes(ax, figsize):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _pitch_ticks(ax, lowest, highest, axis="y", every="C"):
    """Ticks on the C of every octave between two MIDI pitches (both ends inclusive)."""
    pitches = [p for p in range(lowest, highest + 1) if p % 12 == 0] if every == "C" else list(
        range(lowest, highest + 1))
    if not pitches:  # a window narrower than an octave: label its ends
        pitches = sorted({lowest, highest})
    labels = [note_name(p) for p in pitches]
    if axis == "y":
        ax.set_yticks(pitches)
        ax.set_yticklabels(labels)
    else:
        ax.set_xticks(pitches)
        ax.set_xticklabels(labels)


def _check_roll(roll, n_keys=None):
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ValueError(f"expected a piano roll [time steps, keys], got an array of shape {roll.shape}")
    if n_keys is not None and roll.shape[1] != n_keys:
        raise ValueError(f"expected a roll with {n_keys} keys (the encoding's n_keys), got {roll.shape[1]}")
    return roll


def plot_roll(roll, encoding=DEFAULT_ENCODING, ax=None, title=None, seconds=None, *,
              keys="used", start=0.0, color=None, figsize=(10, 3.5)):
    """Draw a piano roll: time (s) on x, note names on y (chapter 01_encoding).

    ``roll`` is ``[time steps, n_keys]`` under ``encoding``. ``seconds`` limits the plot to the
    first ``seconds`` (a number) or to a ``(from, to)`` window in seconds. ``keys="used"`` zooms
    the y-axis to the sounding keys (plus a margin), ``keys="all"`` shows the whole key window.
    ``start`` shifts the time axis (the roll's first step is at ``start`` seconds).
    """
    import matplotlib.colors as mcolors

    roll = _check_roll(roll, encoding.n_keys)
    fs = float(encoding.steps_per_second)
    if seconds is None:
        t0, t1 = 0, roll.shape[0]
    elif np.ndim(seconds) == 0:
        t0, t1 = 0, min(roll.shape[0], int(round(float(seconds) * fs)))
    else:
        a, b = seconds
        t0 = max(0, int(round(float(a) * fs)))
        t1 = min(roll.shape[0], int(round(float(b) * fs)))
    part = roll[t0:t1]
    ax = _new_axes(ax, figsize)
    lo, hi = encoding.lowest, encoding.highest
    if keys == "used" and part.any():
        down = np.flatnonzero(part.any(axis=0))
        lo = max(encoding.lowest, encoding.lowest + int(down[0]) - 3)
        hi = min(encoding.highest, encoding.lowest + int(down[-1]) + 3)
    elif keys not in ("used", "all"):
        raise ValueError(f"keys must be 'used' or 'all', got {keys!r}")
    k0, k1 = lo - encoding.lowest, hi - encoding.lowest + 1
    cmap = ROLL_CMAP if color is None else mcolors.ListedColormap(["white", color])
    x0 = start + t0 / fs
    x1 = start + max(t1, t0 + 1) / fs
    ax.imshow(
        part[:, k0:k1].T,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=cmap,
        vmin=0,
        vmax=1,
        extent=(x0, x1, lo - 0.5, hi + 0.5),
    )
    _pitch_ticks(ax, lo, hi)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch (note name)")
    if title:
        ax.set_title(title)
    return ax


def plot_flattening(roll_slice, encoding=DEFAULT_ENCODING, axes=None, *, lowest=None, start_step=0,
                    annotate=None, figsize=(10, 4.5)):
    """Show how a few time steps of a roll become one 1-D sequence of key states (chapter 01_encoding).

    Top: the slice as a grid (time steps across, keys up), each cell numbered by its position in
    the flat sequence when the grid is small. Bottom: the same key states in one row, in the order
    the model reads them: time-major, keys ascending within a step (``roll.reshape(-1)``).
    ``lowest`` is the MIDI pitch of the slice's first column (default: the encoding's); pass it when
    the slice holds only some of the keys. Returns ``(ax_roll, ax_sequence)``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    roll_slice = _check_roll(roll_slice)
    n_steps, n_keys = roll_slice.shape
    if n_steps == 0 or n_keys == 0:
        raise ValueError("the slice to flatten is empty")
    lowest = encoding.lowest if lowest is None else int(lowest)
    seq = roll_slice.reshape(-1)
    if annotate is None:
        annotate = seq.size <= 96
    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=figsize, gridspec_kw={"height_ratios": [3, 1]})
    ax_roll, ax_seq = axes
    fs = float(encoding.steps_per_second)
    step_colors = ["#dbe9f6", "#fde2c8", "#dff2d8", "#efe0f5"]

    # the grid: one column per time step, one row per key
    for t in range(n_steps):
        for k in range(n_keys):
            down = bool(roll_slice[t, k])
            ax_roll.add_patch(Rectangle((t, k), 1, 1, facecolor="black" if down else step_colors[t % 4],
                                        edgecolor="white", linewidth=0.5))
            if annotate:
                ax_roll.text(t + 0.5, k + 0.5, str(t * n_keys + k), ha="center", va="center",
                             fontsize=7, color="white" if down else "#333")
    ax_roll.set_xlim(0, n_steps)
    ax_roll.set_ylim(0, n_keys)
    ax_roll.set_xticks(np.arange(n_steps) + 0.5)
    ax_roll.set_xticklabels([f"{(start_step + t) / fs:.3f}" for t in range(n_steps)])
    ax_roll.set_xlabel(f"time (s) of each step (one step = 1/{fs:g} s)")
    key_ticks = [k for k in range(n_keys) if (lowest + k) % 12 == 0] or [0, n_keys - 1]
    if n_keys <= 16:
        key_ticks = list(range(n_keys))
    ax_roll.set_yticks(np.array(key_ticks) + 0.5)
    ax_roll.set_yticklabels([note_name(lowest + k) for k in key_ticks])
    ax_roll.set_ylabel("pitch (note name)")
    ax_roll.set_title("piano roll: time steps x keys")

    # the sequence: the same cells, one row
    for i, v in enumerate(seq):
        t = i // n_keys
        ax_seq.add_patch(Rectangle((i, 0), 1, 1, facecolor="black" if v else step_colors[t % 4],
                                   edgecolor="white" if seq.size <= 300 else "none", linewidth=0.4))
        if annotate:
            ax_seq.text(i + 0.5, 0.5, str(i), ha="center", va="center", fontsize=6,
                        color="white" if v else "#333")
    for t in range(1, n_steps):
        ax_seq.axvline(t * n_keys, color="#444", linewidth=1.2)
    ax_seq.set_xlim(0, seq.size)
    ax_seq.set_ylim(0, 1)
    ax_seq.set_yticks([])
    ticks = [t * n_keys for t in range(n_steps)] + [seq.size]
    ax_seq.set_xticks(ticks)
    ax_seq.set_xlabel("position in the flat sequence (key states; a new time step starts at each line)")
    ax_seq.set_title("flat sequence: time-major, keys ascending within a step")
    return ax_roll, ax_seq


# --------------------------------------------------------------------------------------------
# Loss curves

_STEP_KEYS = ("step", "steps", "global_step")
_TRAIN_KEYS = ("train_loss", "loss", "train", "training_loss")
_VAL_KEYS = ("val_loss", "validation_loss", "valid_loss", "val")


def _to_float(v):
    if v is None:
        return math.nan
    if isinstance(v, str):
        v = v.strip()
        if v == "" or v.lower() in {"nan", "none", "null"}:
            return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_history(history):
    """A training history -> dict of float arrays (chapter 04_training).

    Accepts a path to ``history.csv`` (or a run directory holding one), a dict of lists (columns)
    or a list of dict rows. Empty cells (e.g. steps without a validation loss) become NaN.
    """
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if path.is_dir():
            path = path / "history.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no history CSV (expected step, train loss, validation loss columns)")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        history = rows
    if isinstance(history, dict):
        cols = {str(k): list(v) for k, v in history.items()}
    else:
        rows = list(history)
        keys = []
        for r in rows:
            for k in r:
                if k not in keys:
                    keys.append(k)
        cols = {str(k): [r.get(k) for r in rows] for k in keys}
    return {k: np.array([_to_float(x) for x in v], dtype=np.float64) for k, v in cols.items()}


def _pick(cols, names, what):
    for n in names:
        if n in cols:
            return n
    return None


def plot_loss(history, ax=None, *, label=None, title=None, logy=False, figsize=(7, 4)):
    """Loss curves: training step on x, loss in nats per key state on y (chapter 04_training).

    ``history``: path to ``history.csv`` (or its run directory), a dict of lists, or a list of
    rows, with a ``step`` column and ``train_loss`` and/or ``val_loss`` columns (``loss`` /
    ``validation_loss`` are accepted too). ``label`` prefixes the legend entries, so several runs
    can share one axes.
    """
    cols = read_history(history)
    step_key = _pick(cols, _STEP_KEYS, "step")
    train_key = _pick(cols, _TRAIN_KEYS, "train loss")
    val_key = _pick(cols, _VAL_KEYS, "validation loss")
    if step_key is None:
        raise ValueError(f"the history has no step column (one of {_STEP_KEYS}); columns: {sorted(cols)}")
    if train_key is None and val_key is None:
        raise ValueError(
            f"the history has no loss column (one of {_TRAIN_KEYS + _VAL_KEYS}); columns: {sorted(cols)}"
        )
    ax = _new_axes(ax, figsize)
    steps = cols[step_key]
    prefix = f"{label}: " if label else ""
    drawn = 0
    for key, name, style in ((train_key, "training", "-"), (val_key, "validation", "o-")):
        if key is None:
            continue
        y = cols[key]
        ok = np.isfinite(steps) & np.isfinite(y)
        if not ok.any():
            continue
        ax.plot(steps[ok], y[ok], style, markersize=3, label=f"{prefix}{name}")
        drawn += 1
    if drawn == 0:
        raise ValueError("the history holds no finite loss values to plot")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats per key state)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------
# Key histograms


def _key_fraction(x, n_keys):
    """Rolls or a ready histogram -> fraction of time steps each key is down."""
    if isinstance(x, (list, tuple)) and x and np.ndim(x[0]) == 2:
        rolls = [_check_roll(r, n_keys) for r in x]
        total = sum(r.shape[0] for r in rolls)
        counts = sum(r.sum(axis=0, dtype=np.int64) for r in rolls)
        return counts / max(total, 1)
    x = np.asarray(x)
    if x.ndim == 2:
        _check_roll(x, n_keys)
        return x.sum(axis=0, dtype=np.int64) / max(x.shape[0], 1)
    if x.ndim == 1 and x.size == n_keys:
        return x.astype(np.float64)
    raise ValueError(
        f"expected a roll [T, {n_keys}], a list of rolls or a per-key histogram of length {n_keys}, "
        f"got shape {x.shape}"
    )


def plot_key_histogram(rolls, encoding=DEFAULT_ENCODING, ax=None, *, label=None, title=None,
                       show_edges=True, normalize=False, figsize=(10, 3.5)):
    """How often each key is down: note names on x, fraction of time steps on y (chapter 05_fast_wavenet).

    ``rolls``: a roll, a list of rolls, a per-key histogram (taken as fractions), or a dict
    label -> any of those to compare several sets on one axes. ``normalize`` rescales each curve
    to sum to 1 (a distribution over keys). ``show_edges`` shades the 8 keys at each end of the
    keyboard, where edge aversion acts.
    """
    ax = _new_axes(ax, figsize)
    series = rolls.items() if isinstance(rolls, dict) else [(label, rolls)]
    pitches = encoding.pitches
    for name, x in series:
        frac = _key_fraction(x, encoding.n_keys)
        if normalize:
            s = frac.sum()
            frac = frac / s if s > 0 else frac
        ax.step(pitches, frac, where="mid", label=name)
    if show_edges:
        e = min(EDGE_KEYS, encoding.n_keys // 2)
        ax.axvspan(encoding.lowest - 0.5, encoding.lowest + e - 0.5, color="red", alpha=0.08,
                   label="edge zones")
        ax.axvspan(encoding.highest - e + 0.5, encoding.highest + 0.5, color="red", alpha=0.08)
    ax.set_xlim(encoding.lowest - 0.5, encoding.highest + 0.5)
    _pitch_ticks(ax, encoding.lowest, encoding.highest, axis="x")
    ax.set_xlabel("key (note name)")
    ax.set_ylabel("share of key-down states" if normalize else "fraction of time steps key is down")
    if title:
        ax.set_title(title)
    if any(n for n, _ in (rolls.items() if isinstance(rolls, dict) else [(label, None)])) or show_edges:
        ax.legend(loc="upper right")
    return ax
