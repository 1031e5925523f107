"""The first cell of every chapter: install pianolab where the kernel lacks it.

Colab (the launch buttons) opens a chapter straight from GitHub with nothing beside it, so that
cell must name the repository to install from. The one place to set it is ``repository`` (``url``
and ``branch``) in ``_config.yml``, which the launch buttons read too; this script writes it into
every chapter's installer cell:

    make installer-cells        # = .venv/bin/python book/_ext/installer_cell.py

``tests/test_packaging.py`` fails while a chapter's installer cell differs from :func:`source`.
Only this cell changes; the notebooks keep nbformat's layout and no outputs.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """\
# Colab or any Jupyter runtime without pianolab: install it, with its shipped models and benchmark
# data, from the repository named in _config.yml (`make installer-cells` writes it here).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("pianolab") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "pianolab @ git+{url}@{branch}"], check=True)
    importlib.invalidate_caches()"""


def repository(root=ROOT):
    """``(url, branch)`` from ``_config.yml``."""
    import yaml

    repo = yaml.safe_load((Path(root) / "_config.yml").read_text(encoding="utf-8"))["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def source(root=ROOT):
    url, branch = repository(root)
    return TEMPLATE.format(url=url, branch=branch)


def chapters(root=ROOT):
    return sorted((Path(root) / "book").glob("*.ipynb"))  # the chapters and the intro page


def write(root=ROOT):
    """Rewrite the installer cell (the first code cell, tagged remove-cell) of every chapter."""
    lines = source(root).splitlines(keepends=True)
    changed = []
    for path in chapters(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(cell["source"]) != "".join(lines):
            cell["source"] = lines
            cell["metadata"] = dict(cell["metadata"], tags=["remove-cell"])
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            changed.append(path.name)
    return changed


if __name__ == "__main__":
    done = write(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print(f"installer cell written to {len(done)} chapter(s)" + (f": {', '.join(done)}" if done else ""))
