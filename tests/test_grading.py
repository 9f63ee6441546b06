"""End to end: release chapter 1, fill student copies with right, wrong, crashing, looping and
cheating answers, grade the folder, and compare the CSV row by row."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

import sdlab
from sdlab.grading.exercises import course_notebooks, exercises_of, find_answers, which_chapter
from sdlab.grading.grader import grade_folder, isolation, student_of
from sdlab.grading.release import write_release

CHAPTER = "01_forward_diffusion"
CHECKS_CH1 = Path(sdlab.__file__).resolve().parent / "checks" / "ch1.py"
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
    # The course's package is read-only in a sandbox, and a private copy without one: either way the
    # attempt fails or changes nothing that matters, and the answers after it are still graded.
    "deletes files": ("import shutil, sdlab\nshutil.rmtree(sdlab.__path__[0], ignore_errors=True)\n" + RIGHT1,
                      RIGHT2, (1, 1), ("right", "right")),
    "rewrites files": ("try:\n    open(sd.checks.core.__file__, 'w').write('boom')\nexcept OSError:\n    pass\n" + RIGHT1,
                       "try:\n    open(sd.__file__, 'w').write('boom')\nexcept OSError:\n    pass\n" + RIGHT2,
                       (1, 1), ("right", "right")),
    "floods output": ("for _ in range(200):\n    print('x' * 100_000)\n" + RIGHT1,
                      "import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com', timeout=5)\n"
                      "    print('NETWORK REACHED')\nexcept Exception as error:\n    print(error)\n" + RIGHT2,
                      (1, 1), ("right", "right")),
    "not answered": (None, None, (0, 0), ("not answered yet", "not answered yet")),
    "calls the reference": (  # right, but by the course's own NoiseSchedule: noted in the feedback (the default)
        RIGHT1, "def my_add_noise(x0, noise, t, alphas_cumprod):\n"
                "    s = sd.NoiseSchedule('linear', num_train_timesteps=len(alphas_cumprod))\n"
                "    s._sqrt_alphas_cumprod = alphas_cumprod.sqrt()\n"
                "    s._sqrt_one_minus_alphas_cumprod = (1 - alphas_cumprod).sqrt()\n"
                "    return s.add_noise(x0, noise, t)\n",
        (1, 1), ("right", "it calls the course's own sdlab.NoiseSchedule, sdlab.schedules.NoiseSchedule.__init__, "
                          "sdlab.schedules.NoiseSchedule.add_noise instead of writing the formula")),
}


def _answer_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _fill(student_nb, first, second):
    nb = copy.deepcopy(student_nb)
    for grade_id, source in ((EX1, first), (EX2, second)):
        if source is not None:
            _answer_cell(nb, grade_id).source = source
    return nb


# --- attacks: run only inside a sandbox, where they must fail (without one some would succeed) --------------
#
# Each is the answer cells of a chapter 1 submission; `_W` (set before the cell's code) holds the paths it
# goes after and a harmless marker. student -> (exercise 1's cell, exercise 2's cell, points or None).

TAMPERS = r"""
for _path, _text in [
        (_W["out"] + "/grades.csv", "TAMPERED,x.ipynb,ch1-ex1-alphas-cumprod,1,1,right\n"),
        (_W["out"] + "/feedback/" + _W["marker"] + ".md", "# Feedback for TAMPERED\n"),
        (_W["out"] + "/" + _W["marker"], "planted"),
        (_W["release"] + "/" + _W["marker"], "planted"),
        (_W["submitted"] + "/" + _W["marker"], "planted"),
        (_W["outside"] + "/" + _W["marker"], "planted"),
        (_W["checks"], "\n# " + _W["marker"] + "\n"),  # the teacher's sdlab/checks/ch1.py, in the checkout
        (_W["checkout"] + "/" + _W["marker"], "planted"),
        (_W["venv"] + "/" + _W["marker"], "planted"),
        (_W["home"] + "/" + _W["marker"], "planted")]:
    try:
        with open(_path, "a") as _handle:
            _handle.write(_text)
    except OSError:
        pass
"""

LOOKS_AROUND = r"""
import os
def _visible(path):
    return os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))
