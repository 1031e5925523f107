"""The command line: ``python -m pianolab data | train | generate | import-pianonet`` (chapter 04_training).

Every command body lives here, on top of the stages. Each flag is checked once: by argparse, or by
the stage it goes to (``--corpus``, ``--seed``, ``MODEL``: their errors re-named after the flag); a
bad flag or config ends in one line naming the flag or key and what was expected, exit status 2.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .errors import ConfigError, MidiError, PianolabError


def _number(kind, lo, hi=math.inf, strict=True):
    """An argparse type: a ``kind`` (int or float) in (lo, hi] (strict) or [lo, hi]."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}")
        if not (math.isfinite(v) and (v > lo if strict else v >= lo) and v <= hi):
            raise argparse.ArgumentTypeError(f"expected a number {'>' if strict else '>='} {lo}"
                                             + (f" and <= {hi}" if hi < math.inf else "") + f", got {text}")
        return v
    return parse


def _cmd_data(args):
    """Build (or check) the corpus and its dataset; print a summary."""
    from . import corpus as corpus_stage
    from . import data
    t0, folder = time.perf_counter(), Path(args.corpus or ".").expanduser()
    if args.corpus:
        try:
            print(f"corpus: {len(corpus_stage.midi_files(folder))} MIDI files in {folder}")
        except ConfigError as exc:
            raise ConfigError("--corpus", exc.reason) from None
    else:
        folder = corpus_stage.default_corpus(progress=not args.quiet, force=args.force)
        m = corpus_stage.corpus_manifest(folder) or {}
        print(f"corpus: {len(m.get('pieces', []))} pieces, {m.get('seconds', 0) / 60:.1f} minutes, "
              f"{len(m.get('failed', []))} skipped -> {folder}")
    if args.no_dataset:
        return 0
    out = data.build_dataset(folder, args.out, progress=not args.quiet, force=args.force)
    ds = data.load_dataset(out)
    c, tr, va = (ds.index["stats"][k] for k in ("corpus", "train", "val"))
    print(f"dataset: {c['pieces']} pieces, {c['minutes']:.1f} minutes, {c['key_states']:,} key states, "
          f"key-down rate {c['key_down_rate']:.2%}\n  train: {tr['originals']} pieces + {tr['pieces'] - tr['originals']}"
          f" clones, {tr['key_states']:,} key states; val: {va['pieces']} pieces, {va['key_states']:,} key states")
    if ds.index.get("skipped"):
        print(f"  skipped {len(ds.index['skipped'])} files (see index.json)")
    print(f"  -> {out}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_train(args):
    """Train or resume ``RUN_DIR``; a config with ``data.benchmark`` trains on that benchmark."""
    from .train import train
    if args.config is not None and not Path(args.config).is_file():
        raise ConfigError("--config", f"{args.config}: no such file (a JSON run config is expected)")
    history = train(args.run_dir, args.config, steps=args.steps, progress=not args.quiet)
    val = [r["val_loss"] for r in history.rows if r.get("val_loss") is not None]
    print(f"{args.run_dir}: step {history.final_step}, validation loss "
          f"{f'{val[-1]:.4f}' if val else 'n/a'} nats per key state, "
          f"{history.rows[-1]['seconds'] if history.rows else 0:.0f} s of training")
    return 0


def _cmd_generate(args):
    """Generate ``--streams`` performances with Fast-WaveNet; write ``performance_KK.mid`` (and
    ``.wav``) and the settings as ``performance.json`` in ``--out``."""
    from . import _io
    from . import audio
    from .encoding import EDGE_THRESHOLDS, write_midi
    from .generate import FastSampler, generate
    from .runs import encoding_of, load_model
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} exists and is not a folder")
    try:
        model, encoding = load_model(args.model), encoding_of(args.model)
        sampler = FastSampler(model, n_keys=encoding.n_keys)
    except ConfigError as exc:
        raise ConfigError("MODEL", exc.reason) from exc
    except Exception as exc:  # a damaged or foreign .keras file, a model of another layout
        raise ConfigError("MODEL", f"cannot generate with {args.model!r}: {exc}") from exc
    chosen = {k: getattr(args, k) for k in ("seconds", "seed", "seed_seconds", "streams", "temperature", "random_seed")}
    edge = not args.no_edge_aversion
    try:
        rolls = generate(model, **chosen, edge_aversion=edge, progress=not args.quiet, encoding=encoding, sampler=sampler)
    except (ConfigError, MidiError) as exc:  # generate checks the seed: no such file or piece, not MIDI
        raise ConfigError("--seed", exc.reason if isinstance(exc, ConfigError) else str(exc)) from exc
    settings = {"model": str(args.model), **chosen, "edge_aversion": list(EDGE_THRESHOLDS) if edge else None,
                "receptive_field": sampler.receptive_field, "encoding": encoding.to_dict()}
    paths = []
    for k, roll in enumerate(rolls):  # performance_KK.mid (and .wav), then the settings
        paths.append(write_midi(roll, out / f"performance_{k:02d}.mid", encoding))
        paths += [audio.write_wav(roll, out / f"performance_{k:02d}.wav", encoding=encoding)] if not args.no_audio else []
    paths.append(_io.write_bytes(out / "performance.json", json.dumps(settings, indent=2, sort_keys=True) + "\n"))
    if not args.quiet:
        print("\n".join(map(str, paths)))
    return 0


