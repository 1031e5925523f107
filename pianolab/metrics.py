"""Statistics of music, and how close a generated set is to real pieces (chapters 06_shallow_vs_deep
and 08_training_length); plain numpy on binary rolls ``[time steps, keys]``.

A roll's statistics (also over consecutive windows, to see a performance drift): ``notes_per_second``
(onsets), ``key_down_rate``, ``polyphony`` (keys down per sounding step), ``pitch_range`` and
``pitch_count`` (of the sounding pitches), ``silence_fraction`` (steps with no key down) and the
``pitch_class_histogram`` of the onsets. :func:`compare_sets` follows Yang and Lerch (2018) and their
``mgeval``: per statistic, the Gaussian KDEs (Scott's bandwidth) of the intra-set distances (between
reference pieces) and of the inter-set distances (reference to generated) overlap with area 1 when the
generated pieces are as close to the reference as the reference pieces are to each other (the
densities are integrated on a grid reaching 4 bandwidths past the samples, so a set overlaps itself
exactly); pitch classes are also compared by ``KL(reference || generated)``.
"""

import numpy as np

from ._io import check_roll
from .encoding import DEFAULT_ENCODING

#: The scalar statistics, in display order, and their units (for axis labels).
SCALAR_STATISTICS = ("notes_per_second", "key_down_rate", "polyphony", "pitch_range", "pitch_count",
                     "silence_fraction")
UNITS = {"notes_per_second": "notes/s", "key_down_rate": "fraction of key states",
         "polyphony": "keys down per sounding step", "pitch_range": "semitones", "pitch_count": "pitches",
         "silence_fraction": "fraction of steps"}


def _statistics(roll, onset, encoding):
    """The statistics of ``roll`` (bool ``[T, K]``) whose onsets are ``onset`` (bool ``[T, K]``)."""
    steps, down_per_step = roll.shape[0], roll.sum(axis=1)
    sounding, keys = down_per_step > 0, np.flatnonzero(roll.any(axis=0))
    pc = np.bincount(encoding.pitches % 12, weights=onset.sum(axis=0), minlength=12)
    return {
        "notes_per_second": float(onset.sum() * encoding.steps_per_second / steps) if steps else 0.0,
        "key_down_rate": float(roll.mean()) if roll.size else 0.0,
        "polyphony": float(down_per_step[sounding].mean()) if sounding.any() else 0.0,
        "pitch_range": float(keys[-1] - keys[0]) if keys.size else 0.0,
        "pitch_count": float(keys.size),
        "silence_fraction": float(1.0 - sounding.mean()) if steps else 1.0,
        "pitch_class_histogram": pc / pc.sum() if pc.sum() else pc,
    }


def _roll_and_onsets(roll, encoding):
    roll = check_roll(roll, encoding.n_keys).astype(bool)
    return roll, roll & ~np.pad(roll[:-1], ((1, 0), (0, 0)))


def segments(rolls, seconds, encoding=DEFAULT_ENCODING):
    """Consecutive, non-overlapping segments of ``seconds`` from every roll, a shorter tail dropped: the
    units :func:`compare_sets` compares (chapter 06_shallow_vs_deep)."""
    n = int(round(seconds * encoding.steps_per_second))
    if n < 1:
        raise ValueError(f"a window of {seconds} s is shorter than one time step")
    return [r[i:i + n] for r in rolls for i in range(0, r.shape[0] - n + 1, n)]


def music_statistics(rolls, encoding=DEFAULT_ENCODING):
    """The statistics of each roll of a set: ``{name: array [pieces]}``, the histograms as ``[pieces, 12]``
    (chapter 09_benchmarks)."""
    rows = [_statistics(*_roll_and_onsets(r, encoding), encoding) for r in rolls]
    out = {name: np.array([r[name] for r in rows], dtype=np.float64) for name in SCALAR_STATISTICS}
    out["pitch_class_histogram"] = np.array([r["pitch_class_histogram"] for r in rows]).reshape(-1, 12)
    return out


def _windowed(roll, encoding, window_seconds):
    """``{statistic: array [windows]}`` over the :func:`segments` of ``window_seconds`` of a roll and of
    its onsets (a trailing part shorter than a window is dropped); a note held into a window is no onset there."""
    roll, onset = _roll_and_onsets(roll, encoding)
    windows = zip(segments([roll], window_seconds, encoding), segments([onset], window_seconds, encoding))
    rows = [_statistics(r, o, encoding) for r, o in windows]
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in SCALAR_STATISTICS}


