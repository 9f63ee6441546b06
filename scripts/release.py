"""Write the student version of every chapter: nbgrader removes the solutions.

    .venv/bin/python scripts/release.py [OUT_DIR]      (or: python3 run.py release)

Solution cells (nbgrader metadata ``solution: true``) keep their function
signature and get ``raise NotImplementedError()`` between the
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers; outputs are cleared.
The check cells stay, so students get the same automatic feedback.
For a full classroom workflow, copy the notebooks into an nbgrader course's
``source/`` folder and use ``nbgrader generate_assignment``: the format is the same.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat
from nbgrader.preprocessors import ClearOutput, ClearSolutions

ROOT = Path(__file__).resolve().parents[1]


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return a copy of ``nb`` with solutions replaced by stubs and outputs cleared."""
    out = copy.deepcopy(nb)
    resources = {"language": "python"}
    for preprocessor in (ClearSolutions(), ClearOutput()):
        out, resources = preprocessor.preprocess(out, resources)
    for cell in out.cells:  # the website hides solutions; students see their stub
        tags = cell.metadata.get("tags", [])
        if "hide-input" in tags:
            cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
    return out


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.write(student_version(nb), out_dir / path.name)
        print(f"wrote {out_dir / path.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "release")