def _cmd_import_pianonet(args):
    """Convert one of PianoNet's SavedModel folders into a pianolab model folder."""
    from . import pianonet
    from .encoding import Encoding
    from .model import model_receptive_field
    try:
        encoding = Encoding(args.steps_per_second, args.lowest, args.keys)
    except ValueError as exc:
        raise ConfigError("--keys/--lowest/--steps-per-second", str(exc)) from None
    model = pianonet.convert(args.src, args.out, encoding)
    print(f"{args.out}: {model.count_params():,} parameters, receptive field "
          f"{model_receptive_field(model):,} key states, {encoding}")
    return 0


def _build_parser():
    """The argument parser of ``python -m pianolab``."""
    parser = argparse.ArgumentParser(prog="pianolab", description="Piano-music generation with dilated "
                                                                   "convolutions (the pianolab book's CLI).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="build the default corpus and/or a dataset")
    p.add_argument("--corpus", help="folder of MIDI files (searched recursively); default: the built-in corpus")
    p.add_argument("--out", help="dataset folder to write (default: under data/datasets)")
    p.add_argument("--force", action="store_true", help="rebuild even when a valid cache exists")
    p.add_argument("--no-dataset", action="store_true", help="only build/check the corpus MIDI files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train (or resume) the run in RUN_DIR")
    p.add_argument("run_dir", help="run directory; holds config.json, checkpoints and history")
    p.add_argument("--config", help="JSON run config to start a new run with (copied into RUN_DIR)")
    p.add_argument("--steps", type=_number(int, 0, strict=False), help="train until this many steps in all")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="generate performances from a trained model")
    p.add_argument("model", help="run directory, .keras file, or the name of a shipped model")
    p.add_argument("--seconds", type=_number(float, 0, 3600), default=30.0,
                   help="length of each performance in seconds (> 0, at most 3600)")
    p.add_argument("--seed", default="silence",
                   help="MIDI file, 'corpus:NAME' (a piece of the default corpus) or 'silence'")
    p.add_argument("--seed-seconds", type=_number(float, 0),
                   help="use only the first this many seconds of the seed (> 0; default: all of it)")
    p.add_argument("--streams", type=_number(int, 1, 1024, strict=False), default=1,
                   help="performances generated together (1 to 1024)")
    p.add_argument("--out", required=True, help="output folder for .mid and .wav files")
    p.add_argument("--temperature", type=_number(float, 0), default=1.0,
                   help="> 0: below 1 bolder, above 1 more random")
    p.add_argument("--no-edge-aversion", action="store_true", help="switch off PianoNet's edge-aversion thresholds")
    p.add_argument("--random-seed", type=_number(int, 0, strict=False), default=0,
                   help="a whole number >= 0; the same seed gives the same performance")
    p.add_argument("--no-audio", action="store_true", help="write .mid only")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no list of written files")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("import-pianonet", help="convert a PianoNet SavedModel folder to a pianolab model")
    p.add_argument("src", help="PianoNet's SavedModel folder (saved_model.pb and variables/)")
    p.add_argument("--out", required=True, help="model folder to write (e.g. data/models/NAME)")
    p.add_argument("--keys", type=_number(int, 1, 128, strict=False), default=72, help="keys of the model's encoding")
    p.add_argument("--lowest", type=_number(int, 0, 127, strict=False), default=31, help="MIDI pitch of the lowest key")
    p.add_argument("--steps-per-second", type=_number(float, 0), default=48.0, help="time steps per second")
    p.set_defaults(func=_cmd_import_pianonet)
    return parser


def main(argv=None):
    """Run the CLI; returns the exit status (chapter 04_training)."""
    args = _build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PianolabError as exc:
        print(f"pianolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pianolab {args.command}: interrupted", file=sys.stderr)
        return 130
