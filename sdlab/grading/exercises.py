"""The graded exercises of a chapter notebook, read from its nbgrader metadata, and found again in a submission.

A chapter's exercise is a pair of cells: the answer cell (nbgrader ``solution: true``, tagged
``hide-input`` so that the website folds the solution away) and, after it, the check cell
(``grade: true``, ``locked: true``) that calls ``sd.checks.check_<name>(<function>)``. The
check cell's ``points`` is the one place an exercise's points are set, and the answer cell's
``sdlab.course_calls`` says what an answer that calls the course's own functions gets (``note``, the
default: its points and a note in the feedback; ``fail``: no points; ``allow``: nothing said). The
grader reads all of this from the course's own notebooks, never from a submission, so editing a
submission's metadata changes nothing.

The grader also reads the submitted answer cells themselves, in its own process, for what a
formula never needs: the course's functions (:func:`course_names`), and the tools that reach into
the process running them (:func:`introspection`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["GradedExercise", "Found", "course_notebooks", "exercises_of", "find_answers", "which_chapter",
           "course_names", "introspection", "COURSE_CALLS"]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
COURSE_CALLS = ("note", "fail", "allow")  # what an answer that calls the course's own functions gets


@dataclass(frozen=True)
class GradedExercise:
    """One exercise of a chapter: its cells, its check and function, and its points."""

    chapter: str  # the notebook's stem, e.g. "01_forward_diffusion"
    answer_id: str  # the answer cell's grade_id: the exercise's name in the grades
    check_id: str
    answer_index: int  # the cells' positions in the chapter notebook
    check_index: int
    check: str  # "check_add_noise"
    function: str  # "my_add_noise": the name the answer cell defines
    points: float
    hint: str
    course_calls: str = "note"  # one of COURSE_CALLS


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _check_call(source: str) -> tuple[str, str] | None:
    """(check name, function name) of a check cell: ``sd.checks.check_x(my_fn)``."""
    match = re.search(r"checks\.(check_\w+)\(\s*(\w+)", source)
    return (match.group(1), match.group(2)) if match else None


def course_notebooks(folder: Path = NOTEBOOKS) -> dict[str, nbformat.NotebookNode]:
    """Every chapter notebook of the course, by stem."""
    return {path.stem: nbformat.read(path, as_version=4) for path in sorted(folder.glob("*.ipynb"))}


def exercises_of(chapter: str, nb: nbformat.NotebookNode) -> list[GradedExercise]:
    """The graded exercises of one chapter notebook, in order."""
    found, answer = [], None
    for index, cell in enumerate(nb.cells):
        meta = _nbgrader(cell)
        if meta.get("solution"):
            answer = (index, cell)
        elif meta.get("grade") and cell.cell_type == "code":
            call = _check_call(cell.source)
            if answer is None or call is None:
                raise ValueError(f"{chapter}: check cell {index} must follow an answer cell and call a check")
            answer_index, answer_cell = answer
            settings = answer_cell.metadata.get("sdlab", {})
            course_calls = settings.get("course_calls", "note")
            if course_calls not in COURSE_CALLS:
                raise ValueError(f"{chapter}: answer cell {answer_index} has sdlab.course_calls {course_calls!r}; "
                                 f"use one of {', '.join(COURSE_CALLS)}")
            found.append(GradedExercise(
                chapter, _nbgrader(answer_cell)["grade_id"], meta["grade_id"], answer_index, index, call[0], call[1],
                float(meta.get("points", 0)), settings.get("hint", ""), course_calls))
            answer = None
    return found


def _defines(source: str, function: str) -> bool:
    """Does this cell's code define ``function`` at the top level (by ``def`` or assignment)?"""
    try:
        tree = ast.parse(_without_magics(source))
    except SyntaxError:
        return re.search(rf"^\s*def\s+{re.escape(function)}\s*\(", source, re.M) is not None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == function for t in node.targets):
            return True
    return False


