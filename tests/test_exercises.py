"""Every exercise of the course: right answers pass on every seed, answers that fool a weak check do not.

The table of answers is tests/exercise_answers.py. Besides its fragile answers, three cheats are
built from each reference answer: one that replays the values the notebook's check saw, one that
changes its input in place, and one that computes in float64 whatever it is given.
"""

from __future__ import annotations

import pytest
import torch
from exercise_answers import ANSWERS, DTYPE, IN_PLACE

import sdlab as sd
from sdlab.checks import EXERCISES, ExerciseError
from sdlab.grading.exercises import course_notebooks, exercises_of

SEEDS = range(6)  # 0: the notebook's inputs; the others are hidden ones as the grader draws them


def first_failure(name: str, fn) -> str | None:
    """The feedback of the first seed on which ``fn`` fails the check, or None if it passes them all."""
    check = getattr(sd.checks, name)
    for seed in SEEDS:
        try:
            check(fn, seed=seed)
        except ExerciseError as error:
            return str(error)
    return None


def test_every_graded_exercise_has_its_answers():
    used = {e.check for stem, nb in course_notebooks().items() for e in exercises_of(stem, nb)}
    assert used == set(ANSWERS) == set(EXERCISES)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_every_right_answer_passes_on_every_seed(name, capsys):
    answers = ANSWERS[name]
    for fn in [answers.reference, *answers.also_right]:
        assert first_failure(name, fn) is None
    assert capsys.readouterr().out.count("✓") == len(SEEDS) * (1 + len(answers.also_right))


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_every_exercise_is_tried_with_at_least_five_fragile_answers(name):
    assert len(ANSWERS[name].fragile) >= 5


@pytest.mark.parametrize("name, index", [(n, i) for n in sorted(ANSWERS) for i in range(len(ANSWERS[n].fragile))])
def test_a_fragile_answer_fails_and_its_feedback_names_the_slip(name, index):
    fn, words = ANSWERS[name].fragile[index]
    feedback = first_failure(name, fn)
    assert feedback is not None, "this wrong answer passed"
    assert words in feedback, feedback


def _floating(args):
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]


def _fingerprint(args) -> tuple:
    return tuple((tuple(a.shape), float(a.double().sum())) if isinstance(a, torch.Tensor) else repr(a) for a in args
                 if not isinstance(a, torch.nn.Module))


def replaying(name: str):
    """An answer that returns what the reference returned for the notebook's own inputs, and zeros otherwise."""
    seen = {_fingerprint(case.args): ANSWERS[name].reference(*case.args) for case in EXERCISES[name].cases(0)}
    return lambda *args: seen.get(_fingerprint(args), torch.zeros(()))


def in_place(name: str):
    def fn(*args):
        out = ANSWERS[name].reference(*args)
        args[_floating(args)[0]].mul_(2)
        return out
    return fn


def float64_only(name: str):
    def fn(*args):
        return ANSWERS[name].reference(*(a.double() if i in _floating(args) else a for i, a in enumerate(args)))
    return fn


TENSOR_EXERCISES = sorted(n for n in ANSWERS if ANSWERS[n].tensor_inputs)


@pytest.mark.parametrize("name", TENSOR_EXERCISES)
def test_replayed_values_pass_the_notebook_and_fail_the_hidden_inputs(name):
    cheat = replaying(name)
    if name != "check_diffusion_loss":  # a replayed loss is caught at once: no gradient reaches the model
        assert getattr(sd.checks, name)(cheat, seed=0), "the cheat should fool the notebook's own check"
    assert first_failure(name, cheat) is not None


@pytest.mark.parametrize("name", TENSOR_EXERCISES)
def test_an_answer_that_changes_its_input_fails(name):
    assert IN_PLACE in (first_failure(name, in_place(name)) or "")


@pytest.mark.parametrize("name", TENSOR_EXERCISES)
def test_an_answer_right_only_in_float64_fails(name):
    assert DTYPE in (first_failure(name, float64_only(name)) or "")
