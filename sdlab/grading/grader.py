"""Grade a folder of submitted notebooks: a CSV of points and a feedback file per student.

    python3 run.py grade SUBMISSIONS/ [--out build/grades] [--jobs N] [--time-limit 300] [--memory-limit GB]
                                      [--seed S]

Each submission runs in a fresh process of its own (:mod:`sdlab.grading.harness`), in quick mode, on the
CPU, with limits of time and memory. Where Linux allows it, that process lives in a sandbox of its own
(:mod:`sdlab.grading.sandbox`): no network, no view of the grades, the other submissions or the checkout,
nothing writable but a private tmpfs, and no process of it left once its grading ends. Where it does not,
the grader says so once and falls back to a private temporary folder with a private copy of the ``sdlab``
package, a session of its own and a socket guard.

The grader itself never runs a student's code. It sends the harness the chapter's cells one at a time and
then, for each exercise, the inputs of one case after another; it judges what comes back here, with the
same rules as the notebook's checks, on the notebook's inputs (seed 0) and on hidden ones whose seeds never
leave this process. Submissions are graded in parallel; grades.csv and the feedback files are written by
this process alone, once every submission has finished.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import nbformat
import torch

import sdlab
from sdlab.checks import EXERCISES
from sdlab.checks.core import Case
from sdlab.grading import sandbox
from sdlab.grading.exercises import (
    NOTEBOOKS,
    GradedExercise,
    course_names,
    course_notebooks,
    exercises_of,
    find_answers,
    introspection,
    which_chapter,
)
from sdlab.grading.harness import HEADER, MAX_MESSAGE, pack, unpack

__all__ = ["Row", "grade_folder", "main"]

PACKAGE = Path(sdlab.__file__).resolve().parent
MAX_NOTEBOOK_BYTES = 20_000_000
STARTUP_SECONDS = 60.0  # a fresh process imports torch and IPython before it answers its first request
GRACE_SECONDS = 10.0  # a request still unanswered this long after its own time limit: the process is hung
MAX_FILE_BYTES = 256 * 2**20  # no file a submission writes grows past this (its printed output included)
MAX_PROCESSES = 1024  # processes and threads a submission may run at once (inside the sandbox)
# run inside the sandbox once, before grading: can the sandboxed user find and read what the harness imports?
PROBE = "import importlib.util as u\nfor m in ('sdlab', 'torch', 'IPython'):\n    open(u.find_spec(m).origin).close()"


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
    flagged: bool = False  # its answer cells use tools no formula needs: for the teacher to read


def student_of(path: Path, folder: Path) -> str:
    """A file directly in the folder is named by its file; one in a sub-folder by that folder (nbgrader's layout)."""
    parts = path.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else path.stem


@cache
def _chapters() -> dict[str, tuple[nbformat.NotebookNode, list[GradedExercise]]]:
    return {stem: (nb, exercises_of(stem, nb)) for stem, nb in course_notebooks().items()}


class _NoGenerator(pickle.Pickler):
    """Pickles a case's inputs to make sure none holds a random generator: its state would give the seed away."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.Generator):
            raise TypeError("a check's case holds a torch.Generator: sent to a submission, it would tell the seed")
        return NotImplemented


@cache
def _cases(check: str, seed: int) -> list[Case]:
    """A check's cases for one seed, drawn once per grading run (they are only read)."""
    cases = EXERCISES[check].cases(seed)
    _NoGenerator(io.BytesIO()).dump([case.args for case in cases])
    return cases


def _plan(chapter: str, answers: dict, cell_seconds: float) -> dict:
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
    return {"cells": cells, "cell_seconds": cell_seconds, "call_seconds": min(30.0, cell_seconds)}


# ----------------------------------------------------------------------------- isolation

@cache
def no_network_prefix() -> tuple[str, ...]:
    """The command prefix that starts a process without a network on this machine, or () where none works.

    ``unshare --net`` (Linux) gives the process a network namespace of its own with no interface
    but loopback; as an ordinary user it needs ``--map-root-user`` (a user namespace). The grader
    uses it where the full sandbox is unavailable.
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


@cache
def _import_paths() -> tuple[Path, ...]:
    """The folders the harness imports from (its sys.path, with what .pth files add), but the checkout itself."""
    env = _environment(sandbox.HOME, str(PACKAGE.parent), 1)
    try:
        found = subprocess.run([sys.executable, "-c", "import sys; print(*sys.path, sep='\\n')"], env=env,
                               capture_output=True, text=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        found = []
    return tuple(Path(p) for p in found if p and Path(p).is_dir() and Path(p).resolve() != PACKAGE.parent)


def _view(hidden: list[Path]) -> dict:
    """What a sandboxed submission sees: not ``hidden``, the course's notebooks (the solutions) or its checkout."""
    checkout = [PACKAGE.parent] if (PACKAGE.parent / "notebooks").is_dir() else []
    return sandbox.view([*hidden, NOTEBOOKS, *checkout], [PACKAGE, *_import_paths()])


def _environment(home: str, path: str, threads: int) -> dict:
    return {
        "PATH": os.environ.get("PATH", ""), "HOME": home, "PYTHONPATH": path, "TMPDIR": str(Path(home).parent),
        "SDLAB_QUICK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",  # the CPU only: the limits cannot hold a GPU's memory
        "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1", "TQDM_DISABLE": "1",
        "MPLCONFIGDIR": f"{home}/mpl", "HF_HOME": f"{home}/hf",
    }


def isolation() -> sandbox.Isolation:
    """How this machine isolates submissions, tried once: in a namespace sandbox, or only in processes."""
    return sandbox.isolation(_view([]), [sys.executable, "-c", PROBE],
                             _environment(sandbox.HOME, str(PACKAGE.parent), 1))


def default_memory_limit(jobs: int) -> float:
    """GB of memory each submission may use by default: three quarters of the machine's, shared by the jobs."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 16e9
    return max(2.0, round(0.75 * total / jobs / 1e9, 1))


def _limits(time_limit: float, threads: int, memory_limit: float, sandboxed: bool) -> dict:
    limits = {"memory": int(memory_limit * 1e9), "cpu": int(time_limit * threads) + 60, "file": MAX_FILE_BYTES}
    if sandboxed:  # outside a sandbox the count would include every process of the teacher's account
        limits["processes"] = MAX_PROCESSES
    return limits


# ----------------------------------------------------------------------------- talking to the harness

class Ended(Exception):
    """The submission's process can no longer answer: it ended, crashed, hung or sent something unreadable."""


def _wait(fd: int, event: int, deadline: float) -> None:
    """Wait until the pipe can be read or written (``event``), or raise TimeoutError at the deadline."""
    poll = select.poll()
    poll.register(fd, event)
    if not poll.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        raise TimeoutError


def _write(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, select.POLLOUT, deadline)
        view = view[os.write(fd, view):]  # BrokenPipeError once the process is gone


def _read(fd: int, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        _wait(fd, select.POLLIN, deadline)
        chunk = os.read(fd, min(size - len(data), 2**20))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class Harness:
    """A submission's harness process, and the two pipes the grader talks to it through, one request at a time."""

    def __init__(self, argv: list[str], env: dict, cwd: str, time_limit: float) -> None:
        self.time_limit, self.deadline = time_limit, time.monotonic() + time_limit
        self.log = tempfile.TemporaryFile()  # the student's printed output: no name, so nothing else can open it
        self.answered = 0
        requests_in, self.requests = os.pipe()
        self.replies, replies_out = os.pipe()
        try:
            self.process = subprocess.Popen(
                [*argv, str(requests_in), str(replies_out)], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=self.log, stderr=subprocess.STDOUT, pass_fds=(requests_in, replies_out), start_new_session=True)
        finally:
            os.close(requests_in)
            os.close(replies_out)
        os.set_blocking(self.requests, False)

    def ask(self, request: dict, seconds: float) -> dict:
        """Send one request and return its reply. It may take ``seconds`` (its own limit in the harness) and a
        grace, never past the notebook's time limit; raises :class:`Ended` when no readable reply comes."""
        allowance = seconds + GRACE_SECONDS + (0 if self.answered else STARTUP_SECONDS)
        deadline = min(self.deadline, time.monotonic() + allowance)
        try:
            _write(self.requests, pack(request), deadline)
            size = HEADER.unpack(_read(self.replies, HEADER.size, deadline))[0]
            if size > MAX_MESSAGE:
                raise Ended(f"it sent the grader a reply of {size} bytes, more than a report can be")
            data = _read(self.replies, size, deadline)
        except TimeoutError:
            if deadline == self.deadline:
                raise Ended(f"it ran past the time limit of {self.time_limit:g} s for a notebook") from None
            raise Ended(f"it stopped answering: hung for {allowance:g} s, past its own time limit") from None
        except (BrokenPipeError, EOFError):
            raise Ended(self._how_it_ended()) from None
        try:
            reply = unpack(data)
        except Exception as error:
            raise Ended(f"it sent the grader something that is not a report ({type(error).__name__})") from None
        self.answered += 1
        return reply

    def _how_it_ended(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code == -signal.SIGXCPU:
            how = f"its process used up its CPU time ({signal.Signals(-code).name})"
        elif code is not None and code < 0:
            how = f"its process was killed by {signal.Signals(-code).name}"
        elif code:
            how = f"its process ended with exit status {code}"
        else:
            how = "its process ended early"
        if not self.answered:  # it never started: say why
            self.log.seek(max(0, self.log.seek(0, os.SEEK_END) - 600))
            how += f"; its last output: {self.log.read().decode(errors='replace').strip()}"
        return how

    def close(self) -> None:
        """End the process and every process it started: at once, or a second after the pipes close."""
        os.close(self.requests)  # the harness reads the end of its requests and exits
        os.close(self.replies)
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            # Inside a sandbox the harness is process 1 of its PID namespace: killed, it takes every process
            # of the namespace with it, and unshare returns once they are all gone.
            for child in _children(self.process.pid):
                os.kill(child, signal.SIGKILL)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # what is left of its session (outside a sandbox)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()


@contextmanager
def _harness(isolation: sandbox.Isolation, hidden: list[Path], time_limit: float, threads: int,
             memory_limit: float) -> Iterator[Harness]:
    """Start a harness in a sandbox (or, without one, in a temporary folder with a private copy of sdlab)."""
    limits = _limits(time_limit, threads, memory_limit, isolation.sandboxed)
    with tempfile.TemporaryDirectory(prefix="sdlab-grade-") as tmp:  # a sandbox has its own, in memory
        try:
            if isolation.sandboxed:
                home, path, cwd, prefix = sandbox.HOME, str(PACKAGE.parent), "/", ()
                config = {**_view(hidden), "limits": limits}
            else:
                work = Path(tmp)
                shutil.copytree(PACKAGE, work / "lib" / "sdlab", ignore=shutil.ignore_patterns("__pycache__"))
                (work / "home").mkdir()
                home, path, cwd = str(work / "home"), str(work / "lib"), str(work / "home")
                config, prefix = {"limits": limits}, no_network_prefix()
            argv = sandbox.command(isolation, config, [sys.executable, "-m", "sdlab.grading.harness"])
            harness = Harness([*prefix, *argv], _environment(home, path, threads), cwd, time_limit)
        except OSError as error:
            raise Ended(f"the grader could not start its process ({error})") from None
        try:
            yield harness
        finally:
            harness.close()


def _converse(harness: Harness, plan: dict, seeds: list[int], observed: dict) -> None:
    """Run the plan's cells in the harness and observe each exercise; ``observed`` holds what came back."""
    for cell in plan["cells"]:
        observed["at"] = cell["label"]
        if cell["kind"] == "grade":
            observed["exercises"].setdefault(cell["exercise"], {}).update(_observe(harness, cell, plan, seeds))
            continue
        seconds = plan["cell_seconds"]
        reply = harness.ask({"do": "run", "source": cell["source"], "seconds": seconds}, seconds)
        if reply.get("error") is not None:
            text = str(reply["error"])[:400]
            observed["cells"].append({"label": cell["label"], "error": text, "seconds": reply.get("seconds")})
            if cell["kind"] == "answer":
                observed["exercises"].setdefault(cell["exercise"], {})["cell_error"] = text
    observed["at"], observed["finished"] = "end", True


def _observe(harness: Harness, cell: dict, plan: dict, seeds: list[int]) -> dict:
    """Send the exercise's cases one at a time, each seed in turn, and stop at its first mistake."""
    check, seconds = EXERCISES[cell["check"]], plan["call_seconds"]
    observations: dict[str, list] = {}
    calls: list[str] = []
    for seed in seeds:
        cases = _cases(cell["check"], seed)
        seen = observations[str(seed)] = []
        for case in cases:
            reply = harness.ask({"do": "observe", "function": cell["function"], "check": cell["check"],
                                 "args": case.args, "where": case.where, "names": list(case.names),
                                 "seconds": seconds}, seconds)
            if "missing" in reply:
                return {"missing": str(reply["missing"])[:400]}
            seen.append(reply.get("seen"))
            names = reply.get("course_calls")
            calls += [str(name)[:200] for name in names if str(name) not in calls] if isinstance(names, list) else []
            if _problem(check, cases[: len(seen)], seen):
                return {"observations": observations, "course_calls": calls}  # the verdict cannot change
    return {"observations": observations, "course_calls": calls}


def _problem(check, cases: list[Case], seen: list) -> str | None:
    """The first mistake in these observations (``check.judge``), which came from a student's process."""
    if any(not isinstance(s, dict) for s in seen):
        return "did not run: the results were not observations"
    try:
        return check.judge(cases, seen)
    except Exception as error:  # a crafted observation (a string where a tensor belongs...)
        return f"did not run: its results could not be judged ({type(error).__name__})"


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
        cases = _cases(exercise.check, seed)
        problem = _problem(check, cases[: len(seen)], seen)
        if problem is None and len(seen) < len(cases):
            problem = "not every case was observed"
        if problem is not None:
            if "NotImplementedError" in problem:
                return False, "not answered yet: the answer cell still raises NotImplementedError"
            if seed != seeds[0] and not problem.startswith("did not run"):
                problem = f"passed the notebook's check, but not the grader's other inputs: {problem}"
            return False, problem
    return True, "right"


def _course_calls(exercise: GradedExercise, source: str, entry: dict) -> str:
    """The course's own functions an answer calls, named in a sentence ("" for none, or where they are allowed).

    The grader finds them in the answer's code (``sd.schedules...``) and the harness on the way (a call to
    the course's code from the student's, however it was reached).
    """
    used = course_names(source, exercise.function)
    used += [name for name in entry.get("course_calls", []) if name not in used]
    if not used or exercise.course_calls == "allow":
        return ""
    return f"it calls the course's own {', '.join(used[:4])}{', ...' if len(used) > 4 else ''}"


def _empty_rows(sub: Submission, notebook: str, exercises: list[GradedExercise], why: str) -> None:
    for exercise in exercises:
        sub.rows.append(Row(sub.student, notebook, exercise.answer_id, 0.0, exercise.points, f"did not run: {why}"))


def grade_one(path: Path, folder: Path, seeds: list[int], time_limit: float, threads: int,
              cell_time_limit: float = 120.0, *, memory_limit: float | None = None,
              hidden: tuple[Path, ...] = ()) -> Submission:
    """Grade one submitted notebook. Never raises for a broken submission: its rows say what happened.

    ``memory_limit`` is in GB; ``hidden`` names folders besides ``folder`` that the submission must not see.
    """
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
    plan = _plan(chapter, answers, min(cell_time_limit, time_limit))
    observed: dict = {"at": "start", "cells": [], "exercises": {}, "finished": False}
    ended = ""
    try:
        with _harness(isolation(), [Path(folder), *hidden], time_limit, threads,
                      memory_limit or default_memory_limit(1)) as harness:
            _converse(harness, plan, seeds, observed)
    except Ended as end:
        ended = f"{end} (in {observed['at']})"
    if ended and not observed["cells"] and not observed["exercises"]:
        _empty_rows(sub, notebook, exercises, ended)
        sub.seconds = time.monotonic() - started
        return sub
    if ended:
        sub.notes.append(f"{notebook}: {ended}")
    for failure in observed["cells"][:10]:
        sub.notes.append(f"{notebook}, {failure['label']}: {failure['error']}")
    answer_cells = []  # the answer cells run so far: a patch in one reaches the exercises after it
    for exercise in exercises:
        found = answers[exercise.answer_id]
        entry = observed["exercises"].get(exercise.answer_id)
        notes = [found.note] if found.note and found.source is not None else []
        if found.source is None:
            right, feedback = False, f"did not run: {found.note}"
        elif entry is None:
            right, feedback = False, f"did not run: {ended or 'its check was never reached'}"
        else:
            right, feedback = _judge(exercise, entry, seeds)
            if calls := _course_calls(exercise, found.source, entry):
                if right and exercise.course_calls == "fail":
                    right, feedback = False, f"no points: {calls} instead of computing the result itself"
                else:
                    notes.append(f"note: {calls} instead of writing the formula")
        if found.source is not None:
            answer_cells.append(found.source)
            tools = [tool for source in answer_cells for tool in introspection(source)]
            if tools:
                sub.flagged = True
                notes.append(f"note for the teacher: the answer cells use {', '.join(dict.fromkeys(tools))}, which "
                             "no formula needs and a patch of the grader does: read them before accepting these points")
        if notes:
            feedback = f"{feedback} ({'; '.join(notes)})"
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


def _empty_folders(folder: Path) -> list[Submission]:
    """A row for each student's folder that holds no notebook: it is a submission all the same."""
    subs = []
    for student in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(p for p in student.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts):
            sub = Submission(student, student.name, notes=[f"{student.name}/: the folder holds no notebook"])
            sub.rows.append(Row(student.name, f"{student.name}/", "(notebook)", 0.0, 0.0,
                                "did not run: the folder holds no notebook"))
            subs.append(sub)
    return subs


def grade_folder(folder: Path, out: Path, *, jobs: int | None = None, time_limit: float = 300.0,
                 cell_time_limit: float = 120.0, seeds: list[int] | None = None, progress: bool = True,
                 memory_limit: float | None = None) -> list[Row]:
    """Grade every ``*.ipynb`` under ``folder``; write ``out/grades.csv`` and ``out/feedback/<student>.md``.

    ``memory_limit``: GB each submission may use (default: three quarters of the machine's memory, shared
    by the jobs).
    """
    folder, out = Path(folder).resolve(), Path(out).resolve()
    paths = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs or cores, len(paths) or 1))
    threads = max(1, cores // jobs)
    memory_limit = memory_limit or default_memory_limit(jobs)
    seeds = seeds or [0, *(secrets.randbelow(2**31 - 1) + 1 for _ in range(2))]
    _chapters()  # read the course's notebooks once, before the threads start
    how = isolation()
    if not how.sandboxed and paths:
        print(f"note: grading without a sandbox, because {how.why}. Each submission still runs in a process of "
              "its own with limits of time and memory, but it can read and write what your account can, and a "
              "process it starts in a session of its own can outlive its grading (see the teacher's guide).",
              file=sys.stderr, flush=True)
    done: list[Submission] = _empty_folders(folder)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(grade_one, path, folder, seeds, time_limit, threads, cell_time_limit,
                               memory_limit=memory_limit, hidden=(out,)) for path in paths]
        for future in futures:
            sub = future.result()
            done.append(sub)
            if progress:
                points = sum(r.points for r in sub.rows)
                most = sum(r.max_points for r in sub.rows)
                flag = " (flagged: read its answer cells, see the feedback)" if sub.flagged else ""
                print(f"graded {sub.path.relative_to(folder)} ({sub.student}): {points:g}/{most:g} in "
                      f"{sub.seconds:.0f} s{flag}", flush=True)
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
    written = set()
    for student in sorted({sub.student for sub in done}):
        written.add(f"{_safe(student)}.md")
        (out / "feedback" / f"{_safe(student)}.md").write_text(
            _feedback_text(student, [s for s in done if s.student == student]))
    for stale in (out / "feedback").glob("*.md"):  # from an earlier run, or planted: not this run's feedback
        if stale.name not in written:
            stale.unlink()
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
    parser.add_argument("--memory-limit", type=float, default=None,
                        help="GB of memory one submission may use (default: 3/4 of the machine's, shared by the jobs)")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="hidden seed (repeat for several; default: two drawn at random, saved in seeds.json)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    for flag, seconds in (("--time-limit", args.time_limit), ("--cell-time-limit", args.cell_time_limit)):
        if not seconds > 0:  # also rejects nan
            parser.error(f"{flag} must be a positive number of seconds; got {seconds}")
    if args.memory_limit is not None and not args.memory_limit >= 0.5:
        parser.error(f"--memory-limit must be at least 0.5 GB; got {args.memory_limit}")
    if not args.submissions.is_dir():
        raise SystemExit(f"{args.submissions} is not a folder of notebooks")
    seeds = [0, *args.seed] if args.seed else None
    started = time.monotonic()
    rows = grade_folder(args.submissions, args.out, jobs=args.jobs, time_limit=args.time_limit,
                        cell_time_limit=args.cell_time_limit, seeds=seeds, memory_limit=args.memory_limit)
    students = len({r.student for r in rows})
    print(f"wrote {args.out / 'grades.csv'} ({len(rows)} rows, {students} students) and {args.out / 'feedback'}/ "
          f"in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
