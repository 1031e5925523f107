"""Training throughput of pianolab's trainer on this machine (chapter 04_training).

Trains the PianoNet-mini architecture (55,045 parameters, receptive field 8,191 key states) on the
default corpus dataset with pianolab's default training settings (``RunConfig().training``:
``n_targets`` key states predicted per window, at the batch size the ramp settles at,
``batch_end``) and, in the same run, with PianoNet's setting as the baseline: 24 time steps
(24 x 72 = 1,728 key states) predicted per window, batch size 2. Both go through the same loop
(``pianolab._trainer.Trainer.train_steps``: one ``model.train_on_batch`` per step on windows drawn
from the dataset, float32, the TensorFlow backend unless ``KERAS_BACKEND`` says otherwise).

After warm-up steps (tracing), the two settings are timed in alternating rounds, so that both see
the same load from other processes. The figure is predicted key states per second of wall-clock
training. Also printed: CPU seconds per million key states (summed over threads; insensitive to
other processes) and the rate that implies with all cores free.

    .venv/bin/python benchmarks/train_throughput.py [--seconds 40] [--n-targets N] [--batch B]

Last line: ``states_per_s=<ours> baseline_states_per_s=<baseline> ratio=<ours/baseline>``.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Timed:
    """One setting: a Trainer and its accumulated wall / CPU time and key states."""

    def __init__(self, label, config, dataset, batch_size, run_dir):
        from pianolab._trainer import Trainer

        self.label, self.config, self.batch_size = label, config, batch_size
        self.trainer = Trainer(run_dir, config, dataset, progress=False)
        self.wall = self.cpu = 0.0
        self.states = 0
        self.steps = 0

    @property
    def per_step(self):
        return self.batch_size * self.config.training.n_targets

    def run(self, steps):
        w, c = time.perf_counter(), time.process_time()
        self.trainer.train_steps(steps, batch_size=self.batch_size)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.steps += steps
        self.states += steps * self.per_step

    def steps_for(self, seconds):
        """Steps that take about ``seconds`` at the speed seen so far (at least 1)."""
        rate = self.states / self.wall if self.wall else 1e5
        return max(1, round(seconds * rate / self.per_step))

    @property
    def rate(self):
        return self.states / self.wall

    def line(self):
        rf = self.config.receptive_field
        n = self.config.training.n_targets
        return (f"{self.label:>8}: n_targets={n} batch={self.batch_size} window={rf + n - 1} "
                f"steps={self.steps} {self.wall / self.steps:.3f} s/step -> {self.rate:,.0f} key states/s; "
                f"{self.cpu / self.states * 1e6:.2f} CPU-s per million states "
                f"(= {os.cpu_count() * self.states / self.cpu:,.0f}/s with all {os.cpu_count()} cores free)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0,
                    help="timed wall-clock seconds per setting, after warm-up (default 40)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    ap.add_argument("--n-targets", type=int, default=None, help="override our n_targets")
    ap.add_argument("--batch", type=int, default=None, help="override our batch size")
    args = ap.parse_args(argv)

    import keras

    from pianolab.config import RunConfig

    ours = RunConfig(model={"preset": "pianonet_mini"},
                     training={"n_targets": args.n_targets} if args.n_targets else {})
    baseline = RunConfig(model={"preset": "pianonet_mini"},
                         training={"n_targets": 24 * 72, "batch_start": 2, "batch_end": 2})
    dataset = ours.open_dataset(progress=False)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} CPUs, "
          f"PianoNet-mini, jit_compile={ours.training.jit_compile}, float32; "
          f"load average {os.getloadavg()[0]:.2f} before the run", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        a = Timed("ours", ours, dataset, args.batch or ours.training.batch_end, os.path.join(tmp, "a"))
        b = Timed("baseline", baseline, dataset, 2, os.path.join(tmp, "b"))
        for t in (a, b):  # warm-up: tracing and first allocations, then a speed estimate
            t.trainer.train_steps(2, batch_size=t.batch_size)
            t.run(1)
            t.wall = t.cpu = 0.0
            t.states = t.steps = 0
            t.run(1)
        per_round = args.seconds / args.rounds
        for _ in range(args.rounds):
            for t in (a, b):
                t.run(t.steps_for(per_round))
    print(a.line())
    print(b.line())
    print(f"load average {os.getloadavg()[0]:.2f} after the run (other processes share the CPUs)")
    print(f"states_per_s={a.rate:.0f} baseline_states_per_s={b.rate:.0f} ratio={a.rate / b.rate:.2f}")


if __name__ == "__main__":
    sys.exit(main())
