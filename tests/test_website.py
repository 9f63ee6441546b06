"""The built website asks nothing of the internet, and its chapters read well in the column.

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


# --- what a reader sees in the chapters' outputs ------------------------------------------------------------

COLUMN_CHARACTERS = 80  # the 688-pixel text column holds about 80 characters of monospace
# A figure wider than the column (6.88 in at 100 dpi) is shrunk, and its text with it. Up to 7.5 in (the
# inline backend's tight box adds 0.1 in of margin to sdlab's 6.9-in figures), text of MIN_POINTS or more
# stays at least 10 px high: 8 pt x 100/72 px/pt x 688/750 = 10.2 px.
COLUMN_INCHES = 7.5
MIN_POINTS = 8
FONT_SIZE = re.compile(r"\b(?:fontsize|labelsize|font\.size)\W{1,5}(\d+(?:\.\d+)?)")
FROZEN_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+\s*\[")
RAW_TABLE = re.compile(r"^\s*\|.*\|\s*$\n^\s*\|[\s:|-]*-{3,}[\s:|-]*\|\s*$", re.M)


def chapters():
    from bs4 import BeautifulSoup

    found = [page for page in pages() if page.parent.name == "notebooks"]
    assert found, "the build has no chapter pages"
    return [(page.name, BeautifulSoup(page.read_text(errors="replace"), "html.parser")) for page in found]


def figures():
    """(page, <img>) of every figure a chapter's cells drew: image files, not a player's inline frames."""
    return [(name, img) for name, soup in chapters() for img in soup.select("div.cell_output img[src]")
            if not img["src"].startswith("data:")]


def output_text(soup) -> list[str]:
    return [block.get_text() for block in soup.select("div.cell_output")]


def test_printed_markdown_tables_are_rendered_as_tables():
    raw = {name: RAW_TABLE.findall("\n".join(output_text(soup))) for name, soup in chapters()}
    assert not any(raw.values()), f"tables shown as raw | a | b | text: {raw}"
    assert any(soup.select("div.cell_output table") for _, soup in chapters()), "no cell prints a table any more?"


def test_no_progress_bar_is_frozen_on_a_page():
    frozen = {name: FROZEN_BAR.findall("\n".join(output_text(soup))) for name, soup in chapters()}
    assert not any(frozen.values()), f"progress bars left on the page: {frozen}"


def test_printed_lines_fit_the_column():
    wide = [(name, line) for name, soup in chapters() for block in soup.select("div.cell_output pre")
            for line in block.get_text().splitlines() if len(line) > COLUMN_CHARACTERS]
    assert not wide, f"printed lines wider than {COLUMN_CHARACTERS} characters: {wide}"


def test_figures_are_drawn_for_the_column():
    from PIL import Image

    wide = []
    for name, img in figures():
        with Image.open(SITE / "notebooks" / img["src"]) as image:
            dpi = image.info.get("dpi", (100, 100))[0]
            if image.width / dpi > COLUMN_INCHES:
                wide.append((name, img["src"], f"{image.width / dpi:.1f} in"))
    assert not wide, f"figures wider than the column, whose text the page shrinks below 10 px: {wide}"


def test_every_figure_has_a_caption_and_alt_text_that_describes_it():
    bare = []
    for name, img in figures():
        figure = img.find_parent("figure")
        alt = img.get("alt", "")
        if figure is None or figure.find("figcaption") is None or "_images/" in alt or len(alt.split()) < 5:
            bare.append((name, img["src"][-20:], alt[:40]))
    assert not bare, f"figures without a caption or with a file name for alt text: {bare}"


def test_figure_text_is_never_set_below_8_points():
    root = Path(__file__).resolve().parents[1]
    sources = [*sorted((root / "notebooks").glob("*.ipynb")), *sorted((root / "sdlab").rglob("*.py"))]
    small = [(path.name, size) for path in sources for size in FONT_SIZE.findall(path.read_text())
             if float(size) < MIN_POINTS]
    assert not small, f"figure text set below {MIN_POINTS} points (under 10 px on the page): {small}"
    assert FONT_SIZE.findall('ax.legend(fontsize=7)\nplt.rcParams["font.size"] = 6') == ["7", "6"]


def test_no_page_declares_thebe():
    declared = [page.name for page in pages() if "THEBE_JS_URL" in page.read_text(errors="replace")]
    assert not declared, f"pages that still load Thebe's configuration: {declared}"


def test_the_patterns_catch_a_frozen_bar_and_a_raw_table():
    assert FROZEN_BAR.search("DDPM:   0%|          | 0/1000 [00:00<?, ?it/s]")
    assert RAW_TABLE.search("| sampler | steps |\n|---|---|\n| DDIM | 50 |")
    assert not RAW_TABLE.search("| just a line |")


def test_the_bibliography_lists_every_reference_once():
    root = Path(__file__).resolve().parents[1]
    keys = re.findall(r"^@\w+\{([^,\s]+),", (root / "book" / "references.bib").read_text(), re.M)
    listed = re.findall(r'"([^"]+)"', "\n".join(re.findall(r"^:filter: key in \{(.*)\}$",
                                                            (root / "book" / "bibliography.md").read_text(), re.M)))
    assert sorted(listed) == sorted(keys), "book/bibliography.md must list each entry of references.bib once"
