"""Small Sphinx fixes for the pianolab book, loaded from _config.yml (sphinx.local_extensions).

The built pages must load in a browser with no console errors and no network:

* Sphinx 7 writes a script that was added after the builder started (``app.add_js_file(None,
  body=...)``, as sphinx-thebe and sphinx-togglebutton do) into every page twice: once from the
  builder, once from the registry (``None`` and ``''`` compare unequal). The second copy of
  ``const THEBE_JS_URL = ...`` is a SyntaxError in the console. Duplicates are dropped here.
* Browsers ask for ``/favicon.ico`` on a page with no icon link; the book ships a real icon
  (``book/_extra/favicon.ico``, set in ``_config.yml``), so that request is not a 404.

And the in-page generator and piano rolls: ``book/_static/web`` joins the static
files, every page loads its roll, piano and generator scripts (a page without a generator or a
player runs nothing), and after an HTML build the weights of the shipped models the generator
offers are written to ``_static/web/weights`` (``pianolab_web.py``), never committed.

And one switch for ``make test``, which runs every chapter once, under nbval: with
``PIANOLAB_EXECUTED=DIR`` the build executes nothing (MyST-NB's execution mode ``off``) and reads
each chapter from ``DIR/NAME.ipynb``, the copy with outputs that nbval wrote there
(``book/conftest.py``); a chapter missing from ``DIR`` stops the build.
"""

import os
from pathlib import Path

from sphinx.errors import ExtensionError


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""
        attributes = getattr(js, "attributes", {}) or {}
        key = (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    if len(unique) != len(scripts):
        scripts[:] = unique


def _render_executed(app, config):
    if os.environ.get("PIANOLAB_EXECUTED"):
        config.nb_execution_mode = "off"
        app.connect("source-read", _read_executed)


def _read_executed(app, docname, source):
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    executed = Path(os.environ["PIANOLAB_EXECUTED"]) / path.name
    if not executed.is_file():
        raise ExtensionError(f"{executed} is missing: run the chapters under nbval with "
                             f"--executed-into {executed.parent} first (make test does)")
    source[0] = executed.read_text(encoding="utf-8")


STATIC = Path(__file__).resolve().parent.parent / "_static"
PAGE_SCRIPTS = ("web/roll.js", "web/synth.js", "web/generator.js")


def _add_static(app, config):
    config.html_static_path = list(config.html_static_path) + [str(STATIC)]


def _add_scripts(app):
    for script in PAGE_SCRIPTS:
        app.add_js_file(script)


def _write_weights(app, exception):
    if exception is None and app.builder.format == "html":
        import sys
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import pianolab_web
        pianolab_web.export_all(Path(app.outdir) / "_static" / "web" / "weights")


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("config-inited", _render_executed)
    app.connect("config-inited", _add_static)
    app.connect("builder-inited", _add_scripts)
    app.connect("build-finished", _write_weights)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
