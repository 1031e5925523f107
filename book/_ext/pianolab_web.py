"""Weights for the in-page generator, written at book build time, never committed.

For each shipped model offered in the page (:data:`MODELS`), :func:`export` writes ``NAME.bin``,
every weight as little-endian float32, and ``NAME.json``, what the page needs to run pianolab's
Fast-WaveNet sampler on them (``book/_static/web/sampler.js``): per dilated layer the kernel
shape ``[2, c_in, c_out]`` (Keras' layout: tap 0 multiplies the older input ``x[t - d]``), the
dilation, the activation and the byte offsets of kernel and bias in the ``.bin``; the 1x1 output
layer; the encoding; the receptive field; and the edge-aversion thresholds exactly as
``pianolab.generate`` uses them (float32, cut to half the key window). The weights are read with
``pianolab.generate.read_layers``, the reader of ``FastSampler``, so the page and pianolab run the
same numbers. ``pianolab_book.py`` calls :func:`export_all` into the built site's
``_static/web/weights``; the browser tests call it into a folder of their own.
"""

import json
from pathlib import Path

import numpy as np

#: The shipped models (``data/models/NAME``) the page offers, in the order of its menu.
MODELS = ("deep", "shallow", "pianonet_micro_1", "pianonet_r5p3")


def describe(name, model, encoding):
    """``(description dict, float32 weights)`` of a pianolab model, in the page's layout."""
    from pianolab.encoding import EDGE_THRESHOLDS
    from pianolab.generate import read_layers

    layers, w_out, b_out = read_layers(model)
    parts, offset, desc_layers = [], 0, []

    def put(array):
        nonlocal offset
        parts.append(np.ascontiguousarray(array, "<f4").reshape(-1))
        offset += 4 * parts[-1].size
        return offset - 4 * parts[-1].size

    for lay in layers:
        desc_layers.append({"kernel_shape": list(lay.kernel.shape), "dilation": int(lay.dilation),
                            "activation": lay.activation, "kernel_offset": put(lay.kernel),
                            "bias_offset": put(lay.bias)})
    output = {"size": int(w_out.size), "weights_offset": put(w_out), "bias_offset": put([b_out]),
              "activation": "sigmoid"}
    thresholds = np.float32(EDGE_THRESHOLDS[: (encoding.n_keys + 1) // 2])  # as pianolab.generate cuts them
    desc = {"name": name, "format": "pianolab-web-1", "bin": f"{name}.bin", "bytes": offset,
            "encoding": encoding.to_dict(), "receptive_field": 1 + sum(lay.dilation for lay in layers),
            "layers": desc_layers, "output": output,
            "edge_thresholds": [float(t) for t in thresholds],  # float32 values, as the kernel compares them
            "edge_thresholds_source": "pianolab.encoding.EDGE_THRESHOLDS " + repr(EDGE_THRESHOLDS),
            "parameters": int(sum(p.size for p in parts))}
    return desc, np.concatenate(parts)


def export(name, out_dir):
    """Write ``out_dir/NAME.bin`` and ``out_dir/NAME.json`` for shipped model ``name``; returns the
    description (what ``NAME.json`` holds)."""
    from pianolab.runs import encoding_of, load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    desc, weights = describe(name, load_model(name), encoding_of(name))
    for path, data in ((out_dir / desc["bin"], weights.tobytes()),
                       (out_dir / f"{name}.json", json.dumps(desc, indent=1).encode())):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return desc


def export_all(out_dir, models=MODELS):
    """:func:`export` for each of ``models``, plus ``index.json`` (the menu: name, parameters,
    receptive field, encoding); returns the index."""
    index = [{k: d[k] for k in ("name", "parameters", "receptive_field", "encoding")}
             for d in (export(name, out_dir) for name in models)]
    (Path(out_dir) / "index.json").write_text(json.dumps(index, indent=1))
    return index
