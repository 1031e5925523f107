"""Training windows: ``(x, y)`` pairs cut out of a split (chapter 04_training).

A window never mixes two pieces: it is drawn inside one piece, and the part of it before the
piece's first key state is silence -- exactly how a performance starts at generation time. With
receptive field ``RF`` and ``N`` targets, the window whose first target is ``u`` has
``x = seq[u - RF : u + N - 1]`` and ``y = seq[u : u + N]``: output ``j`` of a 'valid' causal stack
sees ``x[j : j + RF]`` and predicts the key state right after it.
"""

import numpy as np

from .errors import ConfigError


class Windows:
    """The numpy core of :class:`WindowSampler`: which windows exist and how one is cut
    (chapter 04_training).

    For piece ``p`` of ``L`` key states the window at ``u`` (the position of its first target in the
    piece) has ``x = seq[u - RF : u + N - 1]`` and ``y = seq[u : u + N]``, positions before 0 being
    silence; ``u`` runs over ``min(0, L - N) .. L - N``. All windows of the split are equally
    likely to be drawn.
    """

    def __init__(self, split, receptive_field, n_targets):
        receptive_field, n_targets = int(receptive_field), int(n_targets)
        if receptive_field < 1:
            raise ConfigError("receptive_field", f"expected an integer >= 1, got {receptive_field}")
        if n_targets < 1:
            raise ConfigError("n_targets", f"expected an integer >= 1, got {n_targets}")
        if not split.pieces:
            raise ConfigError("split", f"the {split.name} split has no pieces to draw windows from")
        self.split = split
        self.sequence = split.sequence
        self.receptive_field = receptive_field
        self.n_targets = n_targets
        self.starts = np.array([a for _, a, _ in split.pieces], dtype=np.int64)
        self.lengths = np.array([b - a for _, a, b in split.pieces], dtype=np.int64)
        self.first_u = np.minimum(0, self.lengths - n_targets)  # first target position
        counts = self.lengths - n_targets - self.first_u + 1  # >= 1 per piece
        self.cum = np.cumsum(counts)
        self.n_windows = int(self.cum[-1])

    def locate(self, window_ids):
        """Global window numbers -> (piece index, first target position ``u``) arrays."""
        window_ids = np.asarray(window_ids, dtype=np.int64)
        p = np.searchsorted(self.cum, window_ids, side="right")
        before = np.where(p > 0, self.cum[np.maximum(p - 1, 0)], 0)
        return p, self.first_u[p] + (window_ids - before)

    def cut(self, pieces, us, out_x=None, out_y=None):
        """Windows (piece ``pieces[i]``, first target ``us[i]``) -> uint8 ``x [B, RF+N-1]``, ``y [B, N]``."""
        rf, n = self.receptive_field, self.n_targets
        b = len(pieces)
        x = np.zeros((b, rf + n - 1), dtype=np.uint8) if out_x is None else out_x
        y = np.zeros((b, n), dtype=np.uint8) if out_y is None else out_y
        seq = self.sequence
        for i, (p, u) in enumerate(zip(pieces, us)):
            a = int(self.starts[p])
            u = int(u)
            lo = u - rf  # piece position of x[0]
            skip = max(0, -lo)
            if skip:
                x[i, :skip] = 0
            x[i, skip:] = seq[a + lo + skip:a + u + n - 1]
            yskip = max(0, -u)
            if yskip:
                y[i, :yskip] = 0
            y[i, yskip:] = seq[a + u + yskip:a + u + n]
        return x, y

    def sample(self, rng, batch_size):
        """Draw ``batch_size`` windows uniformly from all windows: (pieces, us)."""
        ids = rng.integers(0, self.n_windows, size=int(batch_size))
        return self.locate(ids)


def evaluation_windows(split, receptive_field, n_targets, batch_size=8):
    """Windows that score every key state of a split exactly once (chapter 04_training).

    Yields ``(x float32 [B, RF+N-1, 1], y float32 [B, N, 1], weight float32 [B, N])`` in a fixed
    order: each piece is tiled by consecutive windows (first target positions 0, N, 2N, ...); the
    last window of a piece is moved back to end on its last key state, and the targets it shares
    with the window before get weight 0. ``sum(weight * loss) / sum(weight)`` is the loss per key
    state of the whole split.
    """
    w = Windows(split, receptive_field, n_targets)
    n = w.n_targets
    plan = []
    for p, length in enumerate(w.lengths):
        length = int(length)
        if length <= n:
            plan.append((p, length - n, max(0, n - length), n))
            continue
        u = 0
        while u + n <= length:
            plan.append((p, u, 0, n))
            u += n
        if u < length:
            plan.append((p, length - n, n - (length - u), n))
    for i in range(0, len(plan), batch_size):
        chunk = plan[i:i + batch_size]
        x, y = w.cut([c[0] for c in chunk], [c[1] for c in chunk])
        weight = np.zeros((len(chunk), n), dtype=np.float32)
        for j, (_, _, a, b) in enumerate(chunk):
            weight[j, a:b] = 1.0
        yield x.astype(np.float32)[..., None], y.astype(np.float32)[..., None], weight
