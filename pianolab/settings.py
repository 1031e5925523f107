"""Where pianolab keeps its files, and the quick switch used by CI.

``PIANOLAB_QUICK=1`` shrinks data and training steps in the chapters (every code path still runs).
``PIANOLAB_DATA`` overrides the folder of built data (default: ``data/`` of the checkout pianolab is
installed from, else ``~/.cache/pianolab``). What the repository ships, ``data/models`` and
``data/benchmarks``, is read from the checkout, or from ``pianolab/_data`` where a wheel installed
it. ``PIANOLAB_JSB`` points at another copy of the JSB Chorales (JSON, pickle or .npz).
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_CHECKOUT = (REPO_ROOT / "pyproject.toml").exists() and (REPO_ROOT / "data").is_dir()


def shipped_dir():
    """What the repository ships, ``data/models`` and ``data/benchmarks``: the checkout's ``data/``,
    or ``pianolab/_data`` where a wheel installed it (chapter 09_benchmarks)."""
    return REPO_ROOT / "data" if _CHECKOUT else Path(__file__).resolve().parent / "_data"


def quick():
    """True when ``PIANOLAB_QUICK`` is set to a true value: CI's small-and-fast mode (chapter 04_training)."""
    return os.environ.get("PIANOLAB_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


def data_dir():
    """The folder of built data: corpora and datasets (chapter 01_encoding)."""
    env = os.environ.get("PIANOLAB_DATA")
    return Path(env).expanduser() if env else REPO_ROOT / "data" if _CHECKOUT else Path.home() / ".cache" / "pianolab"


def models_dir():
    """The folder of the shipped, pretrained models, ``data/models`` (chapter 06_shallow_vs_deep)."""
    return shipped_dir() / "models"


def jsb_path():
    """The JSB Chorales file: ``$PIANOLAB_JSB``, else the shipped ``data/benchmarks/jsb_chorales.npz``
    (chapter 09_benchmarks)."""
    path = os.environ.get("PIANOLAB_JSB")
    return Path(path).expanduser() if path else shipped_dir() / "benchmarks" / "jsb_chorales.npz"
