"""Keeps what nbval executed, so that ``make test`` runs every chapter once.

``pytest --nbval-lax book --executed-into DIR`` writes each chapter whose cells all passed to
``DIR/NAME.ipynb``, with the outputs nbval collected from the kernel (a chapter with a failing
cell leaves no file). ``PIANOLAB_EXECUTED=DIR jupyter-book build ...`` then renders those
notebooks instead of executing the chapters again (``book/_ext/pianolab_book.py``).
"""

from pathlib import Path

import nbformat
import pytest

_failed = set()


def pytest_addoption(parser):
    parser.addoption("--executed-into", metavar="DIR", default=None,
                     help="write each chapter that passed, with its outputs, to DIR/NAME.ipynb")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        _failed.add(item.parent.nodeid)


def pytest_runtest_teardown(item, nextitem):
    folder = item.config.getoption("--executed-into")
    if not folder or not hasattr(item, "test_outputs"):  # not an nbval cell
        return
    notebook = item.parent
    if item.test_outputs is not None:  # the cell ran: its outputs go into nbval's copy of the notebook
        notebook._executed = getattr(notebook, "_executed", 0) + 1
        item.cell.outputs = item.test_outputs
        item.cell.execution_count = notebook._executed
    if nextitem is not None and nextitem.parent is notebook:
        return
    out = Path(folder) / Path(str(notebook.fspath)).name
    out.unlink(missing_ok=True)
    if notebook.nodeid not in _failed:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.validate(notebook.nb)
        tmp = out.with_suffix(".tmp")
        nbformat.write(notebook.nb, str(tmp))
        tmp.replace(out)
