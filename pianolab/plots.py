"""What the reader sees: piano rolls, the flattening, loss curves, key histograms (chapter 01_encoding).

The book's conventions: a piano roll has time in seconds on x and note names on y (every C labelled,
``C4`` = middle C); a loss curve has the training step on x and nats per key state on y. Each
function draws into ``ax`` (or new axes) and returns the axes, so figures compose.
"""

import numpy as np

from ._io import check_roll
from .encoding import DEFAULT_ENCODING, EDGE_THRESHOLDS, note_name


def _new_axes(ax, figsize):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=figsize)[1]


def pitch_ticks(ax, lowest, highest, axis="y"):
    """Ticks named after the C of every octave between two MIDI pitches (the ends if there is no C)
    (chapter 09_benchmarks)."""
    pitches = [p for p in range(lowest, highest + 1) if p % 12 == 0] or sorted({lowest, highest})
    (ax.set_yticks if axis == "y" else ax.set_xticks)(pitches, [note_name(p) for p in pitches])


def show_table(header, rows):
    """Display ``rows`` under ``header`` as a Markdown table, in the notebook and the built book
    (chapter 03_receptive_field)."""
    from IPython.display import Markdown, display
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    display(Markdown("\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])))


def plot_roll(roll, encoding=DEFAULT_ENCODING, ax=None, title=None, seconds=None, *, keys="used", start=0.0,
              color=None):
    """Draw a piano roll: time (s) on x, note names on y (chapter 01_encoding).

    ``seconds`` keeps the first ``seconds`` or a ``(from, to)`` window; ``keys="used"`` zooms in on the
    sounding keys, ``"all"`` shows the whole key window; ``start`` is the time of the roll's first step.
    """
    import matplotlib.colors as mcolors
    if keys not in ("used", "all"):
        raise ValueError(f"keys must be 'used' or 'all', got {keys!r}")
    roll = check_roll(roll, encoding.n_keys)
    fs = float(encoding.steps_per_second)
    seconds = roll.shape[0] / fs if seconds is None else seconds
    a, b = (0, seconds) if np.ndim(seconds) == 0 else seconds
    t0, t1 = max(0, int(round(a * fs))), min(roll.shape[0], int(round(b * fs)))
    part = roll[t0:t1]
    lo, hi = encoding.lowest, encoding.highest
    if keys == "used" and part.any():
        down = np.flatnonzero(part.any(axis=0))
        lo = max(encoding.lowest, encoding.lowest + int(down[0]) - 3)  # a margin of 3 keys
        hi = min(encoding.highest, encoding.lowest + int(down[-1]) + 3)
    ax = _new_axes(ax, (10, 3.5))
    cmap = "Greys" if color is None else mcolors.ListedColormap(["white", color])
    ax.imshow(part[:, lo - encoding.lowest:hi - encoding.lowest + 1].T, aspect="auto", origin="lower",
              interpolation="nearest", cmap=cmap, vmin=0, vmax=1,
              extent=(start + t0 / fs, start + max(t1, t0 + 1) / fs, lo - 0.5, hi + 0.5))
    pitch_ticks(ax, lo, hi)
    ax.set(xlabel="time (s)", ylabel="pitch (note name)", **({"title": title} if title else {}))
    return ax


def plot_flattening(roll_slice, encoding=DEFAULT_ENCODING, *, lowest=None, start_step=0, figsize=(10, 4.5)):
    """How a few time steps of a roll become one sequence of key states (chapter 01_encoding): the slice
    as a grid (time steps across, keys up) over the same cells in the order the model reads them,
    ``roll.reshape(-1)``, each numbered by its place when few. ``lowest``: the MIDI pitch of column 0."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    roll_slice = check_roll(roll_slice)
    (n_steps, n_keys), fs = roll_slice.shape, float(encoding.steps_per_second)
    if roll_slice.size == 0:
        raise ValueError("the slice to flatten is empty")
    lowest = encoding.lowest if lowest is None else int(lowest)
    seq, annotate = roll_slice.reshape(-1), roll_slice.size <= 96
    step_colors = ["#dbe9f6", "#fde2c8", "#dff2d8", "#efe0f5"]  # one tint per time step
    _, (ax_roll, ax_seq) = plt.subplots(2, 1, figsize=figsize, gridspec_kw={"height_ratios": [3, 1]})

    def cell(ax, x, y, down, t, number, fontsize, edge="white"):
        ax.add_patch(Rectangle((x, y), 1, 1, facecolor="black" if down else step_colors[t % 4],
                               edgecolor=edge, linewidth=0.5))
        if annotate:
            ax.text(x + 0.5, y + 0.5, str(number), ha="center", va="center", fontsize=fontsize,
                    color="white" if down else "#333")

    for t, k in np.ndindex(n_steps, n_keys):
        cell(ax_roll, t, k, roll_slice[t, k], t, t * n_keys + k, 7)
    key_ticks = list(range(n_keys)) if n_keys <= 16 else (
        [k for k in range(n_keys) if (lowest + k) % 12 == 0] or [0, n_keys - 1])
    ax_roll.set(xlim=(0, n_steps), ylim=(0, n_keys), title="piano roll: time steps x keys",
                xlabel=f"time (s) of each step (one step = 1/{fs:g} s)", ylabel="pitch (note name)")
    ax_roll.set_xticks(np.arange(n_steps) + 0.5, [f"{(start_step + t) / fs:.3f}" for t in range(n_steps)])
    ax_roll.set_yticks(np.array(key_ticks) + 0.5, [note_name(lowest + k) for k in key_ticks])

    for i, v in enumerate(seq):
        cell(ax_seq, i, 0, v, i // n_keys, i, 6, edge="white" if seq.size <= 300 else "none")
    for t in range(1, n_steps):
        ax_seq.axvline(t * n_keys, color="#444", linewidth=1.2)
    ax_seq.set(xlim=(0, seq.size), ylim=(0, 1), yticks=[], xticks=[t * n_keys for t in range(n_steps + 1)],
               title="flat sequence: time-major, keys ascending within a step",
               xlabel="position in the flat sequence (key states; a new time step starts at each line)")
    return ax_roll, ax_seq


def plot_loss(history, ax=None, *, label=None, title=None, logy=False):
    """Loss curves: training step on x, nats per key state on y (chapter 04_training). ``history``: a
    :class:`pianolab.runs.History` (``History.read(run_dir)``, or what ``train`` returns); ``label``
    prefixes the legend entries, so several runs can share one axes."""
    ax = _new_axes(ax, (7, 4))
    steps, drawn = history.step, 0
    for key, name, style in (("train_loss", "training", "-"), ("val_loss", "validation", "o-")):
        y = history.column(key)
        ok = np.isfinite(steps) & np.isfinite(y)
        if ok.any():
            ax.plot(steps[ok], y[ok], style, markersize=3, label=f"{label}: {name}" if label else name)
            drawn += 1
    if not drawn:
        raise ValueError(f"the history holds no loss values to plot ({len(history)} rows; a run "
                         "directory without history.csv reads as no rows)")
    ax.set(xlabel="training step", ylabel="loss (nats per key state)", **({"yscale": "log"} if logy else {}),
           **({"title": title} if title else {}))
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def _key_fraction(x, n_keys):
    """A roll, a list of rolls or a ready per-key histogram -> fraction of time steps each key is down."""
    if isinstance(x, np.ndarray) and x.ndim == 2:
        x = [x]
    if isinstance(x, (list, tuple)) and x and np.ndim(x[0]) == 2:
        rolls = [check_roll(r, n_keys) for r in x]
        return sum(r.sum(axis=0, dtype=np.int64) for r in rolls) / max(1, sum(len(r) for r in rolls))
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (n_keys,):
        raise ValueError(f"expected rolls [T, {n_keys}] or a per-key histogram [{n_keys}], got {x.shape}")
    return x


def plot_key_histogram(rolls, encoding=DEFAULT_ENCODING, ax=None, *, title=None, show_edges=True,
                       normalize=False):
    """How often each key is down: note names on x, fraction of time steps on y (chapter 05_fast_wavenet).

    ``rolls``: a dict ``{label: rolls}`` to compare sets on one axes (or one set), each a roll, a list of
    rolls or a per-key histogram. ``normalize`` rescales each curve to sum to 1; ``show_edges`` shades
    the keys at each end of the keyboard where edge aversion acts.
    """
    ax = _new_axes(ax, (10, 3.5))
    for name, x in rolls.items() if isinstance(rolls, dict) else [(None, rolls)]:
        frac = _key_fraction(x, encoding.n_keys)
        if normalize and frac.sum() > 0:
            frac = frac / frac.sum()
        ax.step(encoding.pitches, frac, where="mid", label=name)
    lo, hi = encoding.lowest - 0.5, encoding.highest + 0.5
    if show_edges:
        e = min(len(EDGE_THRESHOLDS), encoding.n_keys // 2)
        ax.axvspan(lo, lo + e, color="red", alpha=0.08, label="edge zones")
        ax.axvspan(hi - e, hi, color="red", alpha=0.08)
    ax.set_xlim(lo, hi)
    pitch_ticks(ax, encoding.lowest, encoding.highest, axis="x")
    ax.set(xlabel="key (note name)", **({"title": title} if title else {}),
           ylabel="share of key-down states" if normalize else "fraction of time steps key is down")
    if isinstance(rolls, dict) or show_edges:
        ax.legend(loc="upper right")
    return ax
