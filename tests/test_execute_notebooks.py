"""scripts/execute_notebooks.py: what run.py executes before the book is built, and when it runs it again."""

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
execute_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_notebooks)


def test_it_executes_the_chapters_the_table_of_contents_lists():
    assert execute_notebooks.book_notebooks() == sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_cache_is_cleared_when_the_mode_changes(monkeypatch):
    monkeypatch.setenv("SDLAB_QUICK", "1")
    quick = execute_notebooks.inputs_stamp()
    assert execute_notebooks.inputs_stamp() == quick, "the same inputs give the same stamp"
    monkeypatch.delenv("SDLAB_QUICK")
    assert execute_notebooks.inputs_stamp() != quick


def test_a_notebook_runs_in_its_folder_and_a_failing_one_reports_its_error(tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # _execute sets them for its kernel; put them back after
        monkeypatch.setenv(name, "1")
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.getcwd())")]),
                   good)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")]), bad)
    path, seconds, error, executed = execute_notebooks._execute(str(good), 60, 1)
    assert error is None and seconds > 0
    assert str(tmp_path) in nbformat.reads(executed, as_version=4).cells[0].outputs[0]["text"]
    _, _, error, _ = execute_notebooks._execute(str(bad), 60, 1)
    assert "ValueError" in error and "boom" in error