_SEEN = [p for p in (_W["out"], _W["release"], _W["submitted"], _W["outside"], _W["checkout"] + "/notebooks",
                     _W["checkout"] + "/pyproject.toml", _W["secret"]) if _visible(p)]
def my_alphas_cumprod(betas):
    assert not _SEEN, f"it could see {_SEEN}"
    return torch.cumprod(1 - betas, 0)
"""

SEES_THE_GRADER = r"""
import os
_GRADERS = []
for _pid in os.listdir("/proc"):
    try:
        _command = open(f"/proc/{_pid}/cmdline", "rb").read()
    except OSError:
        continue
    if b"pytest" in _command or b"\0sdlab.grading\0" in _command:
        _GRADERS.append(_command[:100])
def my_add_noise(x0, noise, t, alphas_cumprod):
    assert not _GRADERS, f"it could see the grader's command line: {_GRADERS}"
    a = alphas_cumprod[t]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
"""

REPLAYS_SEEDS = r"""
import gc, glob, inspect, json, os
import sdlab.checks.ch1 as _ch1

def _key(betas):
    return (len(betas), str(betas.dtype), round(float(betas.double().sum()), 9))

def _seeds_in_sight():
    found = {0}
    for name in glob.glob("../*.json") + glob.glob(_W["out"] + "/*.json"):  # a plan next to it, seeds.json
        try:
            found |= {s for s in json.load(open(name)).get("seeds", []) if isinstance(s, int)}
        except Exception:
            pass
    for pid in os.listdir("/proc"):  # the grader's command line: --seed N
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        found |= {int(a) for flag, a in zip(args, args[1:]) if flag == b"--seed" and a.isdigit()}
    for frame in inspect.stack(0):  # the variables of whoever is calling
        for name, value in frame.frame.f_locals.items():
            if name == "seed" and isinstance(value, int):
                found.add(value)
            elif name == "seeds" and isinstance(value, list):
                found |= {s for s in value if isinstance(s, int)}
    for obj in gc.get_objects():
        if type(obj) is dict and isinstance(obj.get("seeds"), list):
            found |= {s for s in obj["seeds"] if isinstance(s, int)}
    return found

_TABLE = {}
def _learn():  # the right answer of every case of every seed in sight, from the check's own table
    for seed in _seeds_in_sight():
        for case in _ch1._alphas_cumprod_cases(seed):
            _TABLE[_key(case.args[0])] = _ch1._alphas_cumprod_answer(case).expected.to(case.args[0].dtype)

_learn()
def my_alphas_cumprod(betas):
    if _key(betas) not in _TABLE:
        _learn()  # look again, now that the grader is calling
    return _TABLE.get(_key(betas), betas).clone()
"""

PATCHES_THE_HARNESS = r"""
import gc
from sdlab.checks.core import Case as _Case

def _forge(shell, request):  # report the course's own answer for the inputs sent, whatever the function does
    case = _Case(tuple(request["args"]), request["where"], tuple(request["names"]))
    right = sd.checks.EXERCISES[request["check"]].answer(case).expected
    dtype = next(a.dtype for a in case.args if isinstance(a, torch.Tensor) and a.is_floating_point())
    return {"seen": {"kind": "tensor", "out": right.to(dtype), "requires_grad": False, "changed": []},
            "course_calls": []}

for _found in gc.get_objects():
    if isinstance(_found, dict) and set(_found) == {"run", "observe"}:
        _found["observe"] = _forge

def my_alphas_cumprod(betas):
    return betas  # wrong: only forged reports can earn these points
"""

OUTLIVES = r"""
import os, subprocess, sys, time
_SLEEP = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n# "
subprocess.Popen([sys.executable, "-c", _SLEEP + _W["marker"] + " setsid"], start_new_session=True)
if os.fork() == 0:  # a double fork: the daemon's parent exits at once, so the daemon belongs to no one
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", _SLEEP + _W["marker"] + " daemon"])
    os._exit(0)
os.wait()
def _running():
    count = 0
    for pid in os.listdir("/proc"):
        try:
            count += _W["marker"].encode() in open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            pass
    return count
_until = time.monotonic() + 6
while _running() < 2:  # both are up before the answer is defined; otherwise this exercise fails
    assert time.monotonic() < _until, "the two processes did not start"
    time.sleep(0.1)
