"""Runs one submission inside its own process, one request from the grader at a time.

    python -m sdlab.grading.harness REQUESTS_FD REPLIES_FD

The grader starts this in a fresh process (in the sandbox of :mod:`sdlab.grading.sandbox` where the
machine allows one) and talks to it over two pipes: it sends a request, this process answers it, and only
then comes the next one. There are two requests:

- ``run``: run one cell of the chapter (the student's answer cells in place of the stubs) in a fresh
  IPython shell, the engine of a Jupyter kernel, so magics such as ``%matplotlib`` work; the reply says
  whether it raised;
- ``observe``: call the student's function on one case of a check; the grader sends that case's inputs
  (tensors, numbers, a stand-in model or scheduler) with the request. The reply is what came back
  (:meth:`sdlab.checks.core.Exercise.observe`) and which of the course's own functions the call reached.

The process never learns the grader's hidden seeds: it gets the inputs of one case at a time, after the
student's code has run, and the grader judges the replies in its own process. The student's printed output
goes to a log file, never to the replies pipe, so a print cannot pass for a report. A submission can still
write to that pipe on purpose, or patch this module in its own process: it then reports what it likes, but
to earn points it must still compute the right answers for inputs it sees only as they come. The grader
notes in the feedback the tools such a patch needs (``gc``, ``inspect``, ``exec``...), see
:func:`sdlab.grading.exercises.introspection`.

Everything the harness needs is bound before the first student cell runs: a submission that patches
``sdlab.checks`` changes what its own notebook prints, not what is observed here.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import sys
import time

import torch

from sdlab.checks import EXERCISES
from sdlab.checks.core import Case

__all__ = ["pack", "unpack", "HEADER", "MAX_MESSAGE", "main"]

_OBSERVERS = {name: exercise.observe for name, exercise in EXERCISES.items()}
_SAVE, _LOAD = torch.save, torch.load
COURSE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the sdlab package
GRADING = os.path.join(COURSE, "grading")
HEADER = struct.Struct(">Q")  # each message: its length in 8 bytes, then the message as torch.save wrote it
MAX_MESSAGE = 64 * 2**20
MAX_OUTPUT = 2_000_000  # characters of printed output kept per submission; the rest is dropped


# ----------------------------------------------------------------------------- messages

def pack(message: dict) -> bytes:
    """A message as bytes for the pipe: plain data and tensors only, so :func:`unpack` can be safe."""
    buffer = io.BytesIO()
    _SAVE(message, buffer)
    return HEADER.pack(buffer.tell()) + buffer.getvalue()


def unpack(data: bytes) -> dict:
    """The message in ``data`` (without its length). ``weights_only``: crafted bytes cannot run code."""
    message = _LOAD(io.BytesIO(data), weights_only=True)
    if not isinstance(message, dict):
        raise ValueError(f"a message is a dict, not a {type(message).__name__}")
    return message


def _read(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _receive(fd: int) -> dict | None:
    """The grader's next request, or None when the grader closed the pipe.

    A request may hold any object a check passes to the student's function (a stand-in model, a diffusers
    scheduler), so it is read with the full pickle: only the grader can write to this pipe.
    """
    header = _read(fd, HEADER.size)
    body = None if header is None else _read(fd, HEADER.unpack(header)[0])
    return None if body is None else _LOAD(io.BytesIO(body), weights_only=False)


def _send(fd: int, message: dict) -> None:
    data = memoryview(pack(message))
    while data:
        data = data[os.write(fd, data):]


# ----------------------------------------------------------------------------- limits and guards

class TimeLimit(BaseException):  # a BaseException: `except Exception` in a student's code cannot swallow it
    """A cell or a call ran past its time limit."""


def _on_alarm(signum, frame):
    raise TimeLimit()


def _limited(seconds: float):
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))


def _unlimited() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


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
    """A guard for pure-Python connections; the sandbox (or ``unshare --net``) also gives the process no network."""
    socket.socket.connect = _no_network  # type: ignore[method-assign]
    socket.create_connection = _no_network  # type: ignore[assignment]
    socket.getaddrinfo = _no_network  # type: ignore[assignment]


def _error_text(error: BaseException | None, seconds: float) -> str:
    if isinstance(error, TimeLimit):
        return f"it ran past its time limit of {seconds:g} s"
    if isinstance(error, SystemExit):
        return "it called exit() (SystemExit)"
    return f"{type(error).__name__}: {error}"[:400]


class _CourseCalls:
    """While active, the course's own functions that the student's code calls, by name.

    A call counts when code of the ``sdlab`` package is entered from code outside it: the student's, or a
    library's on its way. Not counted: this harness's own code (a print reaches its output cap), and the
    methods of the objects a case passes in (``model(x_t, t)`` is part of the exercise).
    """

    def __init__(self, fn, args: tuple) -> None:
        self.names: list[str] = []
        if getattr(fn, "__module__", None) and fn.__module__.split(".")[0] == "sdlab":  # fn = sd.schedules.x
            self.names.append(f"{fn.__module__}.{getattr(fn, '__qualname__', '?')}")
        self._allowed = {value.__code__ for arg in args for cls in type(arg).__mro__
                         for value in vars(cls).values() if hasattr(value, "__code__")}

    def _trace(self, frame, event, arg):
        code, caller = frame.f_code, frame.f_back
        if (event == "call" and code.co_filename.startswith(COURSE + os.sep) and code not in self._allowed
                and not code.co_filename.startswith(GRADING + os.sep)
                and not (caller and caller.f_code.co_filename.startswith(COURSE + os.sep))):
            name = f"{frame.f_globals.get('__name__', '?')}.{getattr(code, 'co_qualname', code.co_name)}"
            if name not in self.names:
                self.names.append(name)
        return None  # no line-by-line tracing: only calls

    def __enter__(self) -> _CourseCalls:
        self._before = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self._before)


def _plain_tensors(value):
    """Observations with plain tensors only (a subclass of Tensor would not load in the grader)."""
    if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
        return value.as_subclass(torch.Tensor)
    if isinstance(value, dict):
        return {key: _plain_tensors(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain_tensors(item) for item in value)
    return value


# ----------------------------------------------------------------------------- the two requests

def _run(shell, request: dict) -> dict:
    """Run one cell within its time limit; say whether it raised."""
    seconds, started = request["seconds"], time.monotonic()
    _limited(seconds)
    try:
        outcome = shell.run_cell(request["source"], store_history=False)
        error = outcome.error_before_exec or outcome.error_in_exec
    except TimeLimit as limit:
        error = limit
    finally:
        _unlimited()
    return {"error": None if error is None else _error_text(error, seconds),
            "seconds": round(time.monotonic() - started, 1)}


def _observe(shell, request: dict) -> dict:
    """Call the student's function on the case sent, within the time limit for one call; say what came back."""
    fn = shell.user_ns.get(request["function"])
    if not callable(fn):
        return {"missing": f"{request['function']} is not defined as a function when its check runs"}
    seconds = request["seconds"]
    case = Case(tuple(request["args"]), request["where"], tuple(request["names"]))
    calls = _CourseCalls(fn, case.args)
    _limited(seconds)
    try:
        with calls:
            seen = _OBSERVERS[request["check"]](fn, case)
    except TimeLimit:
        seen = {"kind": "error", "error": f"TimeLimit: one call took longer than {seconds:g} s"}
    except BaseException as error:  # SystemExit, KeyboardInterrupt: a crash of the answer
        seen = {"kind": "error", "error": _error_text(error, seconds)}
    finally:
        _unlimited()
    return {"seen": _plain_tensors(seen), "course_calls": calls.names}


_REQUESTS = {"run": _run, "observe": _observe}


def serve(requests: int, replies: int) -> None:
    """Answer the grader's requests until it closes the pipe or says ``end``."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    while (request := _receive(requests)) is not None and request.get("do") in _REQUESTS:
        _send(replies, _REQUESTS[request["do"]](shell, request))


def main(argv: list[str]) -> None:
    requests, replies = int(argv[0]), int(argv[1])
    for fd in (requests, replies):
        os.set_inheritable(fd, False)  # a process the submission starts does not get the pipes
    _switch_off_network()
    sys.stdout, sys.stderr = _CappedStream(sys.stdout), _CappedStream(sys.stderr)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    serve(requests, replies)
    sys.stdout.flush()
    os._exit(0)  # do not wait for threads or atexit handlers a submission may have left behind


if __name__ == "__main__":
    main(sys.argv[1:])
