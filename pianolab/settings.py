"""Where pianolab keeps its files, and the quick switch used by CI.

* ``PIANOLAB_QUICK=1`` shrinks data and training steps in the chapters (every code path still
  runs); :func:`quick` reads it.
* ``PIANOLAB_DATA`` overrides the folder of built data, corpora and datasets (default: ``data/``
  of the repository checkout when pianolab is installed from one, else ``~/.cache/pianolab``).
* What the repository ships, ``data/models`` and ``data/benchmarks``, is read from the checkout,
  or from ``pianolab/_data`` where a wheel installed it (``pyproject.toml`` packs both there).
* ``PIANOLAB_JSB`` points at another copy of the JSB Chorales (JSON, pickle or .npz).
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _checkout():
    return (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "data").is_dir()


def shipped_dir():
    """What the repository ships, ``data/models`` and ``data/benchmarks``: the checkout's ``data/``,
    or ``pianolab/_data`` where a wheel installed it (chapter 08_benchmark_jsb)."""
    return REPO_ROOT / "data" if _checkout() else Path(__file__).resolve().parent / "_data"


def quick():
    """True when ``PIANOLAB_QUICK`` is set to a true value: CI's small-and-fast mode (chapter 04_training)."""
    return os.environ.get("PIANOLAB_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


def data_dir():
    """The folder of built data, corpora and datasets (chapter 01_encoding, through
    :func:`pianolab.corpus.default_corpus`)."""
    env = os.environ.get("PIANOLAB_DATA")
    if env:
        return Path(env).expanduser()
    if _checkout():
        return REPO_ROOT / "data"
    return Path.home() / ".cache" / "pianolab"


def models_dir():
    """The folder of the shipped, pretrained models, ``data/models`` (chapter 06_shallow_vs_deep)."""
    return shipped_dir() / "models"


def jsb_path(path=None):
    """The JSB Chorales file: ``path``, else ``$PIANOLAB_JSB``, else the shipped
    ``data/benchmarks/jsb_chorales.npz`` (chapter 08_benchmark_jsb)."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("PIANOLAB_JSB")
    if env:
        return Path(env).expanduser()
    return shipped_dir() / "benchmarks" / "jsb_chorales.npz"
