"""Four polyphonic-music benchmarks: the shipped models' test NLL beside trivial baselines and published models.

For each set of Boulanger-Lewandowski et al. 2012 (JSB Chorales, Nottingham, MuseData, Piano-midi.de;
the copies shipped under ``data/benchmarks``) the model shipped in ``data/models/<name>`` (or in
``--models DIR``) is scored on the test split in nats per frame, summed over the 88 keys, first frame
of each piece not scored (the benchmark's rule; the every-frame variant beside it). The per-key
marginal and first-order Markov baselines are fitted on the training split and scored by the same
evaluator in the same run. Last line: ``jsb=<x> nottingham=<y> musedata=<z> pianomidi=<w>``.
Chapter 09_benchmarks explains the numbers.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    from pianolab import benchmark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="folder holding one run directory per set, named as the "
                        "sets are (default: the shipped data/models)")
    parser.add_argument("--only", nargs="+", choices=benchmark.BENCHMARKS, default=list(benchmark.BENCHMARKS),
                        help="score only these sets")
    args = parser.parse_args(argv)

    from pianolab.errors import PianolabError
    from pianolab.runs import load_run

    scores = {}
    for name in args.only:
        try:
            data = benchmark.load(name)
            config, model = load_run(os.path.join(args.models, name) if args.models else name)
        except PianolabError as exc:
            print(f"benchmarks/polyphonic.py: error: {exc}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        ev = benchmark.nll_per_frame(model, data["test"])
        seconds = time.perf_counter() - t0
        rows = {**benchmark.baselines(data, "test"), "pianolab (shipped model)": ev}
        col = benchmark.BENCHMARKS.index(name)
        print(f"== {name}: test {ev['pieces']} pieces, {ev['frames']:,} frames; model {model.count_params():,} "
              f"parameters, receptive field {config.receptive_field:,} key states "
              f"({config.receptive_field / benchmark.N_KEYS:.1f} frames), evaluated in {seconds:.1f} s")
        print(f"   {'model':40s} {'first frame unscored':>21s} {'all frames':>11s}")
        for label, e in rows.items():
            print(f"   {label:40s} {e['nll']:21.3f} {e['nll_all_frames']:11.3f}")
        for label, (values, kind, source) in benchmark.PUBLISHED.items():
            if values[col] is not None:
                print(f"   {label + ' (published, ' + kind + ')':40s} {values[col]:21.3f}  {source}")
        scores[name] = ev["nll"]
    print(" ".join(f"{name}={value:.4f}" for name, value in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
