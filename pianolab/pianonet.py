"""PianoNet's released models, read into pianolab (chapter 07_pianonet_models).

PianoNet (T. Angsten, 2020; MIT license) saved its trained nets as TensorFlow 2.2 / Keras 2.3
SavedModels, which Keras 3 cannot load. This module reads them with TensorFlow's own tools: the layer
list from the Keras metadata (in ``saved_model.pb``'s object graph for TF 2.2, ``keras_metadata.pb``
from TF 2.5), the weights from the checkpoint in ``variables/`` (``layer_with_weights-k``; Adam's
moments are not read). pianolab represents one chain of ``Conv1D`` layers of kernel size 2, stride 1,
'valid' padding, dilation ``2**i`` (``i`` from 0 in every block), non-decreasing filter counts and one
activation each (PianoNet puts its ELU in a separate ``Activation`` layer), then a 1x1 ``Conv1D`` with
one filter and a sigmoid; anything else is refused with an error naming the layer.
"""

import json
from pathlib import Path

import numpy as np

from . import _io
from .encoding import DEFAULT_ENCODING
from .errors import ConfigError
from .model import HIDDEN_ACTIVATIONS, build_model


def _refuse(src, layer, why):
    where = f"layer {layer['name']!r} ({layer['type']})" if layer else "the model"
    return ConfigError("SRC", f"{src}: {where} {why}; pianolab represents a chain of dilated Conv1D "
                              "layers (kernel 2) with one activation each, then a 1x1 Conv1D + sigmoid")


