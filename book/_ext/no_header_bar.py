"""Drop the page-wide header bar, which held nothing but a second search box.

sphinx-book-theme empties the pydata theme's header and keeps search in the
sidebar, but pydata-sphinx-theme (0.16 and later) fills the header's
``navbar_persistent`` slot with a search field whenever that option is unset.
Jupyter Book 1 writes ``html_theme_options`` itself from _config.yml (launch and
repository buttons), and setting it under ``sphinx: config:`` would replace the
whole dict, so this extension sets the one option once the configuration is read.
"""


def _no_persistent_search(app, config):
    config.html_theme_options.setdefault("navbar_persistent", [])


def setup(app):
    app.connect("config-inited", _no_persistent_search)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
