"""JSB Chorales benchmark: the shipped model's test NLL beside the baselines and published models.

Evaluates ``data/models/jsb`` (or ``--run DIR``) on the test split of the Boulanger-Lewandowski
split (the copy shipped under ``data/benchmarks``, or ``--data`` / ``$PIANOLAB_JSB``), in nats per frame summed over the 88 keys. The baselines are fitted on the training split and
scored by the same evaluator in the same run. Last line: ``jsb_test_nll=<x>`` (the first frame of
each piece not scored, the benchmark's rule). Chapter 08_benchmark_jsb explains the numbers.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="JSB run directory (default: data/models/jsb)")
    parser.add_argument("--data", default=None, help="JSB .npz, JSON or pickle (default: $PIANOLAB_JSB, then the shipped copy)")
    args = parser.parse_args(argv)

    from pianolab import benchmark as jsb
    from pianolab.errors import PianolabError
    from pianolab.runs import load_run

    try:
        data = jsb.read(args.data) if args.data else jsb.load("jsb")
        config, model = load_run(args.run or "jsb")
    except PianolabError as exc:
        print(f"benchmarks/jsb.py: error: {exc}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    ev = jsb.evaluate(model, data["test"])
    seconds = time.perf_counter() - t0
    base = jsb.baselines(data, "test")

    print(f"test: {ev['pieces']} pieces, {ev['frames']} frames, {ev['scored_frames']} scored")
    print(f"model: {model.count_params():,} parameters, receptive field {config.receptive_field} "
          f"key states ({config.receptive_field / jsb.N_KEYS:.1f} frames); evaluated in {seconds:.1f} s")
    print()
    print(f"{'model':58s} {'first frame unscored':>21s} {'all frames':>11s}")
    for name, e in base.items():
        print(f"{name + ' (this run)':58s} {e['nll']:21.3f} {e['nll_all_frames']:11.3f}")
    print(f"{'pianolab (shipped model)':58s} {ev['nll']:21.3f} {ev['nll_all_frames']:11.3f}")
    print()
    print("published:")
    for name, (value, source) in jsb.PUBLISHED.items():
        print(f"  {name:28s} {value:6.2f}  {source}")
    print(f"jsb_test_nll_all_frames={ev['nll_all_frames']:.4f}")
    print(f"jsb_test_nll={ev['nll']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
