"""Generation speed on this CPU: Fast-WaveNet vs the naive loop vs a plain numpy queue loop.

Model: the ``micro_1`` preset (171,907 parameters, 36 layers, receptive field 10,509 key states)
with random weights and a calibrated output bias (logit of 4% keys down), at 48 steps/s x 72
keys = 3,456 key states per second of music. Everything is measured in this one run:

* the compiled Fast-WaveNet sampler (``FastSampler``), one stream and 32 streams;
* the plain numpy version of the same queue algorithm (``FastSampler(backend="numpy")``), the
  baseline: one numpy call per layer per key state;
* the naive sampler (the Keras model over the last RF states for every key state);
* the largest |fast - model| difference: the probabilities the fast sampler used while
  generating, against the model's own forward pass over the same music.

Real-time factor = seconds of music per second of wall-clock time. Last line:
``single_realtime=<x> batch32_realtime=<y> naive_states_per_s=<n> fast_over_naive=<r> max_abs_diff=<d>``
Targets (chapter 05_fast_wavenet): x >= 10, y >= 50, d within ``pianolab.model.rounding_bound``
(float32 rounding over the stack).
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from pianolab.encoding import DEFAULT_ENCODING  # noqa: E402
from pianolab.generate import FastSampler, naive_sample  # noqa: E402
from pianolab.model import PRESETS, build_model, count_params, logit, receptive_field  # noqa: E402

ENC = DEFAULT_ENCODING
STATES_PER_SECOND = int(ENC.steps_per_second * ENC.n_keys)  # 3456


def timed(fn, repeats=1):
    """Best wall-clock time of ``repeats`` calls (the machine is shared) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cpu():
    """The CPU's model name and its vector-instruction flags that matter to the compiled kernel."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(f for f in ('avx2', 'fma', 'avx512f') if f in flags)}"


def main():
    quick = "--quick" in sys.argv
    print(f"CPU: {cpu()}; numba {numba.__version__}")
    inc = PRESETS["micro_1"]
    model = build_model(inc, output_bias=logit(0.04), seed=0)
    rf = receptive_field(inc)
    print(f"model: micro_1 preset, {count_params(inc):,} parameters, {len(sum(inc, []))} layers, "
          f"receptive field {rf:,} key states ({rf / STATES_PER_SECOND:.2f} s of music)")
    print(f"encoding: {ENC.steps_per_second:g} steps/s x {ENC.n_keys} keys = {STATES_PER_SECOND} key states "
          "per second of music")

    t = time.perf_counter()
    fast = FastSampler(model)  # reads and checks the weights; loads (or compiles) the kernel
    fast.sample(None, 2, streams=1)
    fast.sample(None, 2, streams=32)  # starts numba's thread pool
    print(f"FastSampler ready in {time.perf_counter() - t:.1f} s (kernel from numba's cache after the first run)")
    rng = np.random.default_rng(0)
    seed_roll = (rng.random((int(2 * ENC.steps_per_second), ENC.n_keys)) < 0.04).astype(np.uint8)

    # -- one stream ------------------------------------------------------------------------
    # start() runs the seed through the fast steps (timed apart); advance() generates.
    def run(streams, seconds, random_seed, probabilities=False):
        t = time.perf_counter()
        state = fast.start(seed_roll, streams, random_seed)
        t_seed = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        out = fast.advance(state, int(seconds * ENC.steps_per_second), return_probabilities=probabilities)
        wall = time.perf_counter() - t
        cpu_share[streams] = (time.process_time() - c) / wall  # cores this process got (busy machine?)
        return wall, t_seed, out

    cpu_share = {}

    sec1 = 3.0 if quick else 20.0
    runs = [run(1, sec1, 1, probabilities=True) for _ in range(3)]
    dt1, seed1, (roll1, probs1) = min(runs, key=lambda r: r[0])
    single_rate = roll1.size / dt1
    single_rt = sec1 / dt1
    print(f"fast, 1 stream:   {single_rate:12,.0f} key states/s  real-time x{single_rt:7.1f}  "
          f"({sec1:g} s of music in {dt1:.2f} s, best of 3; seed pass {seed1:.2f} s; "
          f"key-down rate {roll1.mean():.3f})")

    # -- 32 streams ------------------------------------------------------------------------
    sec32 = 1.0 if quick else 5.0
    runs = [run(32, sec32, 2) for _ in range(3)]
    dt32, seed32, roll32 = min(runs, key=lambda r: r[0])
    batch_rate = roll32.size / dt32
    batch_rt = 32 * sec32 / dt32
    print(f"fast, 32 streams: {batch_rate:12,.0f} key states/s  real-time x{batch_rt:7.1f}  "
          f"({32 * sec32:g} s of music in {dt32:.2f} s, best of 3; seed pass {seed32:.2f} s; "
          f"key-down rate {roll32.mean():.3f})")
    print(f"threads: {numba.get_num_threads()} (numba); CPU cores: {os.cpu_count()}; cores this process got "
          f"while generating (CPU time / wall time, last run): 1 stream {cpu_share[1]:.2f}, "
          f"32 streams {cpu_share[32]:.2f}; load average {os.getloadavg()[0]:.1f}")

    # -- plain numpy baseline (same algorithm, one numpy call per layer per state) ----------
    # (seeded with silence: its seed pass is free, and the rate does not depend on the music)
    base = FastSampler(model, backend="numpy", verify=False)
    nsteps = 6 if quick else 24
    dtn1, _ = timed(lambda: base.sample(None, nsteps, streams=1, random_seed=1))
    np1_rate = nsteps * ENC.n_keys / dtn1
    dtn32, _ = timed(lambda: base.sample(None, nsteps, streams=32, random_seed=2))
    np32_rate = 32 * nsteps * ENC.n_keys / dtn32
    print(f"numpy baseline, 1 stream:   {np1_rate:10,.0f} key states/s  real-time x{np1_rate / STATES_PER_SECOND:6.2f}"
          f"   fast/numpy = {single_rate / np1_rate:.1f}")
    print(f"numpy baseline, 32 streams: {np32_rate:10,.0f} key states/s  real-time x{np32_rate / STATES_PER_SECOND:6.2f}"
          f"   fast/numpy = {batch_rate / np32_rate:.1f}")

    # -- naive sampler ----------------------------------------------------------------------
    n_naive_steps = 1 if quick else 2  # x 72 key states
    naive_sample(model, seed_roll, 1, streams=1)  # warm-up (graph tracing)
    dtv, roll_naive = timed(lambda: naive_sample(model, seed_roll, n_naive_steps, streams=1, random_seed=1))
    naive_rate = n_naive_steps * ENC.n_keys / dtv
    same = np.array_equal(roll_naive[0], roll1[0, :n_naive_steps])
    print(f"naive, 1 stream:  {naive_rate:12,.1f} key states/s  real-time x{naive_rate / STATES_PER_SECOND:.4f}  "
          f"({n_naive_steps * ENC.n_keys} states; same states as the fast sampler: {same})")

    # -- exactness: the probabilities used while sampling vs the model's forward pass -------
    hist = np.concatenate([np.zeros((rf + ENC.n_keys, ), np.float32),
                           seed_roll.reshape(-1).astype(np.float32),
                           roll1[0].reshape(-1).astype(np.float32)])
    ref = np.asarray(model(hist[None, :-1, None], training=False))[0, :, 0]
    ref = ref[-probs1[0].size:]
    max_diff = float(np.max(np.abs(ref - probs1[0].reshape(-1))))
    print(f"max |fast - model| over {probs1.size:,} generated key states: {max_diff:.2e}")
    print(f"fast over naive (1 stream): {single_rate / naive_rate:,.0f}x")
    print(f"single_realtime={single_rt:.1f} batch32_realtime={batch_rt:.1f} naive_states_per_s={naive_rate:.1f} "
          f"fast_over_naive={single_rate / naive_rate:.0f} max_abs_diff={max_diff:.2e}")


if __name__ == "__main__":
    main()