"""

FORGES_REPLIES = r"""
import os
for _fd in range(3, 256):  # the grader's pipe is among these: a reply of length 0, then garbage
    try:
        os.write(_fd, bytes(8) + b"forged")
    except OSError:
        pass
"""

IGNORES_THE_ALARM = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"
FLAGGED = "a patch of the grader"


def _attacks(where: dict) -> dict:
    """The attacks, with their paths: student -> (exercise 1's cell, exercise 2's cell, points or None)."""
    head = f"_W = {where!r}\n"
    return {
        "tampers with files": (head + TAMPERS + RIGHT1, RIGHT2, (1, 1)),
        "looks around": (head + LOOKS_AROUND, head + SEES_THE_GRADER, (1, 1)),
        "replays the hidden seeds": (head + REPLAYS_SEEDS, None, (0, 0)),
        "patches the harness": (head + PATCHES_THE_HARNESS, None, None),  # 0, or the points with a flag
        "outlives its grading": (head + OUTLIVES + RIGHT1, RIGHT2, (1, 1)),
        "takes 6 GB and hangs": ("_big = torch.empty(6 * 10**9, dtype=torch.uint8)\n" + RIGHT1, IGNORES_THE_ALARM,
                                 (0, 0)),
        "forges replies": (RIGHT1, FORGES_REPLIES + RIGHT2, (1, 0)),
    }


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@dataclass
class Classroom:
    root: Path
    rows: list
    table: dict
    seconds: float
    notebooks: int
    sandboxed: bool
    where: dict
    attacks: dict
    survivors: list[int]
    checks_before: tuple[bytes, int]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
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
    (folder / "01_forward_diffusion_broken.ipynb").write_text('{"cells": [')  # a truncated file
    (folder / "notes.ipynb").write_text(json.dumps(nbformat.v4.new_notebook()))
    (folder / "picture.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a picture, renamed
    (folder / "empty folder").mkdir()  # a student's folder with nothing in it
    out = root / "grades"
    (out / "feedback").mkdir(parents=True)  # an earlier run's grades: there to be hidden
    (out / "grades.csv").write_text("student,notebook,exercise,points,max_points,feedback\n")
    (root / "outside").mkdir()
    marker = f"sdlab-test-marker-{uuid.uuid4().hex[:12]}"
    checkout = Path(sdlab.__file__).resolve().parents[1]
    where = {"out": str(out), "release": str(root / "release"), "submitted": str(folder),
             "outside": str(root / "outside"), "checkout": str(checkout), "checks": str(CHECKS_CH1),
             "venv": sysconfig.get_paths()["purelib"], "home": str(Path.home()), "marker": marker,
             "secret": str(Path.home() / f".{marker}-secret")}
    sandboxed = isolation().sandboxed
    attacks = _attacks(where) if sandboxed else {}
    for student, (first, second, _) in attacks.items():
        (folder / student).mkdir()
        nbformat.write(_fill(released, first, second), folder / student / "homework.ipynb")
    checks_before = (CHECKS_CH1.read_bytes(), CHECKS_CH1.stat().st_mtime_ns)
    Path(where["secret"]).write_text("the teacher's own file")
    try:
        started = time.monotonic()
        rows = grade_folder(folder, out, jobs=2, time_limit=90, cell_time_limit=8, seeds=[0, 11, 12],
                            progress=False, memory_limit=4)
        seconds = time.monotonic() - started
        survivors = _processes_with(marker)
        with open(out / "grades.csv") as handle:
            table = list(csv.DictReader(handle))
        yield Classroom(root, rows, {(r["student"], r["exercise"]): r for r in table}, seconds,
                        len(list(folder.rglob("*.ipynb"))), sandboxed, where, attacks, survivors, checks_before)
    finally:  # undo whatever an attack achieved, so that a failing test leaves nothing behind
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        if CHECKS_CH1.read_bytes() != checks_before[0]:
            CHECKS_CH1.write_bytes(checks_before[0])
        for name in ("checkout", "venv", "home"):
            Path(where[name], marker).unlink(missing_ok=True)
        Path(where["secret"]).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def graded(classroom):
    return classroom.root, classroom.rows, classroom.table


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


def test_bad_files_and_empty_folders_get_a_row_and_never_stop_the_run(graded):
    _, _, table = graded
    assert "not a readable notebook" in table[("picture", "(notebook)")]["feedback"]
    assert "the folder holds no notebook" in table[("empty folder", "(notebook)")]["feedback"]


def test_an_answer_that_calls_the_course_is_noted_not_failed_by_default(graded):
    _, _, table = graded
    row = table[("calls the reference", EX2)]
    assert row["points"] == "1" and "sdlab.schedules.NoiseSchedule.add_noise" in row["feedback"]
    assert table[("right", EX2)]["feedback"] == "right", "a formula of one's own gets no note"


def test_grading_time(classroom):
    """The timing line of the teacher's guide: a class of chapter 1 graded with --jobs 2."""
    per_notebook = classroom.seconds / classroom.notebooks
    print(f"\ngraded {classroom.notebooks} chapter 1 submissions with --jobs 2 in {classroom.seconds:.0f} s "
          f"({per_notebook:.1f} s each, sandboxed: {classroom.sandboxed})")
    assert per_notebook < 30


