"""The shared core of the exercise checks: one closeness rule, one way to name a slip, one result.

An exercise is graded on *cases*, inputs drawn from a seed: seed 0 gives the inputs the
notebook's check uses, other seeds give the autograder's hidden ones. Each case varies what a
fragile answer gets wrong: the schedule, the stride, the batch size, float32 against float64.
A chapter module says, for each case, what the right answer is and which plausible slips give
which wrong ones (:class:`Answer`).

Grading is split in two halves so that the autograder can keep them in separate processes:

- :meth:`Exercise.observe` runs the student's function on one case and records what came
  back (the result, whether it changed its inputs, whether it crashed);
- :meth:`Exercise.judge` compares those observations with the right answers and returns the
  first mistake as a sentence, or None. It trusts nothing but the numbers observed.

In a notebook, :meth:`Exercise.check` does both in one process: it prints one line when
every case is right and raises :class:`ExerciseError` (an AssertionError, so nbgrader and
pytest count it as a failed test) with the message otherwise. A message names the likely
slip where one explains the numbers; it never prints a solution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ExerciseError", "PASSED_MARK", "Case", "Answer", "Exercise", "close", "observe_call"]

PASSED_MARK = "✓"  # U+2713: in the fonts every browser has (an emoji such as ✅ needs an emoji font)


class ExerciseError(AssertionError):
    """The student's answer is not right yet; the message says why."""


@dataclass(frozen=True)
class Case:
    """One graded call: the arguments, and where it is (said in messages: "at t = 500, float32")."""

    args: tuple
    where: str = ""
    names: tuple[str, ...] = ()  # the arguments' names, for "you changed `x0` in place"


@dataclass
class Answer:
    """What a case should return, the (hint, wrong result) of each plausible slip, and what to recheck."""

    expected: Any
    slips: Sequence[tuple[str, Any]] = field(default_factory=list)
    what: str = "your result"
    advice: str = ""


# ----------------------------------------------------------------------------- the closeness rule

TOLERANCE = 1e-5  # relative to the size of the numbers: float32's round-off is about 1e-7
HALF_TOLERANCE = 1e-2  # float16 and bfloat16 keep about three digits


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """The one closeness rule: equal shapes, and values within 1e-5 of the larger of |expected| and 1.

    Loose enough for a right answer computed in float32 (or with float32 constants, such as the
    notebook's schedule), tight enough that every slip the checks name is told apart.
    """
    if got.shape != expected.shape:
        return False
    tol = HALF_TOLERANCE if got.dtype in (torch.float16, torch.bfloat16) else TOLERANCE
    got, expected = got.double(), expected.double()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    return bool(torch.allclose(got, expected, rtol=tol, atol=tol * scale, equal_nan=False))


def _shape(x: torch.Tensor) -> str:
    return str(tuple(x.shape))


# ----------------------------------------------------------------------------- observing a call

def _plain(out: Any) -> dict:
    """What came back, in plain serialisable form: a tensor (kept in its dtype), a string or a kind."""
    if out is None:
        return {"kind": "none"}
    if isinstance(out, str):
        return {"kind": "str", "out": out}
    if isinstance(out, torch.Tensor):
        return {"kind": "tensor", "out": out.detach().cpu().clone(), "requires_grad": out.requires_grad}
    if isinstance(out, bool):
        return {"kind": f"other:{type(out).__name__}"}
    if isinstance(out, int | float):
        return {"kind": "number", "out": torch.tensor(float(out), dtype=torch.float64)}
    try:  # numpy arrays and nested lists of numbers
        tensor = torch.as_tensor(out)
    except Exception:
        return {"kind": f"other:{type(out).__name__}"}
    if tensor.dtype in (torch.float64, torch.float32) and type(out).__module__ == "numpy":
        return {"kind": "tensor", "out": tensor.clone(), "requires_grad": False}
    return {"kind": "number", "out": tensor.double()}


def _clone(arg: Any) -> Any:
    if isinstance(arg, torch.Tensor):
        return arg.detach().clone()
    return arg


def observe_call(fn: Callable, case: Case) -> dict:
    """Call ``fn`` on fresh copies of the case's arguments; record the result and the changed inputs."""
    args = tuple(_clone(a) for a in case.args)
    try:
        out = fn(*args)
    except Exception as error:  # the student's own bug: report it, never crash the grading
        return {"kind": "error", "error": f"{type(error).__name__}: {error}"[:400]}
    seen = _plain(out)
    seen["changed"] = [i for i, (new, old) in enumerate(zip(args, case.args))
                       if isinstance(old, torch.Tensor) and not torch.equal(new, old)]
    return seen


# ----------------------------------------------------------------------------- the exercise

