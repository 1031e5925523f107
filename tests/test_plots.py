"""pianolab.plots: labelled axes with units, the right data in the right place."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pianolab import plots  # noqa: E402
from pianolab.encoding import DEFAULT_ENCODING, Encoding  # noqa: E402
from pianolab.encoding import EDGE_THRESHOLDS  # noqa: E402
from pianolab.runs import History  # noqa: E402

FS = DEFAULT_ENCODING.steps_per_second


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _roll(steps=96):
    roll = np.zeros((steps, DEFAULT_ENCODING.n_keys), dtype=np.uint8)
    roll[0:24, 29] = 1  # C4 for half a second
    roll[24:48, 41] = 1  # C5
    return roll


def test_plot_roll_time_in_seconds_and_note_names():
    ax = plots.plot_roll(_roll(), title="two notes")
    assert ax.get_xlabel() == "time (s)"
    assert "note name" in ax.get_ylabel()
    assert ax.get_title() == "two notes"
    (image,) = ax.get_images()
    x0, x1, y0, y1 = image.get_extent()
    assert (x0, x1) == (0.0, len(_roll()) / FS)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "C4" in labels and "C5" in labels
    # image rows are pitches: the C4 row is on during the first half second only
    data = np.asarray(image.get_array())
    c4_row = 60 - int(round(y0 + 0.5))
    assert data[c4_row, :24].all() and not data[c4_row, 24:].any()


def test_plot_roll_windows_and_all_keys():
    ax = plots.plot_roll(_roll(), seconds=(0.25, 1.0), keys="all")
    x0, x1, y0, y1 = ax.get_images()[0].get_extent()
    assert (x0, x1) == (0.25, 1.0)
    assert (y0, y1) == (DEFAULT_ENCODING.lowest - 0.5, DEFAULT_ENCODING.highest + 0.5)
    ax = plots.plot_roll(_roll(), seconds=0.5)
    assert ax.get_images()[0].get_extent()[1] == 0.5
    with pytest.raises(ValueError, match=str(DEFAULT_ENCODING.n_keys)):
        plots.plot_roll(np.zeros((10, 60)))
    with pytest.raises(ValueError, match="keys must be"):
        plots.plot_roll(_roll(), keys="some")
    small = Encoding(steps_per_second=10, lowest=60, n_keys=5)
    ax = plots.plot_roll(np.ones((20, 5), dtype=np.uint8), small)
    assert ax.get_images()[0].get_extent()[1] == 20 / small.steps_per_second
    ax = plots.plot_roll(_roll(), start=-0.5)  # a seed before time 0
    assert tuple(ax.get_images()[0].get_extent()[:2]) == (-0.5, len(_roll()) / FS - 0.5)


def test_plot_flattening_draws_the_sequence_in_reshape_order():
    rng = np.random.default_rng(0)
    part = (rng.random((3, 12)) < 0.3).astype(np.uint8)
    ax_roll, ax_seq = plots.plot_flattening(part, lowest=60)
    assert "time (s)" in ax_roll.get_xlabel() and "note name" in ax_roll.get_ylabel()
    assert "position" in ax_seq.get_xlabel()
    black = [int(p.get_x()) for p in ax_seq.patches if p.get_facecolor()[:3] == (0.0, 0.0, 0.0)]
    assert sorted(black) == list(np.flatnonzero(part.reshape(-1)))
    assert [t.get_text() for t in ax_roll.get_yticklabels()][0] == "C4"
    with pytest.raises(ValueError, match="empty"):
        plots.plot_flattening(np.zeros((0, 12)))


def test_plot_loss_from_a_history_and_a_run_directory(tmp_path):
    hist = {"step": [0, 10, 20, 30], "train_loss": [0.7, 0.3, 0.2, 0.15],
            "val_loss": [0.69, None, 0.25, 0.21]}
    rows = [dict(zip(hist, values)) for values in zip(*hist.values())]
    ax = plots.plot_loss(History(rows))
    assert ax.get_xlabel() == "training step"
    assert ax.get_ylabel() == "loss (nats per key state)"
    train, val = ax.get_lines()
    assert list(train.get_xdata()) == hist["step"]
    assert list(val.get_xdata()) == [s for s, v in zip(hist["step"], hist["val_loss"]) if v is not None]
    ax = plots.plot_loss(History([{"step": r["step"], "train_loss": r["train_loss"]} for r in rows]), label="run A")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run A: training"]
    History(rows).to_csv(tmp_path / "history.csv")  # what a run writes
    ax = plots.plot_loss(History.read(tmp_path))
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [v for v in hist["val_loss"] if v is not None])
    with pytest.raises(ValueError, match="no loss values.*without history.csv"):
        plots.plot_loss(History.read(tmp_path / "missing"))


def test_plot_key_histogram_fractions_and_labels():
    roll = _roll()
    ax = plots.plot_key_histogram({"piece": roll, "twice": [roll, roll]})
    assert "note name" in ax.get_xlabel() and "fraction" in ax.get_ylabel()
    first, second = ax.get_lines()
    np.testing.assert_allclose(first.get_ydata(), roll.mean(axis=0))
    np.testing.assert_allclose(second.get_ydata(), roll.mean(axis=0))
    assert "C4" in [t.get_text() for t in ax.get_xticklabels()]
    ax = plots.plot_key_histogram(roll, normalize=True)
    assert ax.get_lines()[0].get_ydata().sum() == pytest.approx(1.0)
    # the shaded edge zones are as wide as edge aversion's thresholds reach
    assert ax.patches[0].get_width() == len(EDGE_THRESHOLDS)
    with pytest.raises(ValueError, match="histogram"):
        plots.plot_key_histogram(np.zeros(5))
