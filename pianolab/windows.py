"""Training windows: ``(x, y)`` pairs cut out of a split (chapter 04_training).

A window never mixes two pieces: it is cut from one piece with silence (zeros) on both sides -- a
performance also starts from silence at generation time. With receptive field ``RF`` and ``N``
targets, the window whose first target is ``u`` has ``x = seq[u - RF : u + N - 1]`` and
``y = seq[u : u + N]``, and weight 1 on the targets inside the piece: output ``j`` of a 'valid'
causal stack sees ``x[j : j + RF]`` and predicts the key state right after it. ``u`` runs over
``1 - N .. L - 1``, so every key state of a piece of ``L`` is a target of exactly ``N`` windows:
drawn uniformly, the windows train every key state equally often, the first and last ones too,
just as the validation loss counts them.
"""

import numpy as np

from .errors import ConfigError


class Windows:
    """The windows of a split: how many, how one is drawn, how it is cut (chapter 04_training)."""

    def __init__(self, split, receptive_field, n_targets):
        self.receptive_field, self.n_targets = int(receptive_field), int(n_targets)
        if self.receptive_field < 1 or self.n_targets < 1:
            raise ConfigError("n_targets", f"expected a receptive field and a number of targets >= 1, got "
                                           f"{receptive_field} and {n_targets}")
        if not split.pieces:
            raise ConfigError("split", f"the {split.name} split has no pieces to draw windows from")
        self.sequence = split.sequence
        self.starts = np.array([a for _, a, _ in split.pieces], dtype=np.int64)
        self.lengths = np.array([b - a for _, a, b in split.pieces], dtype=np.int64)
        self.cum = np.cumsum(self.lengths + self.n_targets - 1)  # windows per piece: L + N - 1
        self.n_windows = int(self.cum[-1])

    def locate(self, window_ids):
        """Global window numbers -> (piece index, first target position ``u``) arrays."""
        window_ids = np.asarray(window_ids, dtype=np.int64)
        p = np.searchsorted(self.cum, window_ids, side="right")
        before = np.where(p > 0, self.cum[np.maximum(p - 1, 0)], 0)
        return p, 1 - self.n_targets + (window_ids - before)

    def cut(self, pieces, us):
        """Windows (piece ``pieces[i]``, first target ``us[i]``) -> uint8 ``x [B, RF+N-1]``, ``y [B, N]``
        and float32 weights ``w [B, N]`` (1 on the targets inside the piece)."""
        rf, n = self.receptive_field, self.n_targets
        x = np.zeros((len(pieces), rf + n - 1), dtype=np.uint8)
        y = np.zeros((len(pieces), n), dtype=np.uint8)
        w = np.zeros((len(pieces), n), dtype=np.float32)
        for i, (p, u) in enumerate(zip(pieces, us)):
            a, length, u = int(self.starts[p]), int(self.lengths[p]), int(u)
            lo, hi = max(u - rf, 0), min(u + n - 1, length)  # the piece's part of x
            x[i, lo - (u - rf):hi - (u - rf)] = self.sequence[a + lo:a + hi]
            lo, hi = max(u, 0), min(u + n, length)
            y[i, lo - u:hi - u] = self.sequence[a + lo:a + hi]
            w[i, lo - u:hi - u] = 1.0
        return x, y, w

    def sample(self, rng, batch_size):
        """Draw ``batch_size`` windows uniformly from all windows: (pieces, us)."""
        return self.locate(rng.integers(0, self.n_windows, size=int(batch_size)))

    def tiles(self, batch_size=8):
        """Batches that score every key state exactly once: each piece tiled by windows with first
        targets 0, N, 2N, ... (the last one's weight is 0 past the piece's end); float32 ``x [B,
        RF+N-1, 1]``, ``y [B, N, 1]``, ``w [B, N]``."""
        plan = [(p, u) for p, length in enumerate(self.lengths) for u in range(0, int(length), self.n_targets)]
        for i in range(0, len(plan), batch_size):
            x, y, w = self.cut(*zip(*plan[i:i + batch_size]))
            yield x.astype(np.float32)[..., None], y.astype(np.float32)[..., None], w
