"""What several test files share: tiny random datasets and the run config that trains on them in
a second or two (the 'tiny' preset, a few steps)."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pianolab.config import RunConfig  # noqa: E402
from pianolab.data import dataset_from_rolls  # noqa: E402
from pianolab.encoding import DEFAULT_ENCODING  # noqa: E402


def habit_rolls(prefix, n_pieces, steps, seed, n_keys=DEFAULT_ENCODING.n_keys):
    """``{name: roll}`` of random rolls with a learnable habit: a key that is down tends to stay down."""
    rng = np.random.default_rng(seed)
    rolls = {}
    for i in range(n_pieces):
        roll = (rng.random((steps, n_keys)) < 0.03).astype(np.uint8)
        for t in range(1, steps):
            roll[t] |= roll[t - 1] & (rng.random(n_keys) < 0.85)
        rolls[f"{prefix}{i}"] = roll
    return rolls


def tiny_dataset(seed=0):
    """Six training pieces of 120 time steps and two validation pieces of 80, in memory."""
    return dataset_from_rolls(habit_rolls("train", 6, 120, seed), habit_rolls("val", 2, 80, seed + 1),
                              DEFAULT_ENCODING)


def tiny_config(**training):
    """The 'tiny' preset, 16 Adam steps on batches of two windows of 384 targets; ``training``
    overrides any training key."""
    t = {"n_targets": 384, "batch_start": 2, "batch_end": 2, "batch_double_every": 4, "steps": 16,
         "checkpoint_every": 8, "validate_every": 8, "log_every": 2, "lr": 3e-3}
    t.update(training)
    return RunConfig(model={"preset": "tiny"}, training=t, validation={"n_windows": 3})


@pytest.fixture(scope="session")
def dataset():
    return tiny_dataset()
