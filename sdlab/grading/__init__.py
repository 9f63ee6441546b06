"""Classroom assignments: student versions of the chapters, and an autograder for what comes back.

- :mod:`sdlab.grading.release` writes the student notebooks (``python3 run.py release``);
- :mod:`sdlab.grading.grader` grades a folder of submissions into a CSV and feedback files
  (``python3 run.py grade SUBMISSIONS/``);
- :mod:`sdlab.grading.exercises` reads the exercises and their points from the chapters' metadata;
- :mod:`sdlab.grading.harness` runs inside each submission's own process.

The checks themselves live in :mod:`sdlab.checks`; the grader judges with the same rules.
"""

__all__: list[str] = []  # the submodules are the interface: ``python -m sdlab.grading`` and run.py
