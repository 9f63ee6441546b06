"""Runs one submission inside its own process: the chapter's cells with the student's answers in place.

    python -m sdlab.grading.harness PLAN.json RESULTS.pt

The grader starts this in a fresh process (a fresh IPython shell, the engine of a Jupyter kernel,
so magics such as ``%matplotlib`` work) and never imports the student's code itself. For each
exercise it *observes* the student's function on the check's cases (visible and hidden seeds) and
writes what came back to RESULTS.pt after every exercise, so that a later crash, infinite loop or
``os._exit`` loses nothing already observed. Verdicts are reached in the grader's own process.

Everything the harness needs is bound before the first student cell runs: a submission that
patches ``sdlab.checks`` changes what its own notebook prints, not what is observed here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import torch

from sdlab.checks import EXERCISES

_SAVE = torch.save
_REPLACE = os.replace
_EXERCISES = {name: (exercise.cases, exercise.observe) for name, exercise in EXERCISES.items()}
MAX_FILE_BYTES = 256 * 2**20
MAX_OUTPUT = 2_000_000  # characters of printed output kept per submission; the rest is dropped


class TimeLimit(BaseException):  # a BaseException: `except Exception` in a student's code cannot swallow it
    """A cell or a call ran past its time limit."""


def _on_alarm(signum, frame):
    raise TimeLimit()


class _CappedStream:
    """stdout/stderr that stop writing after MAX_OUTPUT characters (a print in an endless loop fills no disk)."""

    def __init__(self, stream) -> None:
        self._stream, self._left = stream, MAX_OUTPUT

    def write(self, text: str) -> int:
        if self._left > 0:
            self._stream.write(text[: self._left])
            self._left -= len(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _no_network(*args, **kwargs):
    raise OSError("the network is switched off while grading")


def _switch_off_network() -> None:
    """A guard for pure-Python connections; the grader also starts the process without a network where it can."""
    socket.socket.connect = _no_network  # type: ignore[method-assign]
    socket.create_connection = _no_network  # type: ignore[assignment]
    socket.getaddrinfo = _no_network  # type: ignore[assignment]


def _limited(seconds: float):
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))


def _unlimited() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


def _error_text(error: BaseException | None, seconds: float) -> str:
    if isinstance(error, TimeLimit):
        return f"it ran past its time limit of {seconds:g} s"
    if isinstance(error, SystemExit):
        return "it called exit() (SystemExit)"
    return f"{type(error).__name__}: {error}"[:400]


def run(plan: dict, results_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    results: dict = {"at": "start", "cells": [], "exercises": {}, "finished": False}

    def save() -> None:
        tmp = results_path.with_suffix(".tmp")
        _SAVE(results, tmp)
        _REPLACE(tmp, results_path)

    save()
    shell = InteractiveShell.instance()
    cell_limit, call_limit = plan["cell_seconds"], plan["call_seconds"]
    for cell in plan["cells"]:
        results["at"] = cell["label"]
        save()
        if cell["kind"] in ("code", "answer"):
            started = time.monotonic()
            _limited(cell_limit)
            try:
                outcome = shell.run_cell(cell["source"], store_history=False)
                error = outcome.error_before_exec or outcome.error_in_exec
            except TimeLimit as limit:
                error = limit
            finally:
                _unlimited()
            if error is not None:
                text = _error_text(error, cell_limit)
                results["cells"].append({"label": cell["label"], "error": text,
                                         "seconds": round(time.monotonic() - started, 1)})
                if cell["kind"] == "answer":
                    results["exercises"].setdefault(cell["exercise"], {})["cell_error"] = text
            continue
        # a graded exercise: observe the student's function on every case of every seed
        entry = results["exercises"].setdefault(cell["exercise"], {})
        fn = shell.user_ns.get(cell["function"])
        if not callable(fn):
            entry["missing"] = f"{cell['function']} is not defined as a function when its check runs"
            save()
            continue
        cases_of, observe = _EXERCISES[cell["check"]]
        observations: dict = {}
        for seed in plan["seeds"]:
            if any(s and "TimeLimit" in s[-1].get("error", "") for s in observations.values()):
                break  # one call ran out of time: do not spend the others' time on this answer
            seen = []
            for case in cases_of(seed):
                _limited(call_limit)
                try:
                    seen.append(observe(fn, case))
                except TimeLimit:
                    seen.append({"kind": "error", "error": f"TimeLimit: one call took longer than {call_limit:g} s"})
                except BaseException as error:  # SystemExit, KeyboardInterrupt: a crash of the answer
                    seen.append({"kind": "error", "error": _error_text(error, call_limit)})
                finally:
                    _unlimited()
                if seen[-1].get("kind") == "error":
                    break  # later cases of this seed would fail the same way
            observations[str(seed)] = seen
        entry["observations"] = observations
        save()
    results["at"] = "end"
    results["finished"] = True
    save()


def _limit_files() -> None:
    """No file this process writes grows past 256 MB; a write past it fails instead of killing the run."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str]) -> None:
    plan = json.loads(Path(argv[0]).read_text())
    results_path = Path(argv[1])
    _limit_files()
    _switch_off_network()
    sys.stdout, sys.stderr = _CappedStream(sys.stdout), _CappedStream(sys.stderr)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    run(plan, results_path)
    sys.stdout.flush()
    os._exit(0)  # do not wait for threads or atexit handlers a submission may have left behind


if __name__ == "__main__":
    main(sys.argv[1:])
