"""What the stages share, not a pipeline stage: atomic writes, JSON and progress bars, roll checks.

A file is written to a temporary file in the same folder (made if missing, so writers never make
their folders), flushed to disk, given the usual permissions (``mkstemp`` makes it 0600) and renamed
over the target with ``os.replace``: a reader, or a run killed half-way, sees the old file or the
new one, never half a file.
"""

import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}(\.tmp|\.keras|\.weights\.h5|\.npy)$")  # the names mkstemp gives below


@contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yield a temporary path next to ``path`` (ending in ``suffix``, for writers that look at it); on
    success it replaces ``path``, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path, data):
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def save_model(model, path):
    """``model.save`` to ``path`` (a ``.keras`` file) atomically; returns the path."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def remove_temp_files(folder):
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when a writer was killed (only
    names of that exact shape); returns their names."""
    folder = Path(folder)
    gone = sorted(p.name for p in folder.glob(".*") if p.is_file() and _TEMP.match(p.name)) if folder.is_dir() else []
    for name in gone:
        (folder / name).unlink(missing_ok=True)
    return gone


def read_json(path):
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def progress(iterable=None, *, enabled, total=None, desc=None, unit="piece", initial=0):
    """The stages' one kind of progress bar: tqdm on stderr (``enabled=False``: silent)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def check_roll(roll, n_keys=None):
    """``roll`` as a uint8 array ``[time steps, n_keys]`` of 0s and 1s, or a ValueError."""
    roll = np.asarray(roll)
    if roll.ndim != 2 or (n_keys is not None and roll.shape[1] != n_keys):
        raise ValueError(f"expected a roll of shape [time steps, {n_keys or 'keys'}], got {roll.shape}")
    if roll.size and not np.isin(roll, (0, 1)).all():
        raise ValueError("a piano roll holds only 0 and 1")
    return roll.astype(np.uint8, copy=False)


def pedal_spans(instrument, open_end=np.inf):
    """``[(down, up), ...]`` times of the sustain pedal (controller 64 >= 64) on one instrument, one still
    down at the end going up at ``open_end``."""
    spans, down_at = [], None
    for time, down in sorted(((c.time, c.value >= 64) for c in instrument.control_changes if c.number == 64),
                             key=lambda x: x[0]):
        if down and down_at is None:
            down_at = time
        elif not down and down_at is not None:
            spans, down_at = spans + [(down_at, time)], None
    return spans + ([(down_at, max(open_end, down_at))] if down_at is not None else [])