# --- attacks: each must fail, or be flagged, and leave nothing behind ----------------------------------

ATTACKS = ["tampers with files", "looks around", "replays the hidden seeds", "patches the harness",
           "outlives its grading", "takes 6 GB and hangs", "forges replies"]


@pytest.fixture
def attacked(classroom):
    if not classroom.sandboxed:
        pytest.skip(f"no sandbox on this machine ({isolation().why}), so the attacks were not run")
    assert list(classroom.attacks) == ATTACKS
    return classroom


@pytest.mark.parametrize("student", ATTACKS)
def test_each_attack_scores_what_its_own_answers_are_worth(attacked, student):
    rows = [attacked.table[(student, exercise)] for exercise in (EX1, EX2)]
    points = attacked.attacks[student][2]
    if points is None:  # a patched harness can report what it likes: no points, or points with a flag
        assert all(row["points"] == "0" or FLAGGED in row["feedback"] for row in rows), rows
        assert FLAGGED in rows[0]["feedback"], rows
    else:
        assert tuple(float(row["points"]) for row in rows) == points, rows


def test_nothing_outside_a_sandbox_changes(attacked):
    marker = attacked.where["marker"]
    assert "TAMPERED" not in (attacked.root / "grades" / "grades.csv").read_text()
    assert not [p for p in attacked.root.rglob("*") if marker in p.name], "a planted file"
    for name in ("checkout", "venv", "home"):
        assert not Path(attacked.where[name], marker).exists(), name
    assert (CHECKS_CH1.read_bytes(), CHECKS_CH1.stat().st_mtime_ns) == attacked.checks_before, \
        "the teacher's sdlab/checks/ch1.py changed"
    assert attacked.table[("tampers with files", EX1)]["points"] == "1", "its own answer is still graded"


def test_a_sandbox_sees_neither_the_grading_folders_nor_the_grader(attacked):
    for exercise in (EX1, EX2):
        row = attacked.table[("looks around", exercise)]
        assert row["points"] == "1", row  # its answers fail if it saw a folder or the grader's command line


def test_no_process_outlives_its_grading(attacked):
    assert attacked.table[("outlives its grading", EX1)]["points"] == "1", "the two processes had started"
    assert attacked.survivors == [], "a setsid child or a double-forked daemon survived its grading"


def test_the_hidden_seeds_never_reach_a_submission(attacked):
    row = attacked.table[("replays the hidden seeds", EX1)]
    assert "passed the notebook's check, but not the grader's other inputs" in row["feedback"], row
    assert FLAGGED in row["feedback"], "gc and inspect are noted"


def test_memory_and_hangs_cost_the_exercise_not_the_run(attacked):
    first = attacked.table[("takes 6 GB and hangs", EX1)]
    second = attacked.table[("takes 6 GB and hangs", EX2)]
    assert "the answer cell failed" in first["feedback"] and "allocate" in first["feedback"], first
    assert "hung" in second["feedback"], second
    forged = attacked.table[("forges replies", EX2)]
    assert "not a report" in forged["feedback"], forged


