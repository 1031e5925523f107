"""Feed mutated and truncated MIDI files to the encoder and count what happens.

Each file must either decode to a roll or raise pianolab's documented ``MidiError``. Any other
exception, a hang (a per-file time limit) or a crash of the decoding process is a failure. The
files are made from real ones (the default corpus, or a folder given with ``--corpus``) by flipping
bytes, cutting the file short, duplicating chunks and overwriting header fields.

    python benchmarks/robustness.py [--files 1000] [--corpus DIR] [--time-limit 10] [--build]

Last line: ``files=<n> decoded=<a> midi_error=<b> other_error=<c> hangs=<d> crashes=<e>``; with
``--build`` a dataset is then built over one folder holding the originals and all the mutated files
(good and bad mixed), and the line gains ``dataset_pieces=<p> skipped=<s>``: every file ends up in
one or the other, and the build must not fail.
"""

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

MUTATIONS = ("flip_bytes", "truncate", "duplicate_chunk", "header_field", "zero_run", "splice")


def mutate(data, rng):
    """One mutated copy of the bytes ``data`` and the name of the mutation used."""
    kind = rng.choice(MUTATIONS)
    b = bytearray(data)
    n = len(b)
    if kind == "flip_bytes":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(0, n)]
    elif kind == "duplicate_chunk":
        i = rng.randrange(n)
        j = min(n, i + rng.randint(1, 512))
        k = rng.randrange(n)
        b[k:k] = b[i:j]
    elif kind == "header_field":
        # the header (bytes 8..13: format, track count, division) or a track length (bytes 18..21)
        i = rng.choice([8, 9, 10, 11, 12, 13, 18, 19, 20, 21])
        if i < n:
            b[i] = rng.randrange(256)
    elif kind == "zero_run":
        i = rng.randrange(n)
        b[i:i + rng.randint(1, 64)] = bytes(min(n - i, 64))
    else:  # splice: random bytes in the middle of the file
        i = rng.randrange(n)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(b), kind


def make_files(sources, out_dir, n_files, seed=0):
    """Write ``n_files`` mutated copies of the MIDI files ``sources`` into ``out_dir``."""
    rng = random.Random(seed)
    originals = [Path(p).read_bytes() for p in sources]
    made = []
    for i in range(n_files):
        data, kind = mutate(originals[i % len(originals)], rng)
        path = Path(out_dir) / f"mutant_{i:05d}_{kind}.mid"
        path.write_bytes(data)
        made.append(path)
    return made


def _worker(conn):
    import warnings

    warnings.simplefilter("ignore")
    from pianolab.encoding import midi_to_roll
    from pianolab.errors import MidiError

    while True:
        path = conn.recv()
        if path is None:
            return
        try:
            roll = midi_to_roll(path)
            conn.send(("decoded", f"{roll.shape}"))
        except MidiError as exc:
            named = str(path) in str(exc)
            conn.send(("midi_error" if named else "unnamed_error", str(exc)[:200]))
        except Exception as exc:  # the failure this harness is looking for
            conn.send(("other_error", f"{type(exc).__name__}: {exc}"[:200]))


def run(paths, time_limit=10.0):
    """Decode every path in a worker process; returns (Counter of outcomes, list of failures)."""
    ctx = mp.get_context("spawn")
    counts, failures = Counter(), []

    def start():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        proc.start()
        return proc, parent

    proc, conn = start()
    for path in paths:
        conn.send(str(path))
        if conn.poll(time_limit):
            try:
                outcome, detail = conn.recv()
            except EOFError:
                outcome, detail = "crashes", f"worker exited with code {proc.exitcode}"
        elif not proc.is_alive():
            outcome, detail = "crashes", f"worker exited with code {proc.exitcode}"
        else:
            outcome, detail = "hangs", f"no answer within {time_limit} s"
        counts[outcome] += 1
        if outcome not in ("decoded", "midi_error"):
            failures.append((str(path), outcome, detail))
            proc.kill()
            proc.join()
            proc, conn = start()
    conn.send(None)
    proc.join(5)
    return counts, failures


def corpus_sources(corpus=None, n=24):
    """Up to ``n`` MIDI files spread over ``corpus`` (default: the built-in corpus)."""
    if corpus is None:
        from pianolab.corpus import default_corpus

        corpus = default_corpus(progress=False)
    files = sorted(p for p in Path(corpus).rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        raise SystemExit(f"{corpus}: no .mid or .midi files to mutate")
    step = max(1, len(files) // n)
    return files[::step][:n]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--corpus", default=None, help="folder of MIDI files to mutate (default corpus)")
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds allowed per file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build", action="store_true", help="then build a dataset over originals + mutants")
    args = ap.parse_args(argv)

    sources = corpus_sources(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(sources, tmp, args.files, seed=args.seed)
        t0 = time.perf_counter()
        counts, failures = run(paths, args.time_limit)
        elapsed = time.perf_counter() - t0
        built = ""
        if args.build:
            import shutil

            from pianolab.data import load_dataset, build_dataset

            for i, src in enumerate(sources):
                shutil.copy(src, Path(tmp) / f"original_{i:02d}.mid")
            ds = load_dataset(build_dataset(tmp, Path(tmp) / "dataset", n_clones=0, progress=False))
            pieces, skipped = len(ds.train) + len(ds.val), len(ds.index["skipped"])
            assert pieces + skipped == len(paths) + len(sources), "a file is neither built nor skipped"
            built = f" dataset_pieces={pieces} skipped={skipped}"
    for path, outcome, detail in failures[:20]:
        print(f"{outcome}: {Path(path).name}: {detail}")
    print(f"{len(paths)} mutated files from {len(sources)} originals in {elapsed:.1f} s")
    print(
        f"files={len(paths)} decoded={counts['decoded']} midi_error={counts['midi_error']} "
        f"other_error={counts['other_error'] + counts['unnamed_error']} hangs={counts['hangs']} "
        f"crashes={counts['crashes']}{built}"
    )
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
