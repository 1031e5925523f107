"""Code cells a reader can take in at a glance: in every notebook listed in _toc.yml, the code cells
have a median of at most 10 lines and none has more than 30 (issue 12); the installer cell (the
first code cell, tagged remove-cell: tests/test_packaging.py checks it) is left out of the count and
is the only cell hidden from the reader."""

import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEDIAN_MAX, CELL_MAX = 10, 30


def _toc_notebooks():
    entries = re.findall(r"^\s*(?:root|- file):\s*(\S+)", (ROOT / "_toc.yml").read_text(), re.M)
    return [ROOT / f"{e}.ipynb" for e in entries if (ROOT / f"{e}.ipynb").is_file()]


def _code_cells(path):
    """[(index of the cell in the notebook, its number of lines)] of the code cells but the installer."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    if code and "remove-cell" in code[0][1]["metadata"].get("tags", []):
        code = code[1:]
    return [(i, len("".join(c["source"]).splitlines())) for i, c in code]


def test_every_numbered_chapter_is_checked():
    unchecked = set((ROOT / "book").glob("[0-9][0-9]_*.ipynb")) - set(_toc_notebooks())
    assert not unchecked, f"chapters this file does not read from _toc.yml: {sorted(p.name for p in unchecked)}"


@pytest.mark.parametrize("path", _toc_notebooks(), ids=lambda p: p.stem)
def test_code_cells_are_short(path):
    cells = _code_cells(path)
    assert cells, f"{path.stem}: no code cell besides the installer"
    median = statistics.median(n for _, n in cells)
    long = [f"cell {i} has {n} lines" for i, n in cells if n > CELL_MAX]
    problems = ([f"median {median:g} lines > {MEDIAN_MAX} over {len(cells)} code cells"] if median > MEDIAN_MAX
                else []) + long
    assert not problems, f"{path.stem} (cell indices count every cell from 0): " + "; ".join(problems)


@pytest.mark.parametrize("path", _toc_notebooks(), ids=lambda p: p.stem)
def test_only_the_installer_cell_is_hidden(path):
    hiding = {"remove-cell", "remove-input", "hide-cell", "hide-input", "hide-output", "remove-output"}
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    hidden = [i for i, c in enumerate(cells) if hiding & set(c["metadata"].get("tags", []))]
    assert hidden in ([], code[:1]), f"{path.stem}: cells {hidden} are hidden in the book; only the installer " \
                                     f"(cell {code[0]}) may be"
