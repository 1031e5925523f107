"""Hygiene of the repository as a reader meets it: the two commands, clean notebooks, a complete
table of contents, conda and pip in step, and every public function pointing at its chapter."""

import importlib
import inspect
import json
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import pianolab

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_RE = re.compile(r"chapter (\d\d_[a-z0-9_]+)")


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_requirement(req):
    """'jupyter-book>=1.0.4,<2' -> ('jupyter-book', '>=1.0.4,<2'); extras and markers refused."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>=!~]=?\s*[^,\s]+\s*,?\s*)*)", req)
    assert m, f"cannot parse requirement {req!r}"
    return _normalize(m.group(1)), re.sub(r"\s+", "", m.group(2))


def _pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return dict(_split_requirement(r) for r in reqs)


# Entries of environment.yml that are not Python packages of pyproject.toml.
CONDA_ONLY = {"python", "pip", "fluidsynth"}


def _environment_requirements():
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    editable = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for item in dep.get("pip", []):
                if item.startswith("-e"):
                    editable.append(item)
                else:
                    name, spec = _split_requirement(item)
                    pip[name] = spec
        else:
            name, spec = _split_requirement(str(dep))
            conda[name] = spec
    return conda, pip, editable


def test_environment_yml_lists_the_same_packages_as_pyproject():
    wanted = _pyproject_requirements()
    conda, pip, editable = _environment_requirements()
    assert editable == ["-e ."], "environment.yml must install pianolab itself with `-e .` in its pip section"
    assert {"python", "pip"} <= set(conda)
    assert conda["python"] == ">=" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "requires-python"].lstrip(">=")
    listed = {k: v for k, v in conda.items() if k not in CONDA_ONLY}
    duplicated = set(listed) & set(pip)
    assert not duplicated, f"listed both as conda and pip packages: {sorted(duplicated)}"
    listed.update(pip)
    missing = sorted(set(wanted) - set(listed))
    extra = sorted(set(listed) - set(wanted))
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"
    differ = {k: (wanted[k], listed[k]) for k in wanted if wanted[k] != listed[k]}
    assert not differ, f"version ranges differ (pyproject, environment.yml): {differ}"


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().splitlines()[:8]
    commands = [line.split("#")[0].strip() for line in head]
    assert "make book" in commands and "make test" in commands, (
        "README.md must show `make book` and `make test` in its first lines, got:\n" + "\n".join(head)
    )
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def _notebooks():
    return sorted((ROOT / "book").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs():
    dirty = []
    for nb_path in _notebooks():
        nb = json.loads(nb_path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count")):
                dirty.append(f"{nb_path.name} cell {i}")
    assert not dirty, "notebooks stored with outputs (run `jupyter nbconvert --clear-output --inplace`): " + \
        ", ".join(dirty)


def _toc_files():
    yaml = pytest.importorskip("yaml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def _resolve(entry):
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / (entry + suffix)
        if path.is_file():
            return path
    return None


def test_every_toc_entry_exists_and_every_notebook_is_listed():
    entries = _toc_files()
    assert len(entries) == len(set(entries)), f"listed twice in _toc.yml: {entries}"
    missing = [e for e in entries if _resolve(e) is None]
    assert not missing, f"listed in _toc.yml but missing: {missing}"
    listed = {_resolve(e) for e in entries}
    unlisted = [p.name for p in _notebooks() if p not in listed]
    assert not unlisted, f"notebooks in book/ missing from _toc.yml: {unlisted}"


def test_toc_chapters_are_numbered_in_order():
    chapters = [Path(e).name for e in _toc_files()[1:]]
    # Each number once; the order may differ (09_pianonet_models sits right after 06_shallow_vs_deep).
    numbers = sorted(int(c[:2]) for c in chapters)
    assert numbers == list(range(1, len(chapters) + 1)), chapters
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+", c) for c in chapters), chapters


def _chapter_names():
    return {Path(e).name for e in _toc_files()[1:]}


def _public_objects():
    """(qualified name, object) of every public function and class defined in a pianolab module."""
    out = []
    for info in pkgutil.iter_modules(pianolab.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"pianolab.{info.name}")
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                out.append((f"{module.__name__}.{name}", obj))
    return out


def test_every_public_function_names_its_chapter():
    chapters = _chapter_names()
    without, unknown = [], []
    for qualname, obj in _public_objects():
        found = CHAPTER_RE.findall(inspect.getdoc(obj) or "")
        if not found:
            without.append(qualname)
        unknown.extend(f"{qualname} -> {c}" for c in found if c not in chapters)
    assert not unknown, "docstrings naming a chapter that is not in _toc.yml: " + ", ".join(unknown)
    assert not without, (
        "public functions/classes whose docstring names no chapter (write e.g. "
        "'(chapter 05_fast_wavenet)'): " + ", ".join(without)
    )
