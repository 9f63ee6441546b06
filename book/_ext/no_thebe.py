"""Take Thebe (live code on the website) out of the book: the site has no kernel to connect to.

Jupyter Book 1 always loads sphinx-thebe, which puts an inline script declaring
``THEBE_JS_URL`` (a CDN address) on every page, twice when the environment is read
twice, so the browser logs "already declared". This extension unhooks sphinx-thebe's
page handlers once every extension is set up; the launch buttons to Colab stay.
"""


def _unhook_thebe(app):
    for listeners in app.events.listeners.values():
        listeners[:] = [entry for entry in listeners if not entry.handler.__module__.startswith("sphinx_thebe")]


def setup(app):
    app.connect("builder-inited", _unhook_thebe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
