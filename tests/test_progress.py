"""Progress bars show in Jupyter and terminals, and never in the kernels that build the website."""

import io

import sdlab as sd


def test_a_bar_counts_its_steps(monkeypatch):
    monkeypatch.delenv(sd.progress.NO_PROGRESS_ENV, raising=False)
    out = io.StringIO()
    assert list(sd.progress.bar(range(3), desc="steps", file=out, ascii=True)) == [0, 1, 2]
    assert "steps: 100%" in out.getvalue() and "3/3" in out.getvalue()


def test_no_bar_while_the_book_is_built(monkeypatch):
    monkeypatch.setenv(sd.progress.NO_PROGRESS_ENV, "1")
    out = io.StringIO()
    assert list(sd.progress.bar(range(3), desc="steps", file=out)) == [0, 1, 2]
    assert out.getvalue() == ""


def test_the_course_makes_every_bar_through_sdlab_progress():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    direct = [p.name for p in [*root.glob("sdlab/**/*.py"), *root.glob("notebooks/*.ipynb")]
              if "tqdm(" in p.read_text() and p.name != "progress.py"]
    assert not direct, f"bars made with tqdm directly, which the website would show frozen: {direct}"
