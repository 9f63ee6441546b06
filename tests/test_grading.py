"""End to end: release chapter 1, fill student copies with right, wrong, crashing, looping and
cheating answers, grade the folder, and compare the CSV row by row."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import nbformat
import pytest

import sdlab
from sdlab.grading.exercises import course_notebooks, exercises_of, find_answers, which_chapter
from sdlab.grading.grader import grade_folder, student_of
from sdlab.grading.release import write_release

CHAPTER = "01_forward_diffusion"
EX1, EX2 = "ch1-ex1-alphas-cumprod", "ch1-ex2-add-noise"

RIGHT1 = "def my_alphas_cumprod(betas):\n    return torch.cumprod(1 - betas, dim=0)\n"
RIGHT2 = ("def my_add_noise(x0, noise, t, alphas_cumprod):\n    a = alphas_cumprod[t]\n"
          "    return a.sqrt() * x0 + (1 - a).sqrt() * noise\n")

# student -> (answer for exercise 1, answer for exercise 2, expected points, fragments of the feedback)
SUBMISSIONS = {
    "right": (RIGHT1, RIGHT2, (1, 1), ("right", "right")),
    "wrong": ("def my_alphas_cumprod(betas):\n    return torch.cumsum(1 - betas, 0)\n",
              "def my_add_noise(x0, noise, t, ab):\n    return ab[t] * x0 + (1 - ab[t]) * noise\n",
              (0, 0), ("cumsum instead of cumprod", "forgot the square roots")),
    "crashing": ("1 / 0\n" + RIGHT1,  # the cell fails before it defines the function
                 "def my_add_noise(x0, noise, t, ab):\n    return x0.no_such_method()\n",
                 (0, 0), ("the answer cell failed: ZeroDivisionError", "raised AttributeError")),
    "looping": ("def my_alphas_cumprod(betas):\n    while True:\n        pass\n",
                "while True:\n    pass\n",
                (0, 0), ("took longer than", "ran past its time limit")),
    "global schedule": (  # right for the notebook's inputs only: the grader's hidden ones catch it
        "def my_alphas_cumprod(betas):\n    return schedule.alphas_cumprod.to(betas.dtype)\n",
        "def my_add_noise(x0, noise, t, ab):\n    return schedule.add_noise(x0, noise, t).to(x0.dtype)\n",
        (0, 0), ("notebook's `schedule`", "notebook's `schedule`")),
    "copies the visible answers": (  # a spy records the notebook check's inputs; the answer replays its values
        "_memo = {}\ndef _spy(betas):\n    _memo[len(betas)] = torch.cumprod(1 - betas, 0)\n"
        "    return _memo[len(betas)]\nsd.checks.check_alphas_cumprod(_spy)\n"
        "def my_alphas_cumprod(betas):\n    return _memo.get(len(betas), torch.ones_like(betas)).to(betas.dtype)\n",
        RIGHT2, (0, 1), ("passed the notebook's check, but not the grader's other inputs", "right")),
    "patches the checks": (
        "import sdlab.checks, sdlab.checks.core, sdlab.grading\n"
        "sdlab.checks.check_alphas_cumprod = lambda *a, **k: True\n"
        "sdlab.checks.core.close = lambda *a, **k: True\n"
        "sdlab.checks.core.Exercise.judge = lambda *a, **k: None\n"
        "sdlab.checks.EXERCISES.clear()\n"
        "def my_alphas_cumprod(betas):\n    return betas\n",
        "import torch\ntorch.save = lambda *a, **k: None\n" + RIGHT2,
        (0, 1), ("ᾱ", "right")),
    "exits": (RIGHT1 + "import sys\nsys.exit(3)\n",  # SystemExit is caught; the function exists
              RIGHT2 + "import os\nos._exit(0)\n",  # ends the process: exercise 2 is never observed
              (1, 0), ("right", "did not run")),
    "deletes files": ("import shutil, sdlab\nshutil.rmtree(sdlab.__path__[0])\n" + RIGHT1,  # its own copy only
                      RIGHT2, (1, 1), ("right", "right")),
    "rewrites files": ("open(sd.checks.core.__file__, 'w').write('boom')\n" + RIGHT1,
                       "open(sd.__file__, 'w').write('boom')\n" + RIGHT2, (1, 1), ("right", "right")),
    "floods output": ("for _ in range(200):\n    print('x' * 100_000)\n" + RIGHT1,
                      "import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com', timeout=5)\n"
                      "    print('NETWORK REACHED')\nexcept Exception as error:\n    print(error)\n" + RIGHT2,
                      (1, 1), ("right", "right")),
    "not answered": (None, None, (0, 0), ("not answered yet", "not answered yet")),
}


def _answer_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _fill(student_nb, first, second):
    nb = copy.deepcopy(student_nb)
    for grade_id, source in ((EX1, first), (EX2, second)):
        if source is not None:
            _answer_cell(nb, grade_id).source = source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("classroom")
    write_release(root / "release")
    released = nbformat.read(root / "release" / f"{CHAPTER}.ipynb", as_version=4)
    folder = root / "submitted"
    for number, (student, (first, second, _, _)) in enumerate(SUBMISSIONS.items()):
        (folder / student).mkdir(parents=True)
        nbformat.write(_fill(released, first, second), folder / student / f"homework{number}.ipynb")
    # Students copy cells, lose labels and edit metadata:
    nb = _fill(released, RIGHT1, "def my_add_noise(*a):\n    return None\n")
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(RIGHT2))  # a pasted copy without metadata
    _answer_cell(nb, EX2).metadata["nbgrader"]["grade_id"] = "renamed"
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.metadata["nbgrader"]["points"] = 100  # the points come from the course's notebook, not this
    nbformat.write(nb, folder / "copied_cells.ipynb")
    nb = _fill(released, "def my_alphas_cumprod(betas):\n    return betas\n", RIGHT2)
    nb.cells.append(copy.deepcopy(_answer_cell(nb, EX1)))
    nb.cells[-1].id = "pasted-copy"
    nb.cells[-1].source = RIGHT1  # a second copy of the answer cell, further down: the last copy is graded
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "ch1-ex2-check"]
    nbformat.write(nb, folder / "duplicated.ipynb")
    nb = _fill(released, RIGHT1, RIGHT2)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != EX2]
    nbformat.write(nb, folder / "deleted_cell.ipynb")
    (folder / "01_forward_diffusion_broken.ipynb").write_text('{"cells": [')
    (folder / "notes.ipynb").write_text(json.dumps(nbformat.v4.new_notebook()))
    rows = grade_folder(folder, root / "grades", jobs=2, time_limit=90, cell_time_limit=8, seeds=[0, 11, 12],
                        progress=False)
    with open(root / "grades" / "grades.csv") as handle:
        table = list(csv.DictReader(handle))
    return root, rows, {(r["student"], r["exercise"]): r for r in table}


@pytest.mark.parametrize("student", SUBMISSIONS)
def test_each_submission_gets_its_points_and_feedback(graded, student):
    _, _, table = graded
    _, _, points, fragments = SUBMISSIONS[student]
    for exercise, want, fragment in zip((EX1, EX2), points, fragments):
        row = table[(student, exercise)]
        assert (float(row["points"]), float(row["max_points"])) == (want, 1.0), row
        assert fragment in row["feedback"], row


def test_copied_duplicated_and_deleted_cells_are_graded_as_far_as_they_can_be(graded):
    _, _, table = graded
    copied = table[("copied_cells", EX2)]
    assert copied["points"] == "1" and copied["max_points"] == "1", "points come from the course, not the file"
    assert "lost its exercise label" in copied["feedback"]
    duplicated = table[("duplicated", EX1)]
    assert duplicated["points"] == "1" and "2 copies of the answer cell" in duplicated["feedback"]
    assert table[("duplicated", EX2)]["points"] == "1", "a deleted check cell is run from the course's copy"
    assert table[("deleted_cell", EX1)]["points"] == "1"
    assert table[("deleted_cell", EX2)]["points"] == "0"
    assert "no answer cell" in table[("deleted_cell", EX2)]["feedback"]


def test_broken_and_foreign_notebooks_are_recorded_not_fatal(graded):
    _, _, table = graded
    broken = table[("01_forward_diffusion_broken", EX1)]
    assert broken["points"] == "0" and broken["max_points"] == "1"
    assert "did not run: not a readable notebook" in broken["feedback"]
    assert "no exercise cells" in table[("notes", "(notebook)")]["feedback"]


def test_feedback_files_and_seeds_are_written(graded):
    root, rows, _ = graded
    students = {row.student for row in rows}
    assert {p.stem for p in (root / "grades" / "feedback").glob("*.md")} == {s.replace(" ", "_") for s in students}
    text = (root / "grades" / "feedback" / "wrong.md").read_text()
    assert "Points: 0 of 2" in text and "cumsum instead of cumprod" in text
    assert json.loads((root / "grades" / "seeds.json").read_text())["seeds"] == [0, 11, 12]


def test_a_submission_cannot_touch_the_course_package(graded):
    package = Path(sdlab.__file__).parent
    assert (package / "checks" / "core.py").exists() and "boom" not in Path(sdlab.__file__).read_text()


def test_the_network_is_off_while_grading(graded):
    root, _, table = graded
    assert table[("floods output", EX2)]["points"] == "1"
    # the harness's output log is gone with its folder; the notebook printed the refusal instead of the page
    assert "NETWORK REACHED" not in (root / "grades" / "feedback" / "floods_output.md").read_text()


# --- the pieces, without running a notebook --------------------------------------------------------------

def test_points_and_exercises_come_from_the_course_notebooks():
    chapters = {stem: exercises_of(stem, nb) for stem, nb in course_notebooks().items()}
    ids = [e.answer_id for exercises in chapters.values() for e in exercises]
    assert len(ids) == len(set(ids)) == 13
    assert all(e.points == 1 and e.function.startswith(("my_", "eps_or")) for ex in chapters.values() for e in ex)


def test_answers_are_found_by_label_then_by_function():
    nb = course_notebooks()[CHAPTER]
    exercises = exercises_of(CHAPTER, nb)
    found = find_answers(nb, exercises)
    assert all(f.source and not f.note for f in found.values())
    stripped = copy.deepcopy(nb)
    for cell in stripped.cells:
        cell.metadata.pop("nbgrader", None)
    found = find_answers(stripped, exercises)
    assert all("lost its exercise label" in f.note for f in found.values())
    assert which_chapter(stripped, "anything.ipynb", {CHAPTER: exercises}) is None
    assert which_chapter(stripped, "01_mine.ipynb", {CHAPTER: exercises}) == CHAPTER


def test_students_are_named_by_folder_or_file(tmp_path):
    assert student_of(tmp_path / "alice" / "ch1" / "x.ipynb", tmp_path) == "alice"
    assert student_of(tmp_path / "bob.ipynb", tmp_path) == "bob"


@pytest.mark.parametrize("option, message", [
    (["--jobs", "0"], "--jobs must be at least 1; got 0"),
    (["--time-limit", "-5"], "--time-limit must be a positive number of seconds; got -5.0"),
    (["--cell-time-limit", "nan"], "--cell-time-limit must be a positive number of seconds; got nan"),
])
def test_the_command_rejects_options_that_make_no_sense(tmp_path, capsys, option, message):
    from sdlab.grading.grader import main

    with pytest.raises(SystemExit):
        main([str(tmp_path), *option])
    assert message in capsys.readouterr().err


def test_a_release_replaces_an_earlier_release_and_never_another_folder(tmp_path):
    out = tmp_path / "release"
    write_release(out)
    (out / "stale.ipynb").write_text("{}")
    write_release(out)
    assert not (out / "stale.ipynb").exists() and (out / "exercises.csv").exists()
    precious = tmp_path / "my_notes"
    precious.mkdir()
    (precious / "thesis.md").write_text("years of work")
    with pytest.raises(FileExistsError, match="not an earlier release"):
        write_release(precious)
    assert (precious / "thesis.md").read_text() == "years of work"
