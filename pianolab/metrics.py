"""Statistics of music, and how close a generated set is to real pieces (chapters 06_shallow_vs_deep
and 07_training_length).

Everything here reads binary piano rolls ``uint8 [time steps, keys]`` together with their
:class:`pianolab.encoding.Encoding` (steps per second, lowest key), and is plain numpy.

Statistics of one roll (:func:`roll_statistics`), each also over time windows
(:func:`windowed_statistics`) to see a performance drift:

* ``notes_per_second`` -- note onsets (a key going from up to down, or down at the first step)
  per second;
* ``key_down_rate`` -- fraction of key states that are down (about 4% for the default corpus);
* ``polyphony`` -- keys down per *sounding* step (steps with no key down are left out; 0 if the
  roll is silent);
* ``pitch_range`` -- highest minus lowest sounding MIDI pitch, in semitones (0 if silent);
* ``pitch_count`` -- number of different pitches sounded;
* ``silence_fraction`` -- fraction of steps with no key down;
* ``pitch_class_histogram`` -- share of the onsets on each of the 12 pitch classes C..B (all
  zeros if there is no onset).

Comparing sets (:func:`compare_sets`), after Yang and Lerch, "On the evaluation of generative
models in music" (Neural Computing and Applications, 2018) and their ``mgeval`` code:

* for each scalar statistic, the *intra-set* distances (``|a_i - a_j|`` between pieces of the
  reference set) and the *inter-set* distances (``|a_i - g_j|`` between a reference piece and a
  generated one) are smoothed into densities with a Gaussian kernel density estimate
  (:func:`gaussian_kde`, Scott's bandwidth as in ``scipy.stats.gaussian_kde``); the *overlap
  area* of the two densities (1 = the generated pieces are as close to the reference as the
  reference pieces are to each other) and their KL divergence are reported. The overlap area of
  the statistic's own values in the two sets is reported too;
* the KL divergence ``KL(reference || generated)`` of the pooled pitch-class histograms
  (:func:`pitch_class_kl`), in nats.

Unlike ``mgeval``, which integrates only between the smallest and largest sample, the densities
here are integrated over the whole real line (a grid reaching 4 bandwidths past the samples), so
the overlap of a set with itself is exactly 1.
"""

import numpy as np

from .encoding import DEFAULT_ENCODING

#: The scalar statistics of :func:`roll_statistics`, in display order.
SCALAR_STATISTICS = ("notes_per_second", "key_down_rate", "polyphony", "pitch_range",
                     "pitch_count", "silence_fraction")
#: Units of each statistic, for axis labels.
UNITS = {
    "notes_per_second": "notes/s",
    "key_down_rate": "fraction of key states",
    "polyphony": "keys down per sounding step",
    "pitch_range": "semitones",
    "pitch_count": "pitches",
    "silence_fraction": "fraction of steps",
}
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _check_roll(roll, encoding):
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != encoding.n_keys:
        raise ValueError(
            f"expected a roll of shape [time steps, {encoding.n_keys}] for this encoding, got {roll.shape}")
    return roll.astype(bool)


def onsets(roll):
    """Boolean ``[T, K]``: where a key goes down (up -> down, or down at step 0) (chapter 06_shallow_vs_deep)."""
    roll = np.asarray(roll).astype(bool)
    prev = np.zeros_like(roll)
    prev[1:] = roll[:-1]
    return roll & ~prev


def _stats_from(roll, onset, encoding):
    """Statistics of ``roll`` (bool [T, K]) whose onsets are ``onset`` (bool [T, K])."""
    steps = roll.shape[0]
    down_per_step = roll.sum(axis=1)
    sounding = down_per_step > 0
    keys = np.flatnonzero(roll.any(axis=0))
    pitches = encoding.lowest + keys
    n_onsets = int(onset.sum())
    pc = np.zeros(12)
    if n_onsets:
        per_key = onset.sum(axis=0)
        np.add.at(pc, (encoding.lowest + np.arange(roll.shape[1])) % 12, per_key)
        pc /= pc.sum()
    seconds = steps / encoding.steps_per_second
    return {
        "notes_per_second": n_onsets / seconds if steps else 0.0,
        "key_down_rate": float(roll.mean()) if roll.size else 0.0,
        "polyphony": float(down_per_step[sounding].mean()) if sounding.any() else 0.0,
        "pitch_range": float(pitches.max() - pitches.min()) if keys.size else 0.0,
        "pitch_count": float(keys.size),
        "silence_fraction": float(1.0 - sounding.mean()) if steps else 1.0,
        "pitch_class_histogram": pc,
    }


def roll_statistics(roll, encoding=DEFAULT_ENCODING):
    """The statistics of one roll as a dict (see the module docstring) (chapter 06_shallow_vs_deep).

    >>> r = np.zeros((48, 72), np.uint8); r[:24, 29] = 1     # C4 for half a second
    >>> roll_statistics(r)["notes_per_second"]
    1.0
    """
    roll = _check_roll(roll, encoding)
    return _stats_from(roll, onsets(roll), encoding)


