"""Serve MathJax from the book itself, so equations render with no network.

The pinned PyPI package django-static-mathjax carries MathJax 3.2.2's files;
this extension copies its self-contained SVG build into the site's _static
folder and points Sphinx at it instead of a CDN.
"""

import shutil
from importlib import resources
from pathlib import Path

MATHJAX_FILE = "tex-svg.js"  # one file, no web fonts needed


def _copy_mathjax(app, exception):
    if exception is None and app.builder.format == "html":
        source = resources.files("mathjax") / "static" / "mathjax" / "es5" / MATHJAX_FILE
        target = Path(app.outdir) / "_static" / "mathjax"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / MATHJAX_FILE)


def setup(app):
    app.config.mathjax_path = f"mathjax/{MATHJAX_FILE}"
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
