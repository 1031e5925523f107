"""Statistics of rolls and set comparisons on rolls small enough to check by hand."""

from math import erf, sqrt

import numpy as np
import pytest

from pianolab import metrics
from pianolab.encoding import PITCH_CLASSES, Encoding

# 4 steps per second, 12 keys from C4 (MIDI 60): key k is pitch class k.
ENC = Encoding(steps_per_second=4, lowest=60, n_keys=12)


def hand_roll():
    """8 steps = 2 s.

    step: 0 1 2 3 4 5 6 7
    C4  : 1 1 0 1 0 0 0 0   two onsets (steps 0 and 3)
    E4  : 1 1 1 1 0 0 0 0   one onset
    G4  : 0 0 0 0 0 1 0 0   one onset
    """
    r = np.zeros((8, 12), np.uint8)
    r[[0, 1, 3], 0] = 1
    r[0:4, 4] = 1
    r[5, 7] = 1
    return r


def stats(roll, enc=ENC):
    """The statistics of one roll, through the set function the chapters call."""
    return {k: v[0] for k, v in metrics.music_statistics([roll], enc).items()}


def test_statistics_by_hand():
    s = stats(hand_roll())
    assert s["notes_per_second"] == pytest.approx(4 / 2.0)  # the re-struck C4 counts twice
    assert s["key_down_rate"] == pytest.approx(8 / 96)  # 3 + 4 + 1 key states down
    # sounding steps 0,1,2,3,5 hold 2,2,1,2,1 keys
    assert s["polyphony"] == pytest.approx(8 / 5)
    assert s["silence_fraction"] == pytest.approx(3 / 8)
    assert s["pitch_range"] == 67 - 60  # C4..G4
    assert s["pitch_count"] == 3
    expected = np.zeros(12)
    expected[[0, 4, 7]] = [2, 1, 1]
    np.testing.assert_allclose(s["pitch_class_histogram"], expected / 4)


def test_pitch_classes_follow_lowest_key():
    enc = Encoding(steps_per_second=4, lowest=21, n_keys=88)  # key 0 is A0
    r = np.zeros((4, 88), np.uint8)
    r[0, 0] = 1  # A0
    r[0, 60 - 21] = 1  # C4
    h = stats(r, enc)["pitch_class_histogram"]
    assert h[PITCH_CLASSES.index("A")] == h[PITCH_CLASSES.index("C")] == pytest.approx(0.5)


def test_silent_roll_and_wrong_shape():
    s = stats(np.zeros((8, 12), np.uint8))
    assert s["notes_per_second"] == 0 and s["polyphony"] == 0 and s["pitch_range"] == 0
    assert s["silence_fraction"] == 1 and not s["pitch_class_histogram"].any()
    with pytest.raises(ValueError, match="12"):
        metrics.music_statistics([np.zeros((8, 13))], ENC)


def test_statistics_over_time_by_hand():
    w = metrics.statistics_over_time([hand_roll(), hand_roll()[:4]], ENC, window_seconds=1.0)
    np.testing.assert_allclose(w["time"], [0.5, 1.5])
    # window 1 (steps 0-3): C4 onsets at 0 and 3, E4 at 0 -> 3 notes in 1 s; window 2: G4
    np.testing.assert_allclose(w["notes_per_second"][0], [3, 1])
    np.testing.assert_allclose(w["polyphony"][0], [7 / 4, 1])
    np.testing.assert_allclose(w["silence_fraction"][0], [0, 3 / 4])
    np.testing.assert_allclose(w["pitch_range"][0], [4, 0])
    # the shorter piece has one window: NaN after it
    np.testing.assert_allclose(w["polyphony"][1], [7 / 4, np.nan])


def test_held_note_is_no_onset_in_next_window():
    r = np.zeros((8, 12), np.uint8)
    r[:, 2] = 1  # one long D4
    w = metrics.statistics_over_time([r], ENC, window_seconds=1.0)
    np.testing.assert_allclose(w["notes_per_second"][0], [1, 0])


def test_reference_band_percentiles_and_short_rolls():
    band = metrics.reference_band([hand_roll()], ENC, window_seconds=1.0, percentiles=(0, 100))
    np.testing.assert_allclose(band["notes_per_second"], [1, 3])
    seconds = len(hand_roll()) / ENC.steps_per_second
    with pytest.raises(ValueError, match="long"):
        metrics.reference_band([hand_roll()], ENC, window_seconds=seconds + 1)
    with pytest.raises(ValueError, match="time step"):
        metrics.reference_band([hand_roll()], ENC, window_seconds=0.1)


def test_kde_integrates_to_one_with_scotts_bandwidth():
    x = np.array([0.0, 1.0, 3.0])
    p = metrics._kde(x)
    assert p.bandwidth == pytest.approx(x.std(ddof=1) * x.size ** -0.2)
    grid = np.linspace(-10, 14, 20001)
    assert np.trapezoid(p(grid), grid) == pytest.approx(1.0, abs=1e-6)
    assert metrics._kde([2.0, 2.0]).bandwidth > 0  # no spread -> a narrow bump, no crash


def test_overlap_area_extremes_and_two_gaussians():
    a = np.random.default_rng(0).normal(size=200)
    assert metrics._overlap_area(a, a) == pytest.approx(1.0, abs=1e-6)
    assert metrics._overlap_area(a, a + 100) < 1e-6
    # two unit-width bumps, centres 2 apart: overlap = 2 * Phi(-1) = 1 + erf(-1 / sqrt(2))
    oa = metrics._overlap_area([0.0], [2.0], bandwidth=1.0, n_grid=20001)
    assert oa == pytest.approx(1 + erf(-1 / sqrt(2)), abs=1e-5)
    # a single sample has no spread: a narrow bump, so two distinct single samples do not overlap
    assert metrics._overlap_area([0.0], [2.0]) < 1e-6


def test_pitch_class_kl_by_hand():
    p = np.zeros(12)
    p[[0, 7]] = [0.5, 0.5]
    assert metrics.pitch_class_kl(p, p) == pytest.approx(0.0, abs=1e-12)
    q = np.zeros(12)
    q[[0, 7]] = [0.25, 0.75]
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert metrics.pitch_class_kl(p, q, smoothing=0.0) == pytest.approx(expected)
    assert metrics.pitch_class_kl(p, q) == pytest.approx(expected, abs=1e-2)  # smoothing is small


def test_compare_sets_prefers_similar_music():
    rng = np.random.default_rng(0)

    def random_rolls(rate, n=6):
        return [(rng.random((40, 12)) < rate).astype(np.uint8) for _ in range(n)]

    reference = random_rolls(0.2)
    similar = random_rolls(0.2)
    different = random_rolls(0.6)
    close = metrics.compare_sets(similar, reference, ENC)
    far = metrics.compare_sets(different, reference, ENC)
    for name in ("key_down_rate", "polyphony"):
        assert close[name]["overlap_area"] > far[name]["overlap_area"]
    assert set(close) == set(metrics.SCALAR_STATISTICS) | {"pitch_class"}
    assert all(0 <= c["overlap_area"] <= 1 for c in close.values())
    # a set that plays only C is far from a set spread over all classes
    only_c = [np.pad(np.ones((40, 1), np.uint8), ((0, 0), (0, 11))) for _ in range(3)]
    assert metrics.compare_sets(only_c, reference, ENC)["pitch_class"]["kl"] > 1.0
    with pytest.raises(ValueError, match="two"):
        metrics.compare_sets(reference[:1], reference, ENC)