def statistics_over_time(rolls, encoding=DEFAULT_ENCODING, window_seconds=5.0):
    """Windowed statistics of a set: ``{name: array [pieces, windows]}`` (NaN past the end of shorter
    pieces), plus ``time``, the window centres in seconds (chapter 06_shallow_vs_deep)."""
    per = [_windowed(r, encoding, window_seconds) for r in rolls]
    n = max((len(p["polyphony"]) for p in per), default=0)
    pad = lambda v: np.pad(v, (0, n - len(v)), constant_values=np.nan)  # noqa: E731
    return {"time": (np.arange(n) + 0.5) * window_seconds} | {
        name: np.array([pad(p[name]) for p in per]).reshape(len(per), n) for name in SCALAR_STATISTICS}


def reference_band(rolls, encoding=DEFAULT_ENCODING, window_seconds=5.0, percentiles=(10, 50, 90)):
    """The band real music keeps: ``{name: percentiles}`` of every window of every reference roll, to
    draw a performance's windowed statistics against (chapter 06_shallow_vs_deep)."""
    per = [_windowed(r, encoding, window_seconds) for r in rolls]
    values = {name: np.concatenate([p[name] for p in per] + [[]]) for name in SCALAR_STATISTICS}
    if values["polyphony"].size == 0:
        raise ValueError(f"no reference roll is at least {window_seconds} s long")
    return {name: np.percentile(v, percentiles) for name, v in values.items()}


def _kde(samples, bandwidth=None):
    """The Gaussian kernel density estimate ``p(x) = mean_i N(x; samples_i, h^2)`` as a function, with
    Scott's ``h = std * n ** (-1/5)``; samples with no spread get a narrow bump (``1e-3 * max(1, |x|)``)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    sd = x.std(ddof=1) if x.size > 1 else 0.0
    h = bandwidth or (sd * x.size ** (-1 / 5) if sd > 0 else 1e-3 * max(1.0, float(np.abs(x).max())))

    def pdf(t):
        z = (np.asarray(t, dtype=np.float64)[:, None] - x[None, :]) / h
        return np.exp(-0.5 * z * z).sum(axis=1) / (x.size * h * np.sqrt(2 * np.pi))

    pdf.bandwidth, pdf.samples = h, x
    return pdf


def _overlap_area(a, b, bandwidth=None, n_grid=2001):
    """``integral min(p_a, p_b) dx`` of the KDEs of two samples, in [0, 1]: 1 = the same distribution."""
    pa, pb = _kde(a, bandwidth), _kde(b, bandwidth)
    x = np.linspace(min(p.samples.min() - 4 * p.bandwidth for p in (pa, pb)),
                    max(p.samples.max() + 4 * p.bandwidth for p in (pa, pb)), n_grid)
    y = np.minimum(pa(x), pb(x))
    return min(1.0, float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2))  # the trapezoid rule


def _distances(a, b):
    """All Euclidean distances between the rows of ``a`` and those of ``b``, ``[len(a), len(b)]``."""
    a, b = (np.asarray(v, dtype=np.float64).reshape(len(v), -1) for v in (a, b))
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _intra_inter_overlap(reference, generated):
    """Overlap area of the reference's intra-set distances and the inter-set distances (mgeval)."""
    intra = _distances(reference, reference)[np.triu_indices(len(reference), k=1)]
    return _overlap_area(intra, _distances(reference, generated).ravel())


def pitch_class_kl(reference, generated, smoothing=1e-3):
    """``KL(reference || generated)`` in nats of two pitch-class histograms (chapter 09_benchmarks).

    Each is a 12-vector or ``[pieces, 12]`` (rows are summed). ``smoothing`` is added to every class
    before normalising, so a class the generated music never plays costs a large but finite amount.
    """
    p, q = (np.asarray(h, dtype=np.float64).reshape(-1, 12).sum(axis=0) + smoothing
            for h in (reference, generated))
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("pitch_class_kl needs histograms with some mass (or smoothing > 0)")
    p, q = p / p.sum(), q / q.sum()
    with np.errstate(divide="ignore"):
        return float(np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0])))


def compare_sets(generated, reference, encoding=DEFAULT_ENCODING):
    """How close generated rolls are to reference rolls, two or more of each (chapter 06_shallow_vs_deep).

    Returns ``{statistic: {"overlap_area": ...}}`` for every scalar statistic (intra-set against
    inter-set distances, see the module docstring), and ``"pitch_class"`` with the same
    ``overlap_area`` on the histograms and ``kl`` = :func:`pitch_class_kl` of the pooled histograms.
    """
    if len(generated) < 2 or len(reference) < 2:
        raise ValueError("compare_sets needs at least two generated and two reference rolls")
    g, r = music_statistics(generated, encoding), music_statistics(reference, encoding)
    out = {name: {"overlap_area": _intra_inter_overlap(r[name], g[name])} for name in SCALAR_STATISTICS}
    hr, hg = r["pitch_class_histogram"], g["pitch_class_histogram"]
    out["pitch_class"] = {"overlap_area": _intra_inter_overlap(hr, hg), "kl": pitch_class_kl(hr, hg)}
    return out