def read_saved_model(src):
    """The layers of a PianoNet SavedModel folder, in order, each a dict: ``name``, ``type`` (the
    Keras class), ``inbound`` (names of the layers feeding it), ``config`` (Keras' layer config) and,
    for layers with weights, ``weights`` (``[kernel, bias]`` as float32 arrays)
    (appendix_b_foreign_files)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    src = Path(src)
    if not (src / "saved_model.pb").is_file() or not (src / "variables").is_dir():
        raise ConfigError("SRC", f"{src} is not a SavedModel folder (saved_model.pb and variables/)")
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((src / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].object_graph_def
    meta = {i: node.user_object.metadata for i, node in enumerate(graph.nodes)}
    if (src / "keras_metadata.pb").is_file():
        from tensorflow.python.keras.protobuf import saved_metadata_pb2
        keras_meta = saved_metadata_pb2.SavedMetadata()
        keras_meta.ParseFromString((src / "keras_metadata.pb").read_bytes())
        meta = {node.node_id: node.metadata for node in keras_meta.nodes}
    if not meta.get(0):
        raise ConfigError("SRC", f"{src}: the SavedModel holds no Keras metadata (not saved by Keras)")
    root = json.loads(meta[0])
    if "layers" not in root.get("config", {}):
        raise ConfigError("SRC", f"{src}: a {root.get('class_name')} model; expected a functional Keras "
                                 "model with a layer list")
    slots = {json.loads(meta[c.node_id])["name"]: c.local_name for c in graph.nodes[0].children
             if c.local_name.startswith("layer_with_weights-")}
    ckpt = tf.train.load_checkpoint(str(src / "variables" / "variables"))
    layers = []
    for entry in root["config"]["layers"]:
        layer = {"name": entry["name"], "type": entry["class_name"], "config": entry["config"],
                 "inbound": [n[0] for node in entry["inbound_nodes"] for n in node]}
        if layer["name"] in slots:
            keys = [f"{slots[layer['name']]}/{w}/.ATTRIBUTES/VARIABLE_VALUE" for w in ("kernel", "bias")]
            if not all(ckpt.has_tensor(k) for k in keys):
                raise _refuse(src, layer, "has weights other than a kernel and a bias")
            layer["weights"] = [np.asarray(ckpt.get_tensor(k), np.float32) for k in keys]
        layers.append(layer)
    return layers


def as_filter_increments(layers, src="model"):
    """``(filter_increments, activation, convs)`` of a layer list from :func:`read_saved_model`: pianolab's
    description of the net, its hidden activation and the Conv1D layers in order; anything pianolab
    cannot represent raises :class:`~pianolab.errors.ConfigError` naming the layer
    (appendix_b_foreign_files)."""
    if not layers or layers[0]["type"] != "InputLayer":
        raise _refuse(src, layers[0] if layers else None, "comes first; expected an InputLayer")
    shape = _items(layers[0]["config"].get("batch_input_shape") or ())
    if not shape or shape[-1] != 1:
        raise _refuse(src, layers[0], f"takes inputs of shape {shape}; expected (batch, length, 1)")
    convs = []  # [layer, activation]
    for prev, layer in zip(layers, layers[1:]):
        c = layer["config"]
        if layer["inbound"] != [prev["name"]]:
            raise _refuse(src, layer, f"takes {layer['inbound']}, not the one layer before it")
        if layer["type"] == "Activation" and convs and convs[-1][1] == "linear" and convs[-1][0] is prev:
            convs[-1][1] = c["activation"]
            continue
        if layer["type"] != "Conv1D":
            follows = " after an activation" if layer["type"] == "Activation" else ""
            raise _refuse(src, layer, f"is not a Conv1D{follows}")
        if "weights" not in layer:
            raise _refuse(src, layer, "has no weights in variables/")
        found = {"strides": _items(c["strides"]), "padding": c["padding"], "use_bias": c["use_bias"],
                 "data_format": c.get("data_format", "channels_last"), "groups": c.get("groups", 1)}
        wanted = {"strides": (1,), "padding": "valid", "use_bias": True, "data_format": "channels_last", "groups": 1}
        wrong = [f"{k} {v!r} (expected {wanted[k]!r})" for k, v in found.items() if v != wanted[k]]
        if wrong:
            raise _refuse(src, layer, "has " + ", ".join(wrong))
        convs.append([layer, c["activation"]])
    if len(convs) < 2:
        raise _refuse(src, None, f"has {len(convs)} Conv1D layer(s)")
    increments, filters, prev_d = [], 0, None
    for layer, act in convs[:-1]:
        c = layer["config"]
        k, d = _items(c["kernel_size"])[0], _items(c["dilation_rate"])[0]
        if k != 2:
            raise _refuse(src, layer, f"has kernel size {k} (expected 2)")
        if not (d == 1 or (prev_d is not None and d == 2 * prev_d)):
            raise _refuse(src, layer, f"has dilation {d} (expected 1 or {2 * (prev_d or 0) or 1}: 2**i, "
                                      "i from 0 in every block)")
        if act not in HIDDEN_ACTIVATIONS or act != convs[0][1]:
            raise _refuse(src, layer, f"has activation {act!r} (expected one of {HIDDEN_ACTIVATIONS}, "
                                      f"the same in every layer: {convs[0][1]!r} in the first)")
        if c["filters"] < max(filters, 1):
            raise _refuse(src, layer, f"has {c['filters']} filters, fewer than the {filters} before it")
        if d == 1:
            increments.append([])
        increments[-1].append(c["filters"] - filters)
        filters, prev_d = c["filters"], d
    out, act = convs[-1]
    if _items(out["config"]["kernel_size"]) != (1,) or out["config"]["filters"] != 1 or act != "sigmoid":
        raise _refuse(src, out, "is last; expected a 1x1 Conv1D with one filter and a sigmoid")
    return increments, convs[0][1], [layer for layer, _ in convs]


def _items(v):
    """A Keras 2 tuple (``{"class_name": "__tuple__", "items": [...]}``) or a list, as a tuple."""
    return tuple(v["items"] if isinstance(v, dict) else v)


def to_model(src, name=None):
    """PianoNet's SavedModel ``src`` rebuilt as a pianolab model (the layout of
    :func:`pianolab.model.build_model`) with PianoNet's weights (appendix_b_foreign_files)."""
    return _build(src, as_filter_increments(read_saved_model(src), src), name)


def _build(src, planned, name):
    increments, activation, convs = planned
    model = build_model(increments, activation=activation, name=name or "pianonet")
    ours = [layer for layer in model.layers if layer.weights]
    for mine, theirs in zip(ours, convs):
        shapes = [tuple(w.shape) for w in mine.weights]
        if [w.shape for w in theirs["weights"]] != shapes:
            raise _refuse(src, theirs, f"has weights of shapes {[w.shape for w in theirs['weights']]}, "
                                       f"expected {shapes} (the layers must form one chain)")
        mine.set_weights(theirs["weights"])
    return model


def convert(src, out, encoding=DEFAULT_ENCODING):
    """Write PianoNet's SavedModel ``src`` as a pianolab model folder ``out``: ``model.keras`` (the
    weights, no optimizer state) and ``config.json`` in RunConfig format, naming only what is known:
    ``data.encoding`` and ``model.filter_increments`` / ``model.activation``. Returns the model
    (appendix_b_foreign_files)."""
    out = Path(out)
    increments, activation, _ = planned = as_filter_increments(read_saved_model(src), src)
    model = _build(src, planned, f"pianonet_{Path(src).name}"[:60])
    config = {"data": {"encoding": encoding.to_dict()},
              "model": {"preset": None, "filter_increments": increments, "activation": activation}}
    _io.save_model(model, out / "model.keras")
    _io.write_bytes(out / "config.json", json.dumps(config, indent=2) + "\n")
    return model
