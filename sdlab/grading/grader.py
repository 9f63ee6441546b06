"""Grade a folder of submitted notebooks: a CSV of points and a feedback file per student.

    python3 run.py grade SUBMISSIONS/ [--out build/grades] [--jobs N] [--time-limit 300] [--seed S]

Each submission runs in a fresh process of its own (:mod:`sdlab.grading.harness`), in quick mode,
with a time limit, without a network (a network namespace where the machine allows it, and a
socket guard), in a temporary folder with a private copy of the ``sdlab`` package. The grader
itself never runs a student's code: it sends the harness the seeds, reads back what the
student's functions returned, and judges that here with the same rules as the notebook's checks,
on the notebook's inputs (seed 0) and on hidden ones. Submissions are graded in parallel.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import nbformat
import torch

import sdlab
from sdlab.checks import EXERCISES
from sdlab.grading.exercises import GradedExercise, course_notebooks, exercises_of, find_answers, which_chapter

__all__ = ["Row", "grade_folder", "main"]

PACKAGE = Path(sdlab.__file__).resolve().parent
MAX_NOTEBOOK_BYTES = 20_000_000


@dataclass
class Row:
    """One line of the grades: a student's result on one exercise."""

    student: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    feedback: str


@dataclass
class Submission:
    path: Path
    student: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def student_of(path: Path, folder: Path) -> str:
    """A file directly in the folder is named by its file; one in a sub-folder by that folder (nbgrader's layout)."""
    parts = path.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else path.stem


@cache
def _chapters() -> dict[str, tuple[nbformat.NotebookNode, list[GradedExercise]]]:
    return {stem: (nb, exercises_of(stem, nb)) for stem, nb in course_notebooks().items()}


def _plan(chapter: str, answers: dict, seeds: list[int], cell_seconds: float) -> dict:
    """The cells to run: the chapter as released, with the student's answers in its answer cells."""
    nb, exercises = _chapters()[chapter]
    by_answer = {e.answer_index: e for e in exercises}
    by_check = {e.check_index: e for e in exercises}
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        label = f"cell {index}"
        if index in by_answer:
            exercise = by_answer[index]
            source = answers[exercise.answer_id].source
            if source is not None:
                cells.append({"kind": "answer", "source": source, "label": label, "exercise": exercise.answer_id})
        elif index in by_check:
            exercise = by_check[index]
            cells.append({"kind": "grade", "label": label, "exercise": exercise.answer_id, "check": exercise.check,
                          "function": exercise.function})
        else:
            cells.append({"kind": "code", "source": cell.source, "label": label})
    return {"cells": cells, "seeds": seeds, "cell_seconds": cell_seconds, "call_seconds": min(30.0, cell_seconds)}


@cache
def no_network_prefix() -> tuple[str, ...]:
    """The command prefix that starts a process without a network on this machine, or () where none works.

    ``unshare --net`` (Linux) gives the process a network namespace of its own with no interface
    but loopback; as an ordinary user it needs ``--map-root-user`` (a user namespace).
    """
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return ()
    for flags in (("--net",), ("--net", "--map-root-user")):
        try:
            if subprocess.run(["unshare", *flags, "true"], capture_output=True, timeout=10).returncode == 0:
                return ("unshare", *flags)
        except (OSError, subprocess.SubprocessError):
            pass
    return ()


def _run_harness(plan: dict, work: Path, time_limit: float, threads: int) -> tuple[dict | None, str]:
    """Run the plan in a fresh process inside ``work``; return what it observed and how it ended."""
    shutil.copytree(PACKAGE, work / "lib" / "sdlab", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "plan.json").write_text(json.dumps(plan))
    results = work / "results.pt"
    home = work / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(work / "lib"),
        "SDLAB_QUICK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1", "TQDM_DISABLE": "1",
        "MPLCONFIGDIR": str(home / "mpl"), "HF_HOME": str(home / "hf"), "TMPDIR": str(home),
    }
    command = [sys.executable, "-m", "sdlab.grading.harness", str(work / "plan.json"), str(results)]
    command = [*no_network_prefix(), *command]
    with open(work / "output.log", "wb") as log:
        process = subprocess.Popen(command, cwd=work / "home", env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=time_limit)
            ended = "" if process.returncode == 0 else f"its process ended with exit status {process.returncode}"
        except subprocess.TimeoutExpired:
            ended = f"it ran past the time limit of {time_limit:g} s for a notebook"
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the process and anything it started
            except ProcessLookupError:
                pass
            process.wait()
    try:
        observed = torch.load(results, weights_only=True)
    except Exception:
        tail = (work / "output.log").read_bytes()[-600:].decode(errors="replace").strip()
        return None, ended or f"it wrote no results; its last output: {tail}"
    if not isinstance(observed, dict):
        return None, "its results file was not what the harness writes"
    if not observed.get("finished"):
        ended = f"{ended or 'its process ended early'} (in {observed.get('at', 'an unknown place')})"
    return observed, ended


