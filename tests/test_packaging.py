"""Hygiene of the repository as a reader meets it: the two commands, clean notebooks, a complete
table of contents, conda and pip in step, and every public function pointing at its chapter."""

import dataclasses
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
import sys
import tomllib
from pathlib import Path

import pytest

import pianolab

ROOT = Path(__file__).resolve().parent.parent
PAGE = r"(?:\d\d_[a-z0-9_]+|appendix_[a-z]_[a-z0-9_]+)"  # a chapter or an appendix page of the book
CHAPTER_RE = re.compile(rf"\b(?:chapters? {PAGE}(?:(?:,| and|, and) {PAGE})*|appendix_[a-z]_[a-z0-9_]+)")


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


def test_make_lab_opens_the_chapters_in_jupyterlab_from_the_lab_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "jupyterlab" in {_split_requirement(r)[0] for r in extras["lab"]}
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^lab:(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert rule and "corpus" in rule.group(1) and "jupyter lab book/" in rule.group(2)
    assert re.search(r"pip install .*\[[^]]*lab[^]]*\]", makefile), "no rule installs the lab extra"
    for doc in ("README.md", "book/intro.ipynb"):
        text = (ROOT / doc).read_text()
        assert "make lab" in text and "pip install jupyterlab" not in text, doc


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


def test_toc_chapters_are_numbered_in_reading_order():
    """Chapters NN_name in the toc's order, 01 up; then the appendices, appendix_X_name, X from a up."""
    names = [Path(e).name for e in _toc_files()[1:]]
    chapters = [n for n in names if re.fullmatch(r"\d\d_[a-z0-9_]+", n)]
    appendices = names[len(chapters):]
    assert [int(c[:2]) for c in chapters] == list(range(1, len(chapters) + 1)), names
    assert all(re.fullmatch(rf"appendix_{chr(97 + i)}_[a-z0-9_]+", a) for i, a in enumerate(appendices)), names


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


def _pianolab_objects_used(tree):
    """The pianolab objects a chapter's code refers to: names imported from a pianolab module, and
    attributes of a pianolab module bound to a name (``from pianolab import data`` ... ``data.dataset_statistics``)."""
    import ast

    modules, found = {}, set()  # local name -> pianolab module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pianolab":
            for alias in node.names:
                try:  # a submodule (from pianolab import data), else a name in the module
                    obj = importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    obj = getattr(importlib.import_module(node.module), alias.name, None)
                if inspect.ismodule(obj):
                    modules[alias.asname or alias.name] = obj
                else:
                    found.add(id(obj))
        elif isinstance(node, ast.Import):
            for alias in (a for a in node.names if a.name.split(".")[0] == "pianolab"):
                modules[alias.asname or alias.name] = importlib.import_module(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = ast.unparse(node.value)
            module = modules.get(base) or (sys.modules.get(base) if base.startswith("pianolab.") else None)
            if module is not None and hasattr(module, node.attr):
                found.add(id(getattr(module, node.attr)))
    return found


def _chapter_uses():
    """{chapter: ids of the pianolab objects its code cells use}, read with ``ast`` (so a name in a
    string, a comment or another library's ``load`` does not count); ``python -m pianolab`` in a
    subprocess counts as a use of :func:`pianolab.cli.main`."""
    import ast

    import nbformat
    from pianolab import cli

    used = {}
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        code = [c.source for c in nbformat.read(path, 4).cells if c.cell_type == "code"]
        source = "\n".join(line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
        used[path.stem] = _pianolab_objects_used(ast.parse(source))
        if any(re.search(r'"-m",\s*"pianolab"', cell) for cell in code):
            used[path.stem].add(id(cli.main))
    return used


def _records(obj):
    """Exceptions, dataclasses and named tuples are met in a chapter, not called: their tag must name one
    that exists."""
    return inspect.isclass(obj) and (issubclass(obj, (BaseException, tuple)) or dataclasses.is_dataclass(obj))


def test_every_public_function_names_the_chapter_that_calls_it():
    """libfmp's convention: a public function's docstring names the chapter that uses it, and that
    chapter's code really calls it (its name appears in a code cell); what no chapter calls is private."""
    used, chapters = _chapter_uses(), _chapter_names()
    without, unknown, not_called = [], [], []
    for qualname, obj in _public_objects():
        found = [c for tag in CHAPTER_RE.findall(inspect.getdoc(obj) or "") for c in re.findall(PAGE, tag)]
        if not found:
            without.append(qualname)
        unknown.extend(f"{qualname} -> {c}" for c in found if c not in chapters)
        if found and not _records(obj) and not any(id(obj) in used.get(c, ()) for c in found):
            not_called.append(f"{qualname} -> {', '.join(found)}")
    assert not unknown, "docstrings naming a chapter that is not in _toc.yml: " + ", ".join(unknown)
    assert not without, (
        "public functions/classes whose docstring names no chapter (write e.g. "
        "'(chapter 05_fast_wavenet)'): " + ", ".join(without)
    )
    assert not not_called, "docstrings naming a chapter that never calls them: " + "; ".join(not_called)


def _installer_cell():
    spec = importlib.util.spec_from_file_location("installer_cell", ROOT / "book" / "_ext" / "installer_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_opens_with_the_installer_for_the_configured_repository():
    """The repository URL is set once, in _config.yml; each chapter's first code cell (hidden in the
    book) installs pianolab from it where the kernel lacks pianolab (Colab, a bare Jupyter)."""
    installer = _installer_cell()
    url, branch = installer.repository()
    expected = installer.source()
    assert f"pianolab @ git+{url}@{branch}" in expected
    wrong = []
    for nb_path in _notebooks():
        first = next(c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code")
        if "".join(first["source"]) != expected or "remove-cell" not in first["metadata"].get("tags", []):
            wrong.append(nb_path.name)
    assert not wrong, f"installer cell out of step with _config.yml in {wrong}: run `make installer-cells`"
    prose = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "environment.yml", *ROOT.glob("book/*.md"),
             *ROOT.glob("pianolab/*.py")]
    elsewhere = [p.relative_to(ROOT).as_posix() for p in prose if url in p.read_text()]
    assert not elsewhere, f"the repository URL is written out in {elsewhere}; say `repository.url in _config.yml`"


# ---------------------------------------------------------------- the wheel, away from the checkout

# Run by the wheel's pianolab in a throwaway venv, from a folder outside the repository: the
# shipped deep model plays two seconds, the shipped JSB model scores the first test chorale.
WHEEL_USE = """
import json, sys
from pathlib import Path
import pianolab
from pianolab import benchmark, settings
from pianolab.generate import generate
from pianolab.runs import load_model, load_run

rolls = generate(load_model("deep"), seconds=2, progress=False, random_seed=0)
_, model = load_run("jsb")
data = benchmark.load("jsb")
print(json.dumps({
    "pianolab": pianolab.__file__, "models": str(settings.models_dir()), "jsb": str(settings.jsb_path()),
    "roll": list(rolls[0].shape), "notes": int(rolls[0].sum()),
    "pieces": [len(data[s]) for s in benchmark.SPLITS],
    "nll": benchmark.nll_per_frame(model, data["test"][:1])["nll"]}))
"""


def _repository_files():
    """The files a clone holds (tracked, plus new files git does not ignore), as regular files."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the wheel is built from the files a clone holds")
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file() and not (ROOT / p).is_symlink()]


@pytest.mark.slow
def test_wheel_carries_models_and_benchmarks_and_runs_outside_the_repository(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    def run(cmd, **kw):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
        assert done.returncode == 0, f"{' '.join(cmd[:4])} ...: {done.stderr[-3000:]}"
        return done.stdout.strip()

    # 1. build the wheel from a copy of what a clone holds (as `pip install git+URL` does)
    src = tmp_path / "src"
    files = _repository_files()
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)])
    (wheel,) = tmp_path.glob("pianolab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"pianolab/_data/" + f[len("data/"):] for f in files
               if f.startswith("data/models/") or (f.startswith("data/benchmarks/") and f.endswith(".npz"))}
    assert shipped and shipped <= names, f"missing from the wheel: {sorted(shipped - names)[:5]}"
    assert not [n for n in names if "/corpus/" in n or "/datasets/" in n]
    assert wheel.stat().st_size < 30e6, f"wheel of {wheel.stat().st_size / 1e6:.1f} MB"

    # 2. a throwaway venv that sees the project venv's dependencies (a .pth line, which does not run
    # the project venv's own .pth files, so an editable pianolab there stays invisible)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = dict.fromkeys(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "project_dependencies.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIANOLAB_"))}
    env.update(PIANOLAB_DATA=str(tmp_path / "data"), TF_CPP_MIN_LOG_LEVEL="2")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = run([python, "-c", "import importlib.util; print(importlib.util.find_spec('pianolab'))"],
                cwd=elsewhere, env=env)
    assert found == "None", f"the throwaway venv already sees a pianolab: {found}"
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=elsewhere, env=env)

    # 3. a real use, from a folder outside the repository
    got = json.loads(run([python, "-c", WHEEL_USE], cwd=elsewhere, env=env).splitlines()[-1])
    installed = Path(site) / "pianolab"
    for key in ("pianolab", "models", "jsb"):
        assert Path(got[key]).is_relative_to(installed), f"{key} came from {got[key]}, not the wheel"
    from pianolab import benchmark
    from pianolab.runs import load_run

    assert got["roll"] == [96, 72] and got["notes"] > 0  # 2 s at 48 steps/s, 72 keys
    data = benchmark.load("jsb")
    assert got["pieces"] == [len(data[s]) for s in benchmark.SPLITS]
    _, model = load_run("jsb")
    assert got["nll"] == pytest.approx(benchmark.nll_per_frame(model, data["test"][:1])["nll"], rel=1e-5)


# ---------------------------------------------------------------- the package's shape

STAGES = ["errors", "_io", "settings", "encoding", "plots", "corpus", "data", "windows", "model", "benchmark", "config",
          "runs", "_trainer", "train", "pianonet", "_kernel", "generate", "audio", "metrics", "cli", "__main__"]


def _pianolab_imports(path):
    """The pianolab modules a module imports, at the top or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pianolab."):
            found.add(node.module.split(".")[1])
    return found


def test_data_flows_one_way_through_the_stages():
    """No module imports a later stage, not even lazily inside a function: no import cycles."""
    modules = sorted(p.stem for p in (ROOT / "pianolab").glob("*.py") if p.stem != "__init__")
    assert sorted(STAGES) == modules, "a module is missing from STAGES (say where it sits in the pipeline)"
    upward = [f"{m} imports {i}" for m in STAGES for i in _pianolab_imports(ROOT / "pianolab" / f"{m}.py")
              if i in STAGES and STAGES.index(i) >= STAGES.index(m)]
    assert not upward, upward


def test_modules_stay_small():
    """A tiny package: no module over 400 lines, the numba kernel at most 300, all the rest 3,200 (the
    budget held although the float64 proofs, the roll under every player and the chapters' shared table,
    segment and page-seed helpers came: one way into plot_loss, one-use helpers inlined, checks made once)."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "pianolab").glob("*.py")}
    assert max(sizes.values()) <= 400, sizes
    assert sizes["_kernel.py"] <= 300
    assert sum(sizes.values()) - sizes["_kernel.py"] <= 3200, sizes


# ---------------------------------------------------------------- the seams between modules

def _code_files():
    """(label, own pianolab module or None, parsed source) of every file whose code uses pianolab:
    the package, the tests, the scripts, the book's helpers and chapters' code cells (code in a
    string, such as a test's subprocess script, is not read)."""
    import ast

    files = [*ROOT.glob("pianolab/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("book/*.py"), *ROOT.glob("data/models/*.py"), *ROOT.glob("data/benchmarks/*.py")]
    out = [(p.relative_to(ROOT).as_posix(), p.stem if p.parent.name == "pianolab" else None, ast.parse(p.read_text()))
           for p in files]
    for path in _notebooks():
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        source = "\n".join(line for c in cells for line in "".join(c["source"]).splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        out.append((f"book/{path.name}", None, ast.parse(source)))
    return out


def _imported_module(node, own):
    """The pianolab module name a ``from ... import`` reads from (None: not pianolab)."""
    if node.level == 1:  # inside the package
        return node.module
    if (node.module or "").startswith("pianolab."):
        return node.module.split(".", 1)[1]
    return None


def _defined_names(module):
    """The names a pianolab module defines at its top level (def, class, assignment), not imports."""
    import ast

    tree = ast.parse((ROOT / "pianolab" / f"{module}.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def test_every_name_is_imported_from_the_module_that_defines_it():
    """One import path per name: ``from pianolab.runs import load_model`` (or ``runs.load_model``), never
    through a module that merely imported it (the package re-exports nothing)."""
    import ast

    modules = {p.stem for p in (ROOT / "pianolab").glob("*.py")}
    wrong = []
    for label, own, tree in _code_files():
        aliases = {a.asname or a.name: a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and (n.module == "pianolab" or (n.level == 1 and n.module is None)) for a in n.names}
        wrong += [f"{label}: {ast.unparse(n)}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                  and aliases.get(ast.unparse(n.value)) in modules and not n.attr.startswith("__")
                  and n.attr not in _defined_names(aliases[ast.unparse(n.value)]) | modules
                  and not inspect.ismodule(getattr(importlib.import_module(f"pianolab.{aliases[ast.unparse(n.value)]}"),
                                                   n.attr, None))]  # e.g. monkeypatching audio.os
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)):
            module = _imported_module(node, own)
            if module is None and node.module == "pianolab":
                module = "__init__"
            if module not in modules:
                continue
            defined = _defined_names(module)
            wrong += [f"{label}: {a.name} from pianolab.{module}" for a in node.names
                      if a.name not in defined and a.name != "*" and not (module == "__init__" and a.name in modules)]
    assert not wrong, "names imported from a module that does not define them: " + "; ".join(sorted(set(wrong)))


def _private(name):
    return name.startswith("_") and not (name.startswith("__") or re.fullmatch(r"_repr_\w+_", name))


def test_no_module_borrows_another_modules_private_helpers():
    """A helper is either private to its module or public and documented (helpers the stages share
    live in ``pianolab._io``): nothing outside module ``X`` uses ``X._name`` or imports ``_name`` from
    it. ``tests/test_X.py``, the unit tests of ``X``, may reach into ``X`` itself, and no further."""
    import ast

    wrong = []
    for label, own, tree in _code_files():
        tested = re.fullmatch(r"tests/test_(\w+)\.py", label)
        mine = {own, tested and tested.group(1)} - {None}
        aliases = {}  # local name -> pianolab module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = _imported_module(node, own)
                if node.module == "pianolab" or (node.level == 1 and node.module is None):
                    aliases.update({a.asname or a.name: a.name for a in node.names})
                elif module is not None:
                    wrong += [f"{label}: from pianolab.{module} import {a.name}" for a in node.names
                              if _private(a.name) and module not in mine]
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name.split(".", 1)[1] for a in node.names
                                if a.name.startswith("pianolab.") and a.asname})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = ast.unparse(node.value)
                module = aliases.get(base) or (base.split(".", 1)[1] if base.startswith("pianolab.") else None)
                if module is not None and module not in mine:
                    wrong.append(f"{label}: {base}.{node.attr}")
    assert not wrong, "private helpers used outside their module: " + "; ".join(sorted(set(wrong)))
