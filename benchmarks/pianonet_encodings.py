"""Which encoding do PianoNet's released models expect? Their held-out loss under candidate encodings.

Each converted model (data/models/pianonet_*) is scored on the held-out pieces of the default
corpus (the validation split of the default dataset: the same pieces, re-encoded) under every
candidate encoding, every key state once (``pianolab.train.evaluate`` with ``n_windows=None``,
each piece starting from silence). The shipped ``deep`` and ``shallow`` models are scored the same
way under the default encoding.

* **The number of keys** is the period of the flat sequence: under a wrong one every key state
  lands in the wrong column of the model's period, and the loss is many times worse.
* **The lowest key** cannot be found this way. Moving the key window up by one semitone shifts
  the whole flat sequence by one position, and a stack of convolutions computes the same
  predictions for a shifted input, shifted: the loss changes only where notes fold at the edges
  of the window (a few parts in a million here). It comes from PianoNet's own code and data
  descriptions; a wrong one transposes the model's music.

Writes ``encoding.json`` (every candidate's loss and the two conclusions) and ``summary.json`` into
each model's folder. Scores are cached in data/cache/pianonet_encodings.json (delete it to re-score).
Usage, from the repository root (about 20 minutes on 2 CPU cores):

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/pianonet_encodings.py
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pianolab import _io, data, settings  # noqa: E402
from pianolab.encoding import DEFAULT_ENCODING, Encoding  # noqa: E402
from pianolab.model import model_receptive_field  # noqa: E402
from pianolab.config import RunConfig  # noqa: E402
from pianolab.runs import encoding_of, evaluate, load_model  # noqa: E402

#: (n_keys, lowest) candidates; the first is the encoding the model's folder names.
CANDIDATES = {
    "pianonet_micro_1": [(72, 31), (72, 30), (72, 32), (64, 34)],
    "pianonet_r5p3": [(64, 34), (64, 33), (64, 35), (72, 31)],
}
SOURCE = {"pianonet_micro_1": "micro_1", "pianonet_r5p3": "r5p3_300kparams_4_blocks_12_12_12_12_model"}
N_TARGETS, BATCH = 65536, 2
SHIFT_TOLERANCE = 1e-4  # relative loss spread that still counts as a tie between shifted windows
CACHE = settings.data_dir() / "cache" / "pianonet_encodings.json"


def heldout(encoding):
    """The validation split of the default dataset's pieces, encoded with ``encoding``."""
    path = data.build_dataset(None, encoding=encoding, n_clones=0, progress=False)
    return data.load_dataset(path).val


def score(cache, key, model, split):
    """evaluate() over every key state of ``split``, cached under ``key``."""
    if key not in cache:
        t = time.perf_counter()
        res = evaluate(model, split, n_targets=N_TARGETS, batch_size=BATCH)
        cache[key] = {"loss_per_state": res["loss_per_state"], "nats_per_step": res["nats_per_step"],
                      "key_states": res["key_states"], "seconds": round(time.perf_counter() - t, 1)}
        _io.write_bytes(CACHE, json.dumps(cache, indent=1) + "\n")
    print(key, cache[key], flush=True)
    return cache[key]


def conclude(rows, claimed):
    """The number of keys the loss picks (and by how much), and the spread over shifted windows."""
    per_keys = {}
    for r in rows:
        per_keys.setdefault(r["n_keys"], []).append(r)
    best = {k: min(v, key=lambda r: r["nats_per_step"]) for k, v in per_keys.items()}
    n_keys = min(best, key=lambda k: best[k]["nats_per_step"])
    others = [best[k]["nats_per_step"] for k in best if k != n_keys]
    same = [r["loss_per_state"] for r in per_keys[claimed.n_keys]]
    return {"n_keys": n_keys, "n_keys_margin": min(others) / best[n_keys]["nats_per_step"],
            "lowest_spread": (max(same) - min(same)) / min(same),
            "lowest": claimed.lowest, "lowest_identifiable": (max(same) - min(same)) / min(same) > SHIFT_TOLERANCE}


def main():
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    reference = data.load_dataset().val
    names = [p[0] for p in reference.pieces]
    ours = {name: score(cache, f"{name}|72|31", load_model(name), reference) for name in ("deep", "shallow")}
    status = 0
    for name, candidates in CANDIDATES.items():
        model, claimed = load_model(name), encoding_of(name)
        assert (claimed.n_keys, claimed.lowest) == candidates[0], (name, claimed)
        rows = []
        for n_keys, lowest in candidates:
            split = heldout(Encoding(DEFAULT_ENCODING.steps_per_second, lowest, n_keys))
            assert [p[0] for p in split.pieces] == names, "a different set of held-out pieces"
            rows.append({"n_keys": n_keys, "lowest": lowest,
                         **score(cache, f"{name}|{n_keys}|{lowest}", model, split)})
        found = conclude(rows, claimed)
        folder = settings.models_dir() / name
        _io.write_bytes(folder / "encoding.json", json.dumps({
            "chosen": claimed.to_dict(), **found, "heldout_pieces": len(names), "n_targets": N_TARGETS,
            "candidates": rows}, indent=2) + "\n")
        rf, inc, mine = model_receptive_field(model), RunConfig.from_json(folder / "config.json").filter_increments, rows[0]
        summary = {
            "name": name, "source": f"PianoNet's released model {SOURCE[name]}",
            "params": model.count_params(), "layers": sum(len(b) for b in inc), "blocks": len(inc),
            "receptive_field": rf, "receptive_field_seconds": round(rf / claimed.n_keys / claimed.steps_per_second, 3),
            "encoding": claimed.to_dict(), "heldout_loss": mine["loss_per_state"],
            "heldout_nats_per_step": mine["nats_per_step"], "heldout_key_states": mine["key_states"]}
        for other in ("deep", "shallow"):
            summary[f"{other}_heldout_loss"] = ours[other]["loss_per_state"]
            summary[f"{other}_heldout_nats_per_step"] = ours[other]["nats_per_step"]
        _io.write_bytes(folder / "summary.json", json.dumps(summary, indent=1) + "\n")
        print(name, found, flush=True)
        if found["n_keys"] != claimed.n_keys or found["lowest_identifiable"]:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