def windowed_statistics(roll, encoding=DEFAULT_ENCODING, window_seconds=5.0, hop_seconds=None):
    """Statistics over consecutive time windows of one roll, to see drift (chapter 06_shallow_vs_deep).

    Windows of ``window_seconds`` start every ``hop_seconds`` (default: the window length, so they
    do not overlap); a trailing part shorter than a window is dropped (a roll shorter than one
    window gives no windows). A note held into a window from before it is not an onset there.
    Returns a dict: ``time`` (window centres in seconds), each scalar statistic as an array over
    windows, and ``pitch_class_histogram`` as ``[windows, 12]``.
    """
    roll = _check_roll(roll, encoding)
    hop_seconds = window_seconds if hop_seconds is None else hop_seconds
    win = int(round(window_seconds * encoding.steps_per_second))
    hop = int(round(hop_seconds * encoding.steps_per_second))
    if win < 1 or hop < 1:
        raise ValueError(f"window ({window_seconds} s) and hop ({hop_seconds} s) must be at least one step")
    on = onsets(roll)
    starts = list(range(0, roll.shape[0] - win + 1, hop))
    out = {"time": np.array([(s + win / 2) / encoding.steps_per_second for s in starts])}
    rows = [_stats_from(roll[s:s + win], on[s:s + win], encoding) for s in starts]
    for name in SCALAR_STATISTICS:
        out[name] = np.array([r[name] for r in rows], dtype=np.float64)
    out["pitch_class_histogram"] = np.array([r["pitch_class_histogram"] for r in rows]).reshape(-1, 12)
    return out


def set_statistics(rolls, encoding=DEFAULT_ENCODING):
    """Statistics of each roll of a set: ``{name: array [pieces]}`` and the histograms ``[pieces, 12]``
    (chapter 06_shallow_vs_deep)."""
    rows = [roll_statistics(r, encoding) for r in rolls]
    out = {name: np.array([r[name] for r in rows], dtype=np.float64) for name in SCALAR_STATISTICS}
    out["pitch_class_histogram"] = np.array([r["pitch_class_histogram"] for r in rows]).reshape(-1, 12)
    return out


def statistics_over_time(rolls, encoding=DEFAULT_ENCODING, window_seconds=5.0):
    """Windowed statistics of a set aligned by window index: ``{name: array [pieces, windows]}``
    (NaN past the end of shorter pieces) plus ``time`` (chapter 06_shallow_vs_deep)."""
    per = [windowed_statistics(r, encoding, window_seconds) for r in rolls]
    n = max((len(p["time"]) for p in per), default=0)
    out = {"time": (np.arange(n) + 0.5) * window_seconds}
    for name in SCALAR_STATISTICS:
        a = np.full((len(per), n), np.nan)
        for i, p in enumerate(per):
            a[i, :len(p[name])] = p[name]
        out[name] = a
    return out


def reference_band(rolls, encoding=DEFAULT_ENCODING, window_seconds=5.0, percentiles=(10, 50, 90)):
    """The band real music keeps: percentiles of every window of every reference roll.

    Returns ``{name: array [len(percentiles)]}`` -- draw a generated performance's windowed
    statistics against it to see whether it drifts out (chapter 06_shallow_vs_deep).
    """
    per = [windowed_statistics(r, encoding, window_seconds) for r in rolls]
    out = {}
    for name in SCALAR_STATISTICS:
        values = np.concatenate([p[name] for p in per]) if per else np.array([])
        if values.size == 0:
            raise ValueError(f"no reference roll is at least {window_seconds} s long")
        out[name] = np.percentile(values, percentiles)
    return out


# ----------------------------------------------------------------------------------------------
# Densities and distances


def scott_bandwidth(samples):
    """Scott's rule for a 1-D Gaussian KDE: ``std(ddof=1) * n ** (-1/5)`` (as scipy's default).

    Samples with no spread (all equal, or a single one) get a bandwidth of ``1e-3 * max(1, |x|)``
    so that the density is a narrow bump instead of a division by zero (chapter 06_shallow_vs_deep).
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("a kernel density estimate needs at least one sample")
    sd = x.std(ddof=1) if x.size > 1 else 0.0
    if not sd > 0:
        return 1e-3 * max(1.0, float(np.abs(x).max()))
    return float(sd * x.size ** (-1 / 5))


def gaussian_kde(samples, bandwidth=None):
    """A 1-D Gaussian kernel density estimate, written out (chapter 06_shallow_vs_deep).

    ``p(x) = mean_i N(x; samples_i, h^2)`` with ``h`` = ``bandwidth`` or :func:`scott_bandwidth`.
    Returns the function ``p`` (numpy array in, density out); ``p.bandwidth`` holds ``h``.
    NaN samples are dropped.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    h = float(bandwidth) if bandwidth is not None else scott_bandwidth(x)
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0, got {h}")

    def pdf(t):
        t = np.asarray(t, dtype=np.float64)
        z = (t.reshape(-1, 1) - x.reshape(1, -1)) / h
        return (np.exp(-0.5 * z * z).sum(axis=1) / (x.size * h * np.sqrt(2 * np.pi))).reshape(t.shape)

    pdf.bandwidth = h
    pdf.samples = x
    return pdf