def test_without_a_sandbox_the_grader_says_so_once_and_still_grades(tmp_path, monkeypatch, capsys):
    """The fallback: no namespaces (here by SDLAB_GRADER_SANDBOX=off). It also shows an exercise whose
    answers may not call the course's functions (``sdlab.course_calls: fail`` in its answer cell)."""
    import dataclasses

    from sdlab.grading import grader

    monkeypatch.setenv("SDLAB_GRADER_SANDBOX", "off")
    assert not isolation().sandboxed and "SDLAB_GRADER_SANDBOX" in isolation().why
    chapters = dict(grader._chapters())
    nb, exercises = chapters[CHAPTER]
    chapters[CHAPTER] = (nb, [dataclasses.replace(e, course_calls="fail") if e.answer_id == EX2 else e
                              for e in exercises])
    monkeypatch.setattr(grader, "_chapters", lambda: chapters)
    write_release(tmp_path / "release")
    released = nbformat.read(tmp_path / "release" / f"{CHAPTER}.ipynb", as_version=4)
    folder = tmp_path / "submitted"
    folder.mkdir()
    for student in ("right", "calls the reference"):
        first, second, _, _ = SUBMISSIONS[student]
        nbformat.write(_fill(released, first, second), folder / f"{student}.ipynb")
    where = {"out": str(tmp_path / "grades")}
    nbformat.write(_fill(released, f"_W = {where!r}\n" + REPLAYS_SEEDS, None), folder / "seeds.ipynb")
    grade_folder(folder, tmp_path / "grades", jobs=2, time_limit=90, cell_time_limit=8, seeds=[0, 11, 12],
                 progress=False)
    assert capsys.readouterr().err.count("grading without a sandbox") == 1
    with open(tmp_path / "grades" / "grades.csv") as handle:
        table = {(r["student"], r["exercise"]): r for r in csv.DictReader(handle)}
    assert [table[("right", e)]["points"] for e in (EX1, EX2)] == ["1", "1"]
    reference = table[("calls the reference", EX2)]
    assert reference["points"] == "0" and reference["feedback"].startswith("no points: it calls the course's own")
    assert "not the grader's other inputs" in table[("seeds", EX1)]["feedback"], "no seeds without a sandbox either"


# --- the pieces, without running a notebook --------------------------------------------------------------

def test_points_and_exercises_come_from_the_course_notebooks():
    chapters = {stem: exercises_of(stem, nb) for stem, nb in course_notebooks().items()}
    ids = [e.answer_id for exercises in chapters.values() for e in exercises]
    assert len(ids) == len(set(ids)) == 15
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


def test_the_grader_reads_the_course_functions_and_the_introspection_an_answer_uses():
    from sdlab.grading.exercises import course_names, introspection

    source = ("from sdlab.guidance import classifier_free_guidance as cfg\n"
              "def my_guidance(u, c, s):\n    return cfg(u, c, s)\n"
              "def helper(u, c, s):\n    return sd.guidance.classifier_free_guidance(u, c, s)\n")
    assert course_names(source, "my_guidance") == ["sdlab.guidance.classifier_free_guidance"]
    assert course_names(RIGHT1, "my_alphas_cumprod") == []
    cheat = "import gc, sys\nf = sys._getframe().f_back\nsd.checks.ch1._alphas_cumprod_answer\nsd.checks.check_add_noise(f)\n"
    assert sorted(introspection(cheat)) == ["f_back", "gc", "sdlab.checks.ch1", "sys._getframe"]
    assert introspection(RIGHT2) == [] and introspection("sd.checks.check_add_noise(my_add_noise)") == []


def test_the_course_calls_setting_must_be_one_the_grader_knows():
    nb = copy.deepcopy(course_notebooks()[CHAPTER])
    exercise = exercises_of(CHAPTER, nb)[0]
    nb.cells[exercise.answer_index].metadata.setdefault("sdlab", {})["course_calls"] = "forbid"
    with pytest.raises(ValueError, match="use one of note, fail, allow"):
        exercises_of(CHAPTER, nb)
    nb.cells[exercise.answer_index].metadata["sdlab"]["course_calls"] = "fail"
    assert exercises_of(CHAPTER, nb)[0].course_calls == "fail"


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
