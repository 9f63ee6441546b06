"""sdlab installed the way readers install it, never through this checkout's editable finder.

Each test builds from a clean ``git archive`` of HEAD and installs into a *fresh* venv. That venv sees
the pinned packages through a ``.pth`` line naming .venv's site-packages: a path added that way is
searched, but the ``.pth`` files inside it (the editable finder that serves ``sdlab`` from the
checkout) are not run. Everything then happens in an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from colab_cell import cell_source  # noqa: E402

from sdlab.pretrained import REGISTRY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PINS = Path(sysconfig.get_paths()["purelib"])  # .venv's site-packages: the pinned packages
pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                reason="needs git and this repository's history")


def _run(cmd: list[str], **options) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **options)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """HEAD as `git archive` gives it: no untracked file, no build output, no .venv."""
    out = tmp_path_factory.mktemp("archive")
    tar = out / "head.tar"
    _run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(tar), "HEAD"])
    with tarfile.open(tar) as t:
        t.extractall(out / "sdlab", filter="data")
    return out / "sdlab"


def _fresh_venv(folder: Path) -> Path:
    """A venv with pip, no sdlab, that imports the pinned packages (but runs none of their .pth files)."""
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(folder)])
    python = folder / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_sdlab_pins.pth").write_text(f"{PINS}\n")
    # Python 3.11's venv brings its own setuptools (65), which would shadow the pinned one that builds the wheel
    for bundled in ("setuptools", "setuptools-*", "pkg_resources", "_distutils_hack", "distutils-precedence.pth"):
        for path in site.glob(bundled):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    return {**env, "HF_HUB_OFFLINE": "1", "SDLAB_NO_PROGRESS": "1", "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _execute(notebook: nbformat.NotebookNode, python: Path, cwd: Path, tmp: Path, **env: str) -> None:
    """Run every cell in a kernel of ``python`` (a kernelspec of its own, in a private JUPYTER_PATH)."""
    spec = tmp / "jupyter" / "kernels" / "fresh"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "fresh",
        "language": "python", "env": _clean_env(SDLAB_QUICK="1", OMP_NUM_THREADS="1", **env)}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(tmp / "jupyter")
    try:
        NotebookClient(notebook, kernel_name="fresh", timeout=600, resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.pop("JUPYTER_PATH") if old is None else os.environ.__setitem__("JUPYTER_PATH", old)


def _build(archive: Path, out: Path, kind: str) -> Path:
    from setuptools import build_meta  # noqa: F401  (the backend must be importable: no network for isolation)

    code = f"import os; os.chdir({str(archive)!r}); from setuptools import build_meta as b; " \
           f"print(b.build_{kind}({str(out)!r}))"
    name = _run([sys.executable, "-c", code], cwd=archive).stdout.split()[-1]
    return out / name


def test_the_wheel_and_sdist_hold_every_module_and_shipped_file(archive, tmp_path):
    wheel = _build(archive, tmp_path, "wheel")
    sdist = _build(archive, tmp_path, "sdist")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as t:
        top = t.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(top + "/") for n in t.getnames()}
    tracked = _run(["git", "-C", str(ROOT), "ls-files", "sdlab"]).stdout.split()
    wanted = [f for f in tracked if not f.endswith((".pyc",))]
    assert wanted, "git ls-files found no sdlab files"
    for name, files in (("wheel", in_wheel), ("sdist", in_sdist)):
        lacking = [f for f in wanted if f not in files]
        assert not lacking, f"the {name} lacks {len(lacking)} of sdlab's files, e.g. {lacking[:5]}"
    for entry in REGISTRY.values():
        assert entry.path.relative_to(ROOT).as_posix() in {n.rstrip("/") for n in in_wheel} or any(
            n.startswith(entry.path.relative_to(ROOT).as_posix() + "/") for n in in_wheel), entry.name
    for f in ("vocab.json", "merges.txt", "tokenizer.json"):
        assert f"sdlab/weights/mini_sd/tokenizer/{f}" in in_wheel


INSTALLED = r"""
import importlib, pkgutil, sys
import sdlab, sdlab.pretrained as p
assert sdlab.__file__.startswith(sys.prefix), f"sdlab came from {sdlab.__file__}, not the venv"
names = [m.name for m in pkgutil.walk_packages(sdlab.__path__, "sdlab.")
         if not m.name.endswith(".__main__")]  # importing a command line runs it
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.prefix), f"{name} came from {module.__file__}"
for name in p.names():
    p.load_pretrained(name)
