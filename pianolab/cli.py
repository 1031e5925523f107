"""Command line for long runs: ``python -m pianolab data | train | generate | import-pianonet``
(chapter 04_training).

Every bad argument or config ends in one line naming the flag or key and what was expected, and
exit status 2.
"""

import argparse
import sys

from .encoding import DEFAULT_ENCODING
from .errors import ConfigError, PianolabError


def _cmd_data(args):
    from . import data

    return data.cli_data(args)


def _cmd_train(args):
    from . import train

    return train.cli_train(args)


def _cmd_generate(args):
    from . import generate

    return generate.cli_generate(args)


def _cmd_import_pianonet(args):
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


def build_parser():
    """The argument parser of ``python -m pianolab`` (chapter 04_training)."""
    parser = argparse.ArgumentParser(
        prog="pianolab",
        description="Piano-music generation with dilated convolutions (the pianolab book's CLI).",
    )
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{data,train,generate,import-pianonet}")

    p = sub.add_parser("data", help="build the default corpus and/or a dataset")
    p.add_argument("--corpus", default=None,
                   help="folder of MIDI files (searched recursively); default: the built-in corpus")
    p.add_argument("--out", default=None, help="dataset folder to write (default: under data/datasets)")
    p.add_argument("--force", action="store_true", help="rebuild even when a valid cache exists")
    p.add_argument("--no-dataset", action="store_true", help="only build/check the corpus MIDI files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train (or resume) the run in RUN_DIR")
    p.add_argument("run_dir", help="run directory; holds config.json, checkpoints and history")
    p.add_argument("--config", default=None,
                   help="JSON run config to start a new run with (copied into RUN_DIR)")
    p.add_argument("--steps", type=int, default=None, help="train until this many steps in total")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="generate performances from a trained model")
    p.add_argument("model", help="run directory, .keras file, or the name of a shipped model")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each performance")
    p.add_argument("--seed", default="silence",
                   help="MIDI file, 'corpus:NAME' (a corpus piece) or 'silence'")
    p.add_argument("--seed-seconds", type=float, default=None,
                   help="use only the first this many seconds of the seed (default: all of it)")
    p.add_argument("--streams", type=int, default=1, help="performances generated together")
    p.add_argument("--out", required=True, help="output folder for .mid and .wav files")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--no-edge-aversion", action="store_true",
                   help="switch off PianoNet's edge aversion thresholds")
    p.add_argument("--random-seed", type=int, default=0, help="same seed -> same performance")
    p.add_argument("--no-audio", action="store_true", help="write .mid only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_generate)

    enc = DEFAULT_ENCODING
    p = sub.add_parser("import-pianonet", help="convert a PianoNet SavedModel folder to a pianolab model")
    p.add_argument("src", help="PianoNet's SavedModel folder (saved_model.pb and variables/)")
    p.add_argument("--out", required=True, help="model folder to write (e.g. data/models/NAME)")
    p.add_argument("--keys", type=int, default=enc.n_keys, help="keys of the model's encoding")
    p.add_argument("--lowest", type=int, default=enc.lowest, help="MIDI pitch of the lowest key")
    p.add_argument("--steps-per-second", type=float, default=enc.steps_per_second,
                   help="time steps per second")
    p.set_defaults(func=_cmd_import_pianonet)
    return parser


def main(argv=None):
    """Run the CLI; returns the exit status (chapter 04_training)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except PianolabError as exc:
        print(f"pianolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pianolab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
