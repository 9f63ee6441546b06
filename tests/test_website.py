"""The built website asks nothing of the internet: no CDN scripts, styles or widget managers.

`python3 run.py test` builds the book (quick mode) into _build/quick before it runs pytest; this
test reads that build. Links to papers, Colab and the repository (<a href>) are allowed.
"""

import re
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parents[1] / "_build" / "quick" / "_build" / "html"
ASSET = re.compile(r'<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)="(https?:)?//([^"]+)"', re.I)


def pages():
    if not SITE.is_dir():
        pytest.skip(f"no built site at {SITE}: `python3 run.py test` builds it before the tests")
    return sorted(SITE.rglob("*.html"))


def test_no_page_loads_anything_from_another_host():
    found = {}
    for page in pages():
        external = ["//" + m.group(2) for m in ASSET.finditer(page.read_text(errors="replace"))
                    if not m.group(2).startswith(("colab.research.google.com",))]
        if external:
            found[str(page.relative_to(SITE))] = sorted(set(external))
    assert not found, f"pages that load assets from the internet: {found}"


def test_the_pattern_catches_a_cdn_script():
    html = '<script src="https://cdn.jsdelivr.net/npm/x.js"></script><a href="https://arxiv.org/abs/1">paper</a>'
    assert [m.group(2) for m in ASSET.finditer(html)] == ["cdn.jsdelivr.net/npm/x.js"]
