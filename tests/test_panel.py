"""pianolab.panel: the live generation panel of chapter 05_fast_wavenet."""

import numpy as np
import pytest

from pianolab import panel
from pianolab.encoding import DEFAULT_ENCODING
from pianolab.model import build_model, logit


def test_generation_panel_generates_with_the_controls(monkeypatch):
    pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    model = build_model("tiny", output_bias=logit(0.1), seed=0)
    calls, real = [], panel.generate
    monkeypatch.setattr(panel, "generate", lambda *args, **kw: calls.append(kw) or real(*args, **kw))
    p = panel.generation_panel(model, seconds=3.0)
    c = p.controls
    c["temperature"].value, c["edge_aversion"].value, c["random_seed"].value = 1.2, False, 7
    roll = p.generate_now()
    (kw,) = calls
    assert kw["temperature"] == pytest.approx(1.2) and kw["edge_aversion"] is False
    assert kw["random_seed"] == 7 and kw["seconds"] == 3.0 and kw["streams"] == 1
    assert roll.shape == (round(3.0 * DEFAULT_ENCODING.steps_per_second), DEFAULT_ENCODING.n_keys)
    same = real(model, 3.0, temperature=1.2, edge_aversion=False, random_seed=7, progress=False)[0]
    assert np.array_equal(roll, same)  # the panel's music is generate()'s with the same settings
    c["button"].click()  # the button runs the same path, reusing the sampler
    assert len(calls) == 2 and calls[1]["sampler"] is kw["sampler"]
