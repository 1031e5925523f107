"""Code cells a reader can take in at a glance: in every notebook listed in _toc.yml, the code cells
have a median of at most 10 lines and none has more than 30 (issue 12); the installer cell (the
first code cell, tagged remove-cell: tests/test_packaging.py checks it) is left out of the count; it and the
exercises' worked solutions (collapsed) are the only cells hidden from the reader."""

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


def _exercises(cells):
    """Index of the cell holding the "## Exercises" heading, or None."""
    return next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                 and re.search(r"^## Exercises\s*$", "".join(c["source"]), re.M)), None)


@pytest.mark.parametrize("path", _toc_notebooks(), ids=lambda p: p.stem)
def test_only_the_installer_and_the_solutions_are_hidden(path):
    """Before the exercises nothing is hidden but the installer (a check the page makes is in view, or in
    tests/); after them every code cell is a worked solution, collapsed (tag hide-cell)."""
    hiding = {"remove-cell", "remove-input", "hide-cell", "hide-input", "hide-output", "remove-output"}
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    start = _exercises(cells)
    start = len(cells) if start is None else start
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    hidden = [i for i, c in enumerate(cells[:start]) if hiding & set(c["metadata"].get("tags", []))]
    assert hidden in ([], code[:1]), f"{path.stem}: cells {hidden} are hidden in the book; only the installer " \
                                     f"(cell {code[0]}) may be"
    shown = [i for i in code if i > start and cells[i]["metadata"].get("tags", []) != ["hide-cell"]]
    assert not shown, f"{path.stem}: code cells {shown} after the exercises are not collapsed solutions (tag hide-cell)"


@pytest.mark.parametrize("path", [p for p in _toc_notebooks() if re.match(r"\d\d_", p.stem)], ids=lambda p: p.stem)
def test_every_exercise_has_a_worked_solution(path):
    """Each numbered exercise ("N. ..." at the start of a line) has a collapsed answer, a markdown cell
    opening ":::{admonition} Solution to exercise N" with ":class: dropdown", executed code (if any) after it."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    start = _exercises(cells)
    assert start is not None, f"{path.stem}: no '## Exercises' section"
    text = ["".join(c["source"]) for c in cells[start:] if c["cell_type"] == "markdown"]
    asked = {int(n) for n in re.findall(r"^(\d+)\. ", text[0].split("## Exercises", 1)[1], re.M)}
    solved = {int(n) for t in text[1:] for n in re.findall(r"^:::\{admonition\} Solution to exercise (\d+)\n:class: dropdown", t, re.M)}
    assert asked and asked == solved, f"{path.stem}: exercises {sorted(asked)}, solutions {sorted(solved)}"


FIGURE = re.compile(r"\bplt\.(subplots|figure)\(|\bplots\.plot_\w+\(")


def test_figures_are_numbered_captioned_and_referenced():
    """A code cell that draws (plt.subplots / plt.figure / plots.plot_*) is a numbered figure: cell metadata
    mystnb.figure with a caption and a name, the name unique in the book and cited ({numref}) in its page, and
    nothing else shown by the cell (each output would become a figure of that name)."""
    names, problems = {}, []
    for path in _toc_notebooks():
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        prose = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        for i, c in enumerate(cells):
            if c["cell_type"] != "code" or not FIGURE.search("".join(c["source"])):
                continue
            fig = c["metadata"].get("mystnb", {}).get("figure", {})
            name = fig.get("name", "")
            if "audio.player" in "".join(c["source"]):  # MyST-NB wraps every output: a player would repeat the name
                problems.append(f"{path.stem} cell {i}: a figure cell shows a player too (give it its own cell)")
            if not (fig.get("caption") and re.fullmatch(r"fig-[a-z0-9-]+", name)):
                problems.append(f"{path.stem} cell {i}: no mystnb.figure caption and name 'fig-...'")
            elif name in names:
                problems.append(f"{path.stem} cell {i}: figure name {name} also in {names[name]}")
            elif f"{{numref}}`{name}`" not in prose and not re.search(rf"{{numref}}`[^`<]*<{name}>`", prose):
                problems.append(f"{path.stem} cell {i}: {name} is not cited with {{numref}} in the page")
            names.setdefault(name, path.stem)
    assert not problems, f"{len(problems)} figures: " + "; ".join(problems[:12])