def _judge(exercise: GradedExercise, entry: dict | None, seeds: list[int]) -> tuple[bool, str]:
    """(right?, feedback) for one exercise from what the harness observed."""
    if entry is None:
        return False, "did not run"
    if "cell_error" in entry and "observations" not in entry:
        return False, f"the answer cell failed: {entry['cell_error']}"
    if "missing" in entry:
        problem = entry["missing"]
        if "cell_error" in entry:
            problem += f" (the answer cell failed: {entry['cell_error']})"
        return False, problem
    check = EXERCISES[exercise.check]
    observations = entry.get("observations", {})
    for seed in seeds:
        seen = observations.get(str(seed))
        if not isinstance(seen, list) or not seen:
            return False, "did not run: no result was observed"
        cases = check.cases(seed)
        if any(not isinstance(s, dict) for s in seen):
            return False, "did not run: the results were not observations"
        problem = check.judge(cases[: len(seen)], seen)
        if problem is None and len(seen) < len(cases):
            problem = "not every case was observed"
        if problem is not None:
            if "NotImplementedError" in problem:
                return False, "not answered yet: the answer cell still raises NotImplementedError"
            if seed != seeds[0]:
                problem = f"passed the notebook's check, but not the grader's other inputs: {problem}"
            return False, problem
    return True, "right"


def _empty_rows(sub: Submission, notebook: str, exercises: list[GradedExercise], why: str) -> None:
    for exercise in exercises:
        sub.rows.append(Row(sub.student, notebook, exercise.answer_id, 0.0, exercise.points, f"did not run: {why}"))


def grade_one(path: Path, folder: Path, seeds: list[int], time_limit: float, threads: int,
              cell_time_limit: float = 120.0) -> Submission:
    """Grade one submitted notebook. Never raises for a broken submission: its rows say what happened."""
    sub = Submission(path, student_of(path, folder))
    started = time.monotonic()
    graded = {stem: exercises for stem, (_, exercises) in _chapters().items() if exercises}
    notebook = path.relative_to(folder).as_posix()
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"the file is larger than {MAX_NOTEBOOK_BYTES // 1_000_000} MB")
        nb = nbformat.read(path, as_version=4)
    except Exception as error:
        why = f"not a readable notebook ({type(error).__name__}: {str(error)[:200]})"
        sub.notes.append(f"{notebook}: did not run: {why}")
        chapter = which_chapter(nbformat.v4.new_notebook(), path.name, graded)
        if chapter is None:
            sub.rows.append(Row(sub.student, notebook, "(notebook)", 0.0, 0.0, "did not run: not a readable notebook"))
        else:
            _empty_rows(sub, notebook, graded[chapter], "not a readable notebook")
        return sub
    chapter = which_chapter(nb, path.name, graded)
    if chapter is None:
        sub.notes.append(f"{notebook}: not one of the course's graded notebooks (no exercise cells found)")
        sub.rows.append(Row(sub.student, notebook, "(notebook)", 0.0, 0.0, "did not run: no exercise cells found"))
        return sub
    exercises = graded[chapter]
    answers = find_answers(nb, exercises)
    sub.notes += [f"{exercise.answer_id}: {answers[exercise.answer_id].note}" for exercise in exercises
                  if answers[exercise.answer_id].note]
    with tempfile.TemporaryDirectory(prefix="sdlab-grade-") as tmp:
        plan = _plan(chapter, answers, seeds, min(cell_time_limit, time_limit))
        observed, ended = _run_harness(plan, Path(tmp), time_limit, threads)
    if observed is None:
        _empty_rows(sub, notebook, exercises, ended)
        sub.seconds = time.monotonic() - started
        return sub
    if ended:
        sub.notes.append(f"{notebook}: {ended}")
    for failure in observed.get("cells", [])[:10]:
        if isinstance(failure, dict):
            sub.notes.append(f"{notebook}, {failure.get('label')}: {failure.get('error')}")
    for exercise in exercises:
        found = answers[exercise.answer_id]
        entry = observed.get("exercises", {}).get(exercise.answer_id)
        if found.source is None:
            right, feedback = False, f"did not run: {found.note}"
        elif entry is None:
            right, feedback = False, f"did not run: {ended or 'its check was never reached'}"
        else:
            right, feedback = _judge(exercise, entry, seeds)
        if found.note and found.source is not None:
            feedback = f"{feedback} ({found.note})"
        sub.rows.append(Row(sub.student, notebook, exercise.answer_id, exercise.points if right else 0.0,
                            exercise.points, feedback))
    sub.seconds = time.monotonic() - started
    return sub