# transformers 4's CLIPTokenizer reads vocab.json + merges.txt: the same ids as the shipped tokenizer.json
from transformers import CLIPTokenizer, CLIPTokenizerFast
folder = p.REGISTRY["mini_sd"].path / "tokenizer"
slow = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
fast = CLIPTokenizerFast.from_pretrained(str(folder))
for text in ["a small red cat on the left, blue background", "purple giraffe", "a crimson kitty!"]:
    assert slow(text)["input_ids"] == fast(text)["input_ids"], text
print("modules", len(names), "weights", len(p.names()))
"""


def test_a_reader_installs_the_wheel_into_a_fresh_venv_and_runs_chapter_0(archive, tmp_path):
    wheel = _build(archive, tmp_path, "wheel")
    python = _fresh_venv(tmp_path / "venv")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], env=_clean_env())
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _run([str(python), "-c", INSTALLED], cwd=empty, env=_clean_env())
    words = done.stdout.split()
    assert words[:1] == ["modules"] and int(words[1]) >= 30 and words[3] == str(len(REGISTRY)), done.stdout
    notebook = nbformat.read(ROOT / "notebooks" / "00_the_big_picture.ipynb", as_version=4)
    _execute(notebook, python, empty, tmp_path)


def test_the_colab_set_up_cell_installs_sdlab_twice_over_then_the_chapter_runs(tmp_path):
    """Colab's path: cell 0 itself, run twice with google.colab present, from a git+file:// clone of HEAD."""
    bare = tmp_path / "sdlab.git"
    _run(["git", "clone", "-q", "--bare", str(ROOT), str(bare)])
    url = (ROOT / "_config.yml").read_text().split("url:", 1)[1].split()[0]
    cell = cell_source()
    assert f"git+{url}" in cell
    python = _fresh_venv(tmp_path / "venv")
    colab = nbformat.v4.new_code_cell('import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")')
    # pip 23 rejects a file URL without a host, hence localhost
    setup = nbformat.v4.new_code_cell(cell.replace(f"git+{url}", f"git+file://localhost{bare}"))
    notebook = nbformat.read(ROOT / "notebooks" / "00_the_big_picture.ipynb", as_version=4)
    check = nbformat.v4.new_code_cell("import sdlab, sys\nassert sdlab.__file__.startswith(sys.prefix), sdlab.__file__")
    notebook.cells = [colab, setup, setup, check, *notebook.cells[1:]]
    empty = tmp_path / "empty"
    empty.mkdir()
    # pip builds the clone's wheel with the pinned setuptools (PIP_NO_BUILD_ISOLATION=0 turns isolation off)
    _execute(notebook, python, empty, tmp_path, PIP_NO_BUILD_ISOLATION="0")
    outputs = [o.get("text", "") for c in notebook.cells[1:3] for o in c.outputs]
    assert sum("sdlab is installed" in text for text in outputs) == 2, outputs


def test_the_set_up_cell_says_in_one_sentence_when_the_repository_cannot_be_reached(tmp_path):
    cell = cell_source()
    url = (ROOT / "_config.yml").read_text().split("url:", 1)[1].split()[0]
    script = ('import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")\n'
              + cell.replace(f"git+{url}", f"git+file://localhost{tmp_path}/nowhere.git"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=_clean_env(), cwd=tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Could not install sdlab @ git+file://") and "git clone" in last, last


def test_every_chapter_has_the_same_complete_set_up_cell():
    source = cell_source()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.source == source, f"{path.name}: cell 0 is not the set-up cell; run scripts/colab_cell.py"
