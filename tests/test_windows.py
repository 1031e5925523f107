"""pianolab.windows: training windows cut from one piece with silence around it, aligned with the
model's outputs, every key state a target equally often; evaluation windows that score every key
state once (chapter 04_training)."""

import numpy as np
import pytest

from pianolab.data import Split
from pianolab.encoding import Encoding
from pianolab.errors import ConfigError
from pianolab.windows import Windows

M = 50  # values per piece in synthetic splits


def synthetic_split(lengths, name="train"):
    """A split whose piece p holds values 1 + M*p + (i % M): every value names its piece and
    position (mod M), and 0 only ever comes from the silence around a piece (<= 5 pieces)."""
    assert len(lengths) * M < 256
    seqs, pieces, pos = [], [], 0
    for p, n in enumerate(lengths):
        seqs.append((1 + M * p + (np.arange(n) % M)).astype(np.uint8))
        pieces.append((f"p{p}", pos, pos + n))
        pos += n
    sequence = np.concatenate(seqs) if seqs else np.zeros(0, np.uint8)
    return Split(name, sequence, pieces, Encoding(48, 60, 4))


def expected_window(split, p, u, rf, n):
    """x, y, w of the window of piece p whose first target is u, from the piece padded with silence."""
    _, a, b = split.pieces[p]
    length = b - a
    padded = np.concatenate([np.zeros(rf + n, np.uint8), split.sequence[a:b], np.zeros(n, np.uint8)])
    s = rf + n + u  # padded index of the first target
    w = np.array([0 <= u + j < length for j in range(n)], np.float32)
    return padded[s - rf:s + n - 1], padded[s:s + n], w


@pytest.mark.parametrize("rf,n", [(5, 3), (1, 1), (12, 7), (40, 4)])
def test_every_window_is_aligned_and_inside_one_piece(rf, n):
    lengths = [30, 7, 2, 55]  # pieces shorter and longer than the window
    split = synthetic_split(lengths)
    w = Windows(split, rf, n)
    assert w.n_windows == sum(length + n - 1 for length in lengths)
    pieces, us = w.locate(np.arange(w.n_windows))
    x, y, wt = w.cut(pieces, us)
    assert x.shape == (w.n_windows, rf + n - 1) and y.shape == wt.shape == (w.n_windows, n)
    assert x.dtype == y.dtype == np.uint8 and wt.dtype == np.float32
    targets = {}  # (piece, position) -> how many windows score it
    for i, (p, u) in enumerate(zip(pieces, us)):
        want_x, want_y, want_w = expected_window(split, p, u, rf, n)
        np.testing.assert_array_equal(x[i], want_x)
        np.testing.assert_array_equal(y[i], want_y)
        np.testing.assert_array_equal(wt[i], want_w)
        # only this piece's values (or silence) appear, and only targets inside the piece weigh
        lo, hi = 1 + M * p, M * (p + 1)
        vals = np.concatenate([x[i], y[i]])
        assert np.all((vals == 0) | ((vals >= lo) & (vals <= hi)))
        assert np.all(y[i][wt[i] == 1] > 0) and np.all(y[i][wt[i] == 0] == 0)
        # output j sees x[j : j + rf] and predicts the key state right after: y[j] follows x[j + rf - 1]
        np.testing.assert_array_equal(y[i], np.concatenate([x[i], y[i][-1:]])[rf:rf + n])
        for j in range(n):
            last_seen, target = int(x[i][j + rf - 1]), int(y[i][j])
            if last_seen and target:
                assert target == lo + ((last_seen - lo + 1) % M)
            if wt[i][j]:
                targets[(int(p), int(u) + j)] = targets.get((int(p), int(u) + j), 0) + 1
    # every key state of every piece, first and last included, is a weighted target of exactly n windows
    assert targets == {(p, t): n for p, length in enumerate(lengths) for t in range(length)}
    first = [i for i, (p, u) in enumerate(zip(pieces, us)) if p == 0 and u == 0][0]
    assert np.all(x[first][:rf] == 0) and y[first][0] == 1  # silence, then the piece's first state


def test_sampling_is_seeded_and_uniform_over_all_windows():
    lengths = [300, 20, 1000]
    w = Windows(synthetic_split(lengths), 16, 8)
    a = w.sample(np.random.default_rng(7), 50)
    b = w.sample(np.random.default_rng(7), 50)
    c = w.sample(np.random.default_rng(8), 50)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    # each piece is drawn in proportion to the windows it has
    pieces, _ = w.sample(np.random.default_rng(0), 20000)
    counts = np.array([length + 8 - 1 for length in lengths])
    np.testing.assert_allclose(np.bincount(pieces, minlength=3) / 20000, counts / counts.sum(), atol=0.02)


def test_windows_refuse_bad_arguments():
    split = synthetic_split([10])
    for rf, n in ((0, 3), (3, 0)):
        with pytest.raises(ConfigError) as err:
            Windows(split, rf, n)
        assert err.value.key == "n_targets" and ">= 1" in str(err.value)
    with pytest.raises(ConfigError, match="no pieces"):
        Windows(synthetic_split([]), 3, 3)


@pytest.mark.parametrize("rf,n,batch", [(5, 8, 3), (1, 1, 4), (9, 40, 2)])
def test_tiles_score_every_state_once(rf, n, batch):
    split = synthetic_split([30, 7, 2, 55, 16])
    covered, total = [], 0.0
    for x, y, wgt in Windows(split, rf, n).tiles(batch):
        assert x.shape[1:] == (rf + n - 1, 1) and y.shape[1:] == (n, 1) and wgt.shape == y.shape[:2]
        assert x.dtype == y.dtype == wgt.dtype == np.float32 and len(x) <= batch
        for xi, yi, wi in zip(x[..., 0], y[..., 0], wgt):
            np.testing.assert_array_equal(yi, np.concatenate([xi, yi[-1:]])[rf:rf + n])
            covered += [int(v) for v, keep in zip(yi, wi) if keep]
            assert all(v != 0 for v, keep in zip(yi, wi) if keep)  # no padding is scored
        total += wgt.sum()
    assert total == split.sequence.shape[0]
    assert sorted(covered) == sorted(int(v) for v in split.sequence)