def _feedback_text(student: str, subs: list[Submission]) -> str:
    lines = [f"# Feedback for {student}", ""]
    total = sum(r.points for s in subs for r in s.rows)
    most = sum(r.max_points for s in subs for r in s.rows)
    lines += [f"Points: {total:g} of {most:g}", ""]
    for sub in subs:
        lines.append(f"## {sub.path.name}")
        lines.append("")
        for row in sub.rows:
            mark = "✓" if row.points == row.max_points and row.max_points > 0 else "✗"
            lines.append(f"- {mark} **{row.exercise}** ({row.points:g}/{row.max_points:g}): {row.feedback}")
        if sub.notes:
            lines += ["", "Notes from the grader:", ""] + [f"- {note}" for note in sub.notes]
        lines.append("")
    return "\n".join(lines)


def grade_folder(folder: Path, out: Path, *, jobs: int | None = None, time_limit: float = 300.0,
                 cell_time_limit: float = 120.0, seeds: list[int] | None = None, progress: bool = True) -> list[Row]:
    """Grade every ``*.ipynb`` under ``folder``; write ``out/grades.csv`` and ``out/feedback/<student>.md``."""
    folder, out = Path(folder).resolve(), Path(out).resolve()
    paths = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs or cores, len(paths) or 1))
    threads = max(1, cores // jobs)
    seeds = seeds or [0, *(secrets.randbelow(2**31 - 1) + 1 for _ in range(2))]
    _chapters()  # read the course's notebooks once, before the threads start
    done: list[Submission] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(grade_one, path, folder, seeds, time_limit, threads, cell_time_limit) for path in paths]
        for future in futures:
            sub = future.result()
            done.append(sub)
            if progress:
                points = sum(r.points for r in sub.rows)
                most = sum(r.max_points for r in sub.rows)
                print(f"graded {sub.path.relative_to(folder)} ({sub.student}): {points:g}/{most:g} in "
                      f"{sub.seconds:.0f} s", flush=True)
    rows = [row for sub in done for row in sub.rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    tmp = out / "grades.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "notebook", "exercise", "points", "max_points", "feedback"])
        writer.writerows([r.student, r.notebook, r.exercise, f"{r.points:g}", f"{r.max_points:g}", r.feedback]
                         for r in rows)
    os.replace(tmp, out / "grades.csv")
    for student in sorted({sub.student for sub in done}):
        (out / "feedback" / f"{_safe(student)}.md").write_text(
            _feedback_text(student, [s for s in done if s.student == student]))
    (out / "seeds.json").write_text(json.dumps({"seeds": seeds, "note": "rerun with --seed to grade the same "
                                                "hidden inputs again"}))
    return rows


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "student"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 run.py grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="a folder of submitted notebooks (any names, sub-folders)")
    parser.add_argument("--out", type=Path, default=Path("build/grades"), help="where grades.csv and feedback/ go")
    parser.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: one per core)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds a notebook may run (default 300)")
    parser.add_argument("--cell-time-limit", type=float, default=120.0,
                        help="seconds one cell may run (default 120); the notebook's limit still applies")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="hidden seed (repeat for several; default: two drawn at random, saved in seeds.json)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    for flag, seconds in (("--time-limit", args.time_limit), ("--cell-time-limit", args.cell_time_limit)):
        if not seconds > 0:  # also rejects nan
            parser.error(f"{flag} must be a positive number of seconds; got {seconds}")
    if not args.submissions.is_dir():
        raise SystemExit(f"{args.submissions} is not a folder of notebooks")
    seeds = [0, *args.seed] if args.seed else None
    started = time.monotonic()
    rows = grade_folder(args.submissions, args.out, jobs=args.jobs, time_limit=args.time_limit,
                       cell_time_limit=args.cell_time_limit, seeds=seeds)
    students = len({r.student for r in rows})
    print(f"wrote {args.out / 'grades.csv'} ({len(rows)} rows, {students} students) and {args.out / 'feedback'}/ "
          f"in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