@dataclass(frozen=True)
class Exercise:
    """How one exercise is graded: its cases for a seed, the right answer for each, and the verdict.

    ``answer(case)`` gives the :class:`Answer`; ``observe`` may record more than the result (a loss
    records its gradient); ``extra(case, seen)`` judges those extra records before the values;
    ``error_hint(message)`` adds a hint to a crash; ``verdict`` replaces the whole tensor verdict
    (a multiple-choice answer).
    """

    title: str
    cases: Callable[[int], list[Case]]
    answer: Callable[[Case], Answer] | None = None
    observe: Callable[[Callable, Case], dict] = observe_call
    extra: Callable[[Case, dict], str | None] | None = None
    error_hint: Callable[[str], str] | None = None
    verdict: Callable[[Case, dict], str | None] | None = None

    def judge_case(self, case: Case, seen: dict) -> str | None:
        """The first mistake in one observation, as a sentence; None when it is right."""
        at = f"{case.where}: " if case.where else ""
        if seen.get("kind") == "error":
            hint = self.error_hint(seen["error"]) if self.error_hint else ""
            return f"{at}your function raised {seen['error']}{hint}"
        if self.verdict is not None:
            return self.verdict(case, seen)
        if seen.get("kind") == "none":
            return f"{at}your function returned None: did you forget `return`?"
        if seen.get("kind", "").startswith("other:"):
            return f"{at}your function should return a tensor; got a {seen['kind'][6:]}"
        if seen.get("changed"):
            names = [case.names[i] if i < len(case.names) else f"argument {i + 1}" for i in seen["changed"]]
            return (f"{at}your function changed its input {', '.join(f'`{n}`' for n in names)} in place "
                    "(an operation ending in _ such as add_, or an assignment into it); compute a new tensor")
        if self.extra is not None and (problem := self.extra(case, seen)):
            return f"{at}{problem}"
        answer = self.answer(case)
        got, expected = seen["out"], answer.expected
        if expected.dim() == 0 and got.numel() == 1:  # one number: (), (1,) and (1, 1) are all fine
            got = got.reshape(())
        if close(got, expected):
            if _same_dtype(seen, case, got):
                return None
            return (f"{at}the values are right, but your result is {dtype_name(got.dtype)} while the inputs are "
                    f"{dtype_name(_input_dtype(case))}: keep the inputs' dtype (a constant made with "
                    "dtype=torch.float64, or .double(), changes it)")
        for hint, wrong in answer.slips:
            if wrong is not None and close(got, wrong):
                return f"{at}not yet: {hint}."
        if got.shape != expected.shape:
            return f"{at}{answer.what} should have shape {_shape(expected)}; got {_shape(got)}"
        err = float((got.double() - expected.double()).abs().max())
        advice = f"; {answer.advice}" if answer.advice else ""
        return f"{at}{answer.what} is off by up to {err:.4g}{advice}"

    def judge(self, cases: Sequence[Case], observations: Sequence[dict]) -> str | None:
        """The first mistake over all cases, or None; names an answer that ignores its inputs."""
        earlier: list[tuple[Case, torch.Tensor]] = []
        for case, seen in zip(cases, observations):
            problem = self.judge_case(case, seen)
            out = seen.get("out")
            if problem and isinstance(out, torch.Tensor) and self.answer is not None:
                for other, before in earlier:
                    if (before.shape == out.shape and close(out, before)
                            and not close(self.answer(other).expected, self.answer(case).expected)):
                        return (f"{problem}. Your function returned the same numbers for other inputs "
                                f"({other.where or 'the first case'}): it must compute from its arguments, "
                                "not from a variable of the notebook or a value copied from an output")
            if problem:
                return problem
            if isinstance(out, torch.Tensor):
                earlier.append((case, out))
        return None

    def check(self, fn: Callable, *, seed: int = 0) -> bool:
        """Grade ``fn`` on this seed's cases: print one line and return True, or raise ExerciseError."""
        if not callable(fn):
            raise ExerciseError(f"pass your function itself (not its result); got a {type(fn).__name__}")
        cases = self.cases(seed)
        observations = []
        for case in cases:  # stop at the first wrong case: later ones may be slow for a broken answer
            observations.append(self.observe(fn, case))
            if problem := self.judge(cases[: len(observations)], observations):
                raise ExerciseError(problem)
        print(f"{PASSED_MARK} {self.title}: all checks passed.")
        return True


def _input_dtype(case: Case) -> torch.dtype | None:
    """The floating dtype of the case's tensor inputs (they share one), or None."""
    for arg in case.args:
        if isinstance(arg, torch.Tensor) and arg.is_floating_point():
            return arg.dtype
    return None


def _same_dtype(seen: dict, case: Case, got: torch.Tensor) -> bool:
    """Tensors returned for tensor inputs keep the inputs' floating dtype (numbers and ints are exempt)."""
    dtype = _input_dtype(case)
    return seen.get("kind") != "tensor" or dtype is None or not got.is_floating_point() or got.dtype == dtype


# ----------------------------------------------------------------------------- inputs shared by the chapters

def generator(seed: int, salt: int) -> torch.Generator:
    """A generator for one exercise and seed: ``salt`` keeps the exercises' inputs apart."""
    return torch.Generator().manual_seed(1_000_003 * seed + salt)


def uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))


def randint(g: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=g))


def random_betas(g: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    """A schedule the notebook never shows: a linear or cosine β of a random length T in [40, 1000]."""
    from sdlab.schedules import make_betas

    steps = randint(g, 40, 1000)
    if float(torch.rand((), generator=g)) < 0.5:
        start = uniform(g, 0.5, 2.0) * 1e-4 * 1000 / steps
        end = min(uniform(g, 0.6, 1.5) * 0.02 * 1000 / steps, 0.5)
        betas, name = make_betas("linear", num_train_timesteps=steps, beta_start=start, beta_end=end), "linear"
    else:
        betas, name = make_betas("cosine", num_train_timesteps=steps), "cosine"
    return betas.to(dtype), f"a {name} schedule of {steps} steps"


def notebook_alphas_cumprod(name: str) -> torch.Tensor:
    """ᾱ of the 1000-step schedule a notebook keeps in its global ``schedule`` (float64)."""
    from sdlab.schedules import make_betas

    return torch.cumprod(1 - make_betas(name), 0)


def plain_number_loss(seen: dict) -> str | None:
    """The slip of a loss returned as a Python number (``.item()``, numpy): no gradient can flow back through it."""
    if seen.get("kind") == "number":
        return ("your loss is a plain number, so it carries no gradient back to the model: avoid .item(), "
                ".detach(), numpy and torch.no_grad() inside the loss")
    return None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def where(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