def _without_magics(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


@dataclass(frozen=True)
class Found:
    """The submission's cell for one exercise (None when it is missing) and what the grader noticed."""

    source: str | None
    note: str = ""


def find_answers(submission: nbformat.NotebookNode, exercises: list[GradedExercise]) -> dict[str, Found]:
    """Find each exercise's answer cell in a submission: by its grade_id, else by the function it defines.

    Students copy, move and delete cells. Several cells with the answer's grade_id: the last one
    is graded (it is the one the student ran last when running top to bottom). No such cell (its
    metadata was lost when it was pasted): the last cell that defines the function is graded.
    """
    code = [cell for cell in submission.cells if cell.get("cell_type") == "code"]
    found = {}
    for exercise in exercises:
        by_id = [cell for cell in code if _nbgrader(cell).get("grade_id") == exercise.answer_id]
        if len(by_id) == 1:
            found[exercise.answer_id] = Found(by_id[0].source)
        elif by_id:
            found[exercise.answer_id] = Found(by_id[-1].source, f"{len(by_id)} copies of the answer cell: graded "
                                                                "the last one")
        else:
            defining = [cell for cell in code if _defines(cell.source, exercise.function)]
            if defining:
                found[exercise.answer_id] = Found(defining[-1].source, "the answer cell had lost its exercise "
                                                  f"label: graded the last cell that defines {exercise.function}")
            else:
                found[exercise.answer_id] = Found(None, f"no answer cell: no cell defines {exercise.function} "
                                                  "(was it deleted?)")
    return found


def which_chapter(submission: nbformat.NotebookNode, filename: str,
                  chapters: dict[str, list[GradedExercise]]) -> str | None:
    """The chapter a submission belongs to: its release label, else its answer cells' ids, else its file name."""
    label = submission.get("metadata", {}).get("sdlab", {}).get("chapter")
    if label in chapters:
        return label
    ids = {_nbgrader(cell).get("grade_id") for cell in submission.cells}
    best = max(chapters, key=lambda c: len(ids & {e.answer_id for e in chapters[c]}), default=None)
    if best is not None and ids & {e.answer_id for e in chapters[best]}:
        return best
    for chapter in chapters:
        if Path(filename).stem.startswith(chapter[:3]) and chapters[chapter]:
            return chapter
    return None


# ----------------------------------------------------------------------------- what an answer cell uses

# Tools no formula needs, and a submission that patches the grader's process does (found through gc or a
# frame, rebuilt with exec...). Dotted names match themselves and what lies under them.
SUSPICIOUS = ("gc", "inspect", "ctypes", "importlib", "marshal", "sys._getframe", "sys._current_frames",
              "sys.settrace", "sys.setprofile", "sys.modules", "exec", "eval", "compile", "__import__", "globals",
              "__builtins__", "os.write", "os.dup2", "os.fdopen", "os.kill", "signal.signal", "signal.setitimer",
              "signal.alarm", "signal.pthread_sigmask", "sdlab.grading")
SUSPICIOUS_ATTRIBUTES = ("__code__", "__globals__", "__subclasses__", "f_back", "f_locals", "f_globals",
                         "gi_frame", "tb_frame")


def _tree(source: str) -> ast.Module | None:
    try:
        return ast.parse(_without_magics(source))
    except SyntaxError:
        return None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to the course's package in a cell, as dotted paths: {"sd": "sdlab", "F": "sdlab.x.F"}."""
    aliases = {"sd": "sdlab", "sdlab": "sdlab"}  # the chapters' own `import sdlab as sd`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sdlab":
                    aliases[alias.asname or "sdlab"] = alias.name if alias.asname else "sdlab"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sdlab":
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _dotted(node: ast.AST, aliases: dict[str, str] | None = None) -> str | None:
    """"sys._getframe" for sys._getframe; a name bound to the course's package is spelt out ("sdlab.schedules")."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    root = (aliases or {}).get(node.id, node.id)
    return ".".join([root, *reversed(parts)])


def _outermost_chains(tree: ast.AST, aliases: dict[str, str]) -> list[str]:
    """Every dotted name in the tree, longest form only (sd.schedules.make_betas, not also sd.schedules)."""
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    chains = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and id(node) not in inner:
            chain = _dotted(node, aliases)
            if chain and chain not in chains:
                chains.append(chain)
    return chains


def course_names(source: str, function: str) -> list[str]:
    """The course's own names (``sdlab.schedules.NoiseSchedule``) that the code of ``function`` refers to."""
    tree = _tree(source)
    if tree is None:
        return []
    aliases = _aliases(tree)
    bodies = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
              and node.name == function]
    bodies += [node.value for node in tree.body if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == function for t in node.targets)]
    found = []
    for body in bodies:
        found += [chain for chain in _outermost_chains(body, aliases)
                  if chain.startswith("sdlab.") and chain not in found]
    return found


def introspection(source: str) -> list[str]:
    """What a cell uses of :data:`SUSPICIOUS`: the tools that read or patch the process the cell runs in.

    Also the course's checks beyond their ``check_*`` functions (their answer tables), and paths under /proc.
    """
    tree = _tree(source)
    if tree is None:
        return []
    found: list[str] = []

    def add(name: str) -> None:
        if name and name not in found:
            found.append(name)

    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                add(next((s for s in SUSPICIOUS if module == s or module.startswith(s + ".")), ""))
        elif isinstance(node, ast.Attribute) and node.attr in SUSPICIOUS_ATTRIBUTES:
            add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/proc"):
            add("/proc")
    for chain in _outermost_chains(tree, aliases):
        if any(chain == s or chain.startswith(s + ".") for s in SUSPICIOUS):
            add(next(s for s in SUSPICIOUS if chain == s or chain.startswith(s + ".")))
        elif chain.startswith("sdlab.checks.") and not chain.split(".")[2].startswith("check_"):
            add(".".join(chain.split(".")[:3]))
    return found
