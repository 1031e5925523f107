"""Atomic file writes, shared by every module that writes (not a pipeline stage).

A file is written to a temporary file in the same folder, flushed to disk, given the usual
permissions (``mkstemp`` makes it 0600) and renamed over the target with ``os.replace``: a reader,
or a run killed half-way, sees the old file or the new one, never half a file.
"""

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

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