def _grid(pdfs, n_grid):
    lo = min(float(p.samples.min()) - 4 * p.bandwidth for p in pdfs)
    hi = max(float(p.samples.max()) + 4 * p.bandwidth for p in pdfs)
    return np.linspace(lo, hi, n_grid)


def _trapezoid(y, x):
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def overlap_area(a, b, n_grid=2001, bandwidth=None):
    """Overlap area ``integral min(p_a, p_b) dx`` of the Gaussian KDEs of two samples, in [0, 1].

    1 means the two distributions coincide, 0 that they do not touch. ``bandwidth`` (default:
    Scott's rule for each sample) applies to both (chapter 06_shallow_vs_deep).
    """
    pa, pb = gaussian_kde(a, bandwidth), gaussian_kde(b, bandwidth)
    x = _grid([pa, pb], n_grid)
    return min(1.0, _trapezoid(np.minimum(pa(x), pb(x)), x))


def kde_kl(a, b, n_grid=2001, eps=1e-12):
    """``KL(p_a || p_b)`` in nats between the Gaussian KDEs of two samples, on a grid
    (chapter 06_shallow_vs_deep)."""
    pa, pb = gaussian_kde(a), gaussian_kde(b)
    x = _grid([pa, pb], n_grid)
    ya, yb = pa(x) + eps, pb(x) + eps
    ya /= _trapezoid(ya, x)
    yb /= _trapezoid(yb, x)
    return max(0.0, _trapezoid(ya * np.log(ya / yb), x))


def intra_set_distances(values):
    """All ``|v_i - v_j|`` (Euclidean for vectors), ``i < j``, within one set (chapter 06_shallow_vs_deep)."""
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1)
    d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
    return d[np.triu_indices(len(v), k=1)]


def inter_set_distances(a, b):
    """All ``|a_i - b_j|`` (Euclidean for vectors) between two sets (chapter 06_shallow_vs_deep)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).ravel()


def pitch_class_kl(reference, generated, smoothing=1e-3):
    """``KL(reference || generated)`` in nats between two pitch-class histograms (chapter 06_shallow_vs_deep).

    Each argument is a 12-vector or a ``[pieces, 12]`` array (rows are summed, so each piece's
    normalised histogram weighs the same).
    ``smoothing`` is added to every class before normalising, so a class the generated music
    never plays costs a large but finite amount.
    """
    p = np.asarray(reference, dtype=np.float64).reshape(-1, 12).sum(axis=0) + smoothing
    q = np.asarray(generated, dtype=np.float64).reshape(-1, 12).sum(axis=0) + smoothing
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("pitch_class_kl needs histograms with some mass (or smoothing > 0)")
    p /= p.sum()
    q /= q.sum()
    m = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[m] * np.log(p[m] / q[m])))


def compare_sets(generated, reference, encoding=DEFAULT_ENCODING, statistics=SCALAR_STATISTICS):
    """How close a generated set is to reference pieces, statistic by statistic (chapter 06_shallow_vs_deep).

    ``generated`` and ``reference`` are lists of rolls (each set needs at least two). Returns
    ``{statistic: {...}}`` with, for every scalar statistic: ``generated_mean``,
    ``reference_mean``, ``values_overlap`` (overlap area of the statistic's own KDEs),
    ``overlap_area`` and ``kl`` (mgeval: the reference's intra-set distance density against the
    inter-set one) -- plus ``"pitch_class"`` with ``kl`` = :func:`pitch_class_kl` of the pooled
    histograms and the same intra/inter-set overlap on the histograms (Euclidean distances).
    """
    if len(generated) < 2 or len(reference) < 2:
        raise ValueError("compare_sets needs at least two generated and two reference rolls")
    g = set_statistics(generated, encoding)
    r = set_statistics(reference, encoding)
    out = {}
    for name in statistics:
        intra = intra_set_distances(r[name])
        inter = inter_set_distances(r[name], g[name])
        out[name] = {
            "generated_mean": float(g[name].mean()),
            "reference_mean": float(r[name].mean()),
            "values_overlap": overlap_area(g[name], r[name]),
            "overlap_area": overlap_area(intra, inter),
            "kl": kde_kl(intra, inter),
        }
    intra = intra_set_distances(r["pitch_class_histogram"])
    inter = inter_set_distances(r["pitch_class_histogram"], g["pitch_class_histogram"])
    out["pitch_class"] = {
        "kl": pitch_class_kl(r["pitch_class_histogram"], g["pitch_class_histogram"]),
        "overlap_area": overlap_area(intra, inter),
        "generated": g["pitch_class_histogram"].sum(axis=0) / max(1e-12, g["pitch_class_histogram"].sum()),
        "reference": r["pitch_class_histogram"].sum(axis=0) / max(1e-12, r["pitch_class_histogram"].sum()),
    }
    return out
