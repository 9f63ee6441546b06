"""Write the student version of every chapter, and a release folder a teacher can hand out.

    python3 run.py release [OUT_DIR]        (default: build/release/)

The chapter notebooks are the single source. nbgrader's own preprocessors clear the solutions
(the code between ``### BEGIN SOLUTION`` and ``### END SOLUTION``) and the outputs; each answer
then raises ``NotImplementedError`` with the exercise's hint (its answer cell's ``sdlab.hint``
metadata). The check cells stay, so students get the same feedback as on the website, where the
full lesson is shown with its solutions folded away.
"""

from __future__ import annotations

import copy
import csv
import re
import shutil
import sys
from functools import partial
from pathlib import Path

import nbformat
from nbgrader.preprocessors import ClearOutput, ClearSolutions

from sdlab.grading.exercises import NOTEBOOKS, exercises_of

__all__ = ["student_version", "write_release"]

MARKER = ".sdlab-release"  # in a release folder: the next release may replace it

STUDENT_README = """\
# sdlab: the exercises

Each notebook is one chapter of the course, with its exercises left for you.

1. Open a notebook in Jupyter (or upload it to Colab: its first cell installs what it needs).
2. Run it from the top. Each exercise is a function to finish: replace the line
   `raise NotImplementedError(...)` with your answer. The message on that line is a hint.
3. Run the check cell below your answer. It prints a ✓ when your function is right, or a
   sentence that says what is still wrong.
4. Hand in the notebook file itself (any name is fine).

What is graded: the answer cells only. The grader runs the chapter as released with your
answer cells in place, and checks your functions on the notebook's inputs and on other ones
(other schedules, sizes, float32 and float64), so write functions that use their arguments.
Put everything an answer needs inside its answer cell.

Points per exercise:

{points}
"""


def _stub(message: str, match: re.Match) -> str:
    indent = match[1]
    return f"{indent}raise NotImplementedError(\n{indent}    {message!r}\n{indent})"


def student_version(nb: nbformat.NotebookNode, chapter: str | None = None) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions replaced by stubs that raise NotImplementedError with a hint."""
    out = copy.deepcopy(nb)
    resources = {"language": "python"}
    for preprocessor in (ClearSolutions(), ClearOutput()):
        out, resources = preprocessor.preprocess(out, resources)
    for cell in out.cells:
        tags = cell.metadata.get("tags", [])
        if "hide-input" in tags:  # the website folds solutions away; students see their stub
            cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
        if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code":
            hint = cell.metadata.get("sdlab", {}).get("hint", "")
            message = "your answer goes here, then run the check below" + (f". Hint: {hint}" if hint else "")
            cell.source = re.sub(r"^( *)raise NotImplementedError\(\)$", partial(_stub, message), cell.source,
                                 flags=re.M)
    if chapter:
        out.metadata["sdlab"] = {"chapter": chapter}  # lets the grader recognise a renamed file
    return out


def write_release(out_dir: Path, source: Path = NOTEBOOKS) -> list[Path]:
    """Write every chapter's student version, a README for students and exercises.csv into ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).exists():  # never empty a folder this command did not write
            raise FileExistsError(f"{out_dir} is not empty and is not an earlier release: choose a new folder")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by `python3 run.py release`; the next release replaces this folder\n")
    written, lines, rows = [], [], []
    for path in sorted(Path(source).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.write(student_version(nb, path.stem), out_dir / path.name)
        written.append(out_dir / path.name)
        for exercise in exercises_of(path.stem, nb):
            rows.append([path.name, exercise.answer_id, exercise.function, f"{exercise.points:g}"])
            lines.append(f"- {path.name}: `{exercise.function}` ({exercise.points:g} point"
                         f"{'' if exercise.points == 1 else 's'})")
    (out_dir / "README.md").write_text(STUDENT_README.format(points="\n".join(lines)))
    with open(out_dir / "exercises.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["notebook", "exercise", "function", "points"], *rows])
    return written


def main(argv: list[str]) -> None:
    out_dir = Path(argv[0]) if argv else Path("build/release")
    try:
        written = write_release(out_dir)
    except FileExistsError as error:
        raise SystemExit(str(error)) from None
    for path in written:
        print(f"wrote {path}")
    print(f"wrote {out_dir / 'README.md'} and {out_dir / 'exercises.csv'}: hand out the folder as it is")


if __name__ == "__main__":
    main(sys.argv[1:])
