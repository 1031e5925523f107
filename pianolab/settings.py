"""Where pianolab keeps its files, and the quick switch used by CI.

* ``PIANOLAB_QUICK=1`` shrinks data and training steps in the chapters (every code path still
  runs); :func:`quick` reads it.
* ``PIANOLAB_DATA`` overrides the data folder (default: ``data/`` of the repository checkout when
  pianolab is installed from one, else ``~/.cache/pianolab``).
* ``PIANOLAB_JSB`` points at the JSB Chorales JSON of the Boulanger-Lewandowski split.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def quick():
    """True when ``PIANOLAB_QUICK`` is set to a true value: CI's small-and-fast mode (chapter 04_training)."""
    return os.environ.get("PIANOLAB_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


def data_dir():
    """The folder holding corpora, datasets and shipped models (chapter 01_encoding, through
    :func:`pianolab.corpus.default_corpus`)."""
    env = os.environ.get("PIANOLAB_DATA")
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "data").is_dir():
        return REPO_ROOT / "data"
    return Path.home() / ".cache" / "pianolab"


def models_dir():
    """The folder of the shipped, pretrained models, ``data/models`` (chapter 06_shallow_vs_deep)."""
    return data_dir() / "models"


def jsb_path(path=None):
    """The JSB Chorales JSON: ``path``, else ``$PIANOLAB_JSB``, else ``../shared/benchmarks/jsb``
    (chapter 08_benchmark_jsb)."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PIANOLAB_JSB")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "benchmarks" / "jsb" / "jsb_chorales.json"


def shipped_dir():
    """What the repository ships (``data/models``, ``data/benchmarks``): the checkout's ``data/``, or
    ``pianolab/_data`` where a wheel installed it (chapter 08_benchmark_jsb)."""
    checkout = (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "data").is_dir()
    return REPO_ROOT / "data" if checkout else Path(__file__).resolve().parent / "_data"
