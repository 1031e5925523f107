"""A live panel to play with the controls of generation (chapter 05_fast_wavenet).

Its own module because it sits on top of three stages (``generate``, ``audio``, ``plots``) and no
stage may import it; only chapter 05 does.
"""

import numpy as np

from . import audio, plots
from .encoding import DEFAULT_ENCODING
from .generate import FastSampler, generate


def generation_panel(model, *, seconds=10.0, seed=None, encoding=DEFAULT_ENCODING, sampler=None):
    """An ipywidgets panel that generates with ``model`` and plays the result (chapter 05_fast_wavenet).

    Controls: temperature, edge aversion on/off, length in seconds, random seed, and a Generate
    button that calls :func:`pianolab.generate.generate` with ``seed`` and shows the piano roll and
    a player. Pass the model's :class:`~pianolab.generate.FastSampler` as ``sampler`` to reuse it.
    The static book shows the controls but cannot run them. The panel's ``generate_now()`` runs one
    generation with the current settings and returns the roll; ``controls`` holds the widgets.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    controls = {
        "temperature": widgets.FloatSlider(value=1.0, min=0.2, max=2.0, step=0.05, description="temperature",
                                           continuous_update=False),
        "edge_aversion": widgets.Checkbox(value=True, description="edge aversion"),
        "seconds": widgets.FloatSlider(value=float(seconds), min=1.0, max=max(60.0, float(seconds)), step=1.0,
                                       description="length (s)", continuous_update=False),
        "random_seed": widgets.IntText(value=0, description="random seed"),
        "button": widgets.Button(description="Generate", button_style="primary", icon="music"),
    }
    status, out, cache = widgets.Label(value=""), widgets.Output(), {"sampler": sampler}

    def generate_now():
        c = {k: w.value for k, w in controls.items() if k != "button"}
        status.value = "generating..."
        cache["sampler"] = cache["sampler"] or FastSampler(model, n_keys=encoding.n_keys)
        roll = np.asarray(generate(model, seconds=float(c["seconds"]), seed=seed, streams=1,
                                   temperature=float(c["temperature"]), edge_aversion=bool(c["edge_aversion"]),
                                   random_seed=int(c["random_seed"]), progress=False, encoding=encoding,
                                   sampler=cache["sampler"])[0])
        out.clear_output(wait=True)
        with out:
            fig, ax = plt.subplots(figsize=(9, 3))
            plots.plot_roll(roll, encoding, ax=ax, title=f"temperature {c['temperature']:.2f}, edge aversion "
                            f"{'on' if c['edge_aversion'] else 'off'}, random seed {c['random_seed']}")
            plt.show()
            display(audio.player(roll, encoding, max_seconds=None))
        status.value = f"{roll.shape[0] / encoding.steps_per_second:.1f} s generated"
        return roll

    def on_click(_):
        try:
            generate_now()
        except Exception as exc:  # show the error in the panel instead of losing it in a log
            status.value = f"error: {exc}"
            raise

    controls["button"].on_click(on_click)
    c = controls
    panel = widgets.VBox([widgets.HBox([c["temperature"], c["edge_aversion"]]),
                          widgets.HBox([c["seconds"], c["random_seed"]]), widgets.HBox([c["button"], status]), out])
    panel.generate_now, panel.controls = generate_now, controls
    return panel
