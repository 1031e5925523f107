"""Small Sphinx fixes for the pianolab book, loaded from _config.yml (sphinx.local_extensions).

The built pages must load in a browser with no console errors and no network:

* Sphinx 7 writes a script that was added after the builder started (``app.add_js_file(None,
  body=...)``, as sphinx-thebe and sphinx-togglebutton do) into every page twice: once from the
  builder, once from the registry (``None`` and ``''`` compare unequal). The second copy of
  ``const THEBE_JS_URL = ...`` is a SyntaxError in the console. Duplicates are dropped here.
* Browsers ask for ``/favicon.ico`` on a page with no icon link; the book ships a real icon
  (``book/_extra/favicon.ico``, set in ``_config.yml``), so that request is not a 404.
"""


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


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
