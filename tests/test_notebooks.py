"""Every chapter notebook is committed clean, listed on the website, and gradable."""

import re
from pathlib import Path

import nbformat
import pytest

from sdlab.grading.release import student_version

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def grader(cell):
    return cell.metadata.get("nbgrader", {})


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs are committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_listed_in_table_of_contents(path):
    listed = set(re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text()))
    assert f"notebooks/{path.stem}" in listed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_sdlab_as_sd_and_never_star(path):
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "import sdlab as sd" in source
    assert "import *" not in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_follow_nbgrader_format(path):
    cells = nbformat.read(path, as_version=4).cells
    solutions = [i for i, c in enumerate(cells) if grader(c).get("solution")]
    ids = [grader(c)["grade_id"] for c in cells if grader(c)]
    assert len(ids) == len(set(ids)), "nbgrader grade_ids must be unique"
    chapter = int(path.name[:2])
    assert all(i.startswith(f"ch{chapter}-") for i in ids), "grade_ids name their chapter (unique in the course)"
    for i in solutions:
        assert "### BEGIN SOLUTION" in cells[i].source and "### END SOLUTION" in cells[i].source
        check = next(c for c in cells[i + 1 :] if c.cell_type == "code")
        assert grader(check).get("grade") and grader(check).get("locked"), "a graded check cell follows"
        assert "sd.checks." in check.source
        # a check returns True; a cell ending in the bare call would print a stray "True" on the page
        last = check.source.strip().splitlines()[-1]
        assert not re.fullmatch(r"sd\.checks\.check_\w+\(.*\)", last), f"end the check with ';': {last}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_has_no_solutions(path):
    nb = nbformat.read(path, as_version=4)
    student = student_version(nb, path.stem)
    assert student.metadata["sdlab"]["chapter"] == path.stem, "the grader recognises a renamed submission"
    solution_cells = [c for c in student.cells if grader(c).get("solution")]
    for cell in solution_cells:
        assert "BEGIN SOLUTION" not in cell.source
        hint = cell.metadata["sdlab"]["hint"]
        assert "raise NotImplementedError(" in cell.source, "the stub raises"
        assert repr(f"your answer goes here, then run the check below. Hint: {hint}") in cell.source, "with a hint"
        assert cell.source.lstrip().startswith("def "), "the student keeps the function signature"
    original = [c.source for c in nb.cells if grader(c).get("grade")]
    assert [c.source for c in student.cells if grader(c).get("grade")] == original, "checks are kept as they are"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_solutions_are_folded_away(path):
    # _config.yml labels every folded cell "Show solution": so only solution cells may be folded
    for cell in nbformat.read(path, as_version=4).cells:
        if "hide-input" in cell.metadata.get("tags", []):
            assert grader(cell).get("solution"), f"a folded cell that is not a solution: {cell.source[:60]!r}"


CODE_WIDTH = 80  # characters of code that fit the website's 688-px column (notebooks/ruff.toml formats to 79)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_fits_the_website_column(path):
    nb = nbformat.read(path, as_version=4)
    long = [(i, line) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > CODE_WIDTH]
    assert not long, f"{path.name}: {len(long)} code lines are wider than {CODE_WIDTH} characters, e.g. {long[0]}"


def _setting(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no match for {pattern!r}"
    return match.group(1)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_colab_set_up_cell_installs_this_repository_and_the_pinned_packages(path):
    url = _setting(r"^\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text())  # "the one place" naming the repository
    pin = _setting(r"^(animal-mnist==\S+)", (ROOT / "requirements-nodeps.txt").read_text())
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "code" and "google.colab" in first.source, f"{path.name}: cell 0 is not the set-up cell"
    assert f'"sdlab @ git+{url}"' in first.source, f"{path.name}: the set-up cell does not install {url}"
    assert f'"--no-deps", "{pin}"' in first.source, f"{path.name}: the set-up cell does not install {pin}"
    clip = _setting(r"^(clip-anytorch==\S+)", (ROOT / "requirements-nodeps.txt").read_text())
    if "sd.tokenizer" in "".join(cell.source for cell in nbformat.read(path, as_version=4).cells):
        assert f'"{clip}"' in first.source, f"{path.name} uses CLIP's vocabulary: its set-up cell must install {clip}"
    # pip's own "you may need to restart the kernel" (printed by %pip) would be wrong here: nothing was imported yet
    assert "%pip" not in first.source and "No restart is needed" in first.source
