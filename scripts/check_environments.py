"""Run every chapter notebook (quick mode) against sdlab installed from a wheel, in three environments.

    python3 scripts/check_environments.py                        # every environment, every notebook
    python3 scripts/check_environments.py --envs pins colab --notebooks 00 03
    python3 scripts/check_environments.py --print-requirements   # the requirement lists, then exit
    python3 scripts/check_environments.py --json build/envs/results.json --timeout 600

This script stands alone: it is not part of the test suite, and it needs only the standard library.
Each environment is a venv under build/envs/<name>. It is reused while the marker file in it says it
was built from the same requirement list; otherwise it is rebuilt from scratch.

    pins    the pinned versions that run.py installs into .venv (requirements.txt, else constraints.txt),
            installed with ``-c constraints.txt`` so that every transitive package is pinned too
    lowest  the lower bounds of pyproject's ``[project] dependencies``, each ``>=X`` turned into ``==X``
    colab   Google Colab's current versions of the big packages; every other package at the pins

Every environment gets the same packages: pyproject's dependencies, what running a notebook needs
(nbclient, nbformat, ipykernel; at the pins unless the environment says otherwise) and, with
``--no-deps``, the data packages of requirements-nodeps.txt (the list the Colab set-up cell installs).
torch is always torch==2.13.0, installed first (here that is the CPU build on local disk), and
torchvision is never installed: a constraint nothing satisfies makes pip fail rather than pull it in.

sdlab itself is built once into a wheel from a ``git archive`` of HEAD (``--worktree``: from the
tracked files as they are on disk, uncommitted edits included) and installed with ``--no-deps``.
Each notebook of that same tree then runs from an empty temporary folder with nbclient, in a kernel
of the environment's own (a kernelspec installed into the venv and found through JUPYTER_PATH), with
SDLAB_QUICK=1. ``--timeout`` bounds each whole notebook. A failure names the cell: its index among
all of the notebook's cells, counted from 0, markdown cells included.

The table printed at the end is markdown: one row per notebook, one column per environment, then
the versions each environment got. Exit status 0 when every notebook passed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib  # Python 3.11+ (as run.py); ruff's py310 target files it with the third-party imports

ROOT = Path(__file__).resolve().parents[1]
ENVS_DIR = ROOT / "build" / "envs"
TORCH = "torch==2.13.0"  # the CPU build; a bare `torch` would pull a CUDA build of several GB
NOTEBOOK_PACKAGES = ("nbclient", "nbformat", "ipykernel")  # what nbclient needs to run a notebook
COLAB = {  # Google Colab's preinstalled versions; the set-up cell keeps them
    "diffusers": "0.39.*",
    "transformers": "5.15.*",
    "numpy": "2.1.*",
    "matplotlib": "3.10.*",
    "pillow": "11.3.*",
    "scikit-image": "0.25.*",
    "ipywidgets": "7.7.1",
    "ipykernel": "6.17.*",
}
ENV_NAMES = ("pins", "lowest", "colab")
REPORTED = ("torch", "diffusers", "transformers", "numpy", "matplotlib", "pillow")
ALSO_RECORDED = ("scikit-image", "safetensors", "ipywidgets", "tqdm", "ipykernel", "nbclient", "sdlab", "torchvision")
NO_TORCHVISION = "torchvision<0\n"  # no release satisfies it: pip fails instead of installing torchvision
DEFAULT_TIMEOUT = 900


def say(message: str) -> None:
    print(f"[check] {message}", flush=True)


def canonical(name: str) -> str:
    """The PEP 503 form of a package name: `Scikit_Image` and `scikit-image` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def quick_env_name() -> str:
    """sdlab.config.QUICK_ENV, read from the source (importing sdlab would need torch here)."""
    text = (ROOT / "sdlab" / "config.py").read_text()
    return re.search(r'^QUICK_ENV = "(\w+)"', text, re.MULTILINE).group(1)


# ---------------------------------------------------------------- requirement lists


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements or constraints file, by canonical name."""
    pins = {}
    for match in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", path.read_text(), re.MULTILINE):
        pins[canonical(match.group(1))] = f"{match.group(1)}=={match.group(2)}"
    return pins


def nodeps_packages() -> list[str]:
    """The data packages installed with --no-deps: requirements-nodeps.txt, as scripts/colab_cell.py reads it."""
    return re.findall(r"^(\S+==\S+)", (ROOT / "requirements-nodeps.txt").read_text(), re.MULTILINE)


def declared_dependencies() -> dict[str, str]:
    """pyproject's `[project] dependencies` as {canonical name: version specifier}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for line in project["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^]]*\])?\s*([^;]*?)\s*(?:;.*)?", line)
        declared[canonical(match.group(1))] = match.group(2)
    return declared


def pinned(name: str) -> str:
    """The pin of a package: requirements.txt first (run.py's direct pins), then constraints.txt."""
    for file in ("requirements.txt", "constraints.txt"):
        pins = read_pins(ROOT / file)
        if canonical(name) in pins:
            return pins[canonical(name)]
    raise SystemExit(f"{name} is pinned neither in requirements.txt nor in constraints.txt")


def lowest(name: str, specifier: str) -> str:
    """`name>=X,...` as `name==X`; a dependency without a lower bound falls back to its pin."""
    bound = re.search(r">=\s*([^,\s]+)", specifier)
    if bound is None:
        say(f"note: pyproject gives {name} no lower bound ({specifier or 'no specifier'}); lowest uses its pin")
        return pinned(name)
    return f"{name}=={bound.group(1)}"


@dataclass(frozen=True)
class Environment:
    name: str
    requirements: tuple[str, ...]  # installed with their dependencies, torch first
    constraints: tuple[Path, ...]  # -c files besides the torchvision guard
    nodeps: tuple[str, ...]  # installed with --no-deps

    @property
    def folder(self) -> Path:
        return ENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    @property
    def kernel(self) -> str:
        return f"sdlab-{self.name}"


def environment(name: str) -> Environment:
    """The requirement list of one environment (see the module docstring)."""
    names = [*declared_dependencies(), *NOTEBOOK_PACKAGES]
    names = [n for i, n in enumerate(names) if n not in names[:i] and n != "torch"]
    if name == "pins":
        chosen = [pinned(n) for n in names]
    elif name == "lowest":
        declared = declared_dependencies()
        chosen = [lowest(n, declared[n]) if n in declared else pinned(n) for n in names]
    elif name == "colab":
        chosen = [f"{n}=={COLAB[n]}" if n in COLAB else pinned(n) for n in names]
    else:
        raise ValueError(name)
    constraints = (ROOT / "constraints.txt",) if name == "pins" else ()
    return Environment(name, (TORCH, *chosen), constraints, tuple(nodeps_packages()))


def print_requirements(envs: list[Environment]) -> None:
    for env in envs:
        print(f"## {env.name}")
        print(*env.requirements, sep="\n")
        for line in [*(f"--no-deps {p}" for p in env.nodeps), *(f"-c {c.relative_to(ROOT)}" for c in env.constraints)]:
            print(line)
        print(f"-c {NO_TORCHVISION.strip()}  (a guard: no torchvision)\n")


# ---------------------------------------------------------------- building the venvs


class InstallError(Exception):
    """A step of building an environment failed; the message ends with the tool's output."""


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without what would leak this interpreter or .venv into a child (as tests/test_install.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def run(cmd: list[str | Path], what: str, **options) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=clean_env(), **options)
    if done.returncode != 0:
        raise InstallError(f"{what} failed: {' '.join(map(str, cmd))}\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def pip_install(env: Environment, *args: str | Path) -> None:
    guard = ENVS_DIR / "no-torchvision.txt"
    guard.write_text(NO_TORCHVISION)
    run([env.python, "-m", "pip", "install", "-q", "-c", guard, *args], f"pip install in {env.name}")


def fingerprint(env: Environment, base_python: str) -> str:
    """What the marker file holds: the interpreter, every requirement and the digest of each -c file."""
    version = run([base_python, "-c", "import sys; print(sys.version)"], "python --version").strip()
    lines = [f"python {version}", *env.requirements, *(f"--no-deps {p}" for p in env.nodeps)]
    lines += [f"-c {c.name} {hashlib.sha256(c.read_bytes()).hexdigest()}" for c in env.constraints]
    return "\n".join([*lines, NO_TORCHVISION])


def build_venv(env: Environment, base_python: str) -> None:
    """Create env's venv and install its requirements, unless its marker says that is already done."""
    marker = env.folder / ".sdlab-requirements"
    wanted = fingerprint(env, base_python)
    if marker.exists() and marker.read_text() == wanted and env.python.exists():
        say(f"{env.name}: reusing {env.folder.relative_to(ROOT)}")
        return
    say(f"{env.name}: creating {env.folder.relative_to(ROOT)}")
    shutil.rmtree(env.folder, ignore_errors=True)
    run([base_python, "-m", "venv", env.folder], "python -m venv")
    requirements = env.folder / "requirements.txt"
    requirements.write_text("\n".join(env.requirements) + "\n")
    pip_install(env, TORCH)  # first and alone: nothing else may choose which torch comes
    pip_install(env, "-r", requirements, *(a for c in env.constraints for a in ("-c", c)))
    pip_install(env, "--no-deps", *env.nodeps)
    marker.write_text(wanted)


def install_sdlab(env: Environment, wheel: Path) -> None:
    """The wheel with --no-deps, and a kernelspec of the venv's own (inside the venv)."""
    pip_install(env, "--no-deps", "--force-reinstall", wheel)
    run([env.python, "-m", "ipykernel", "install", "--prefix", env.folder, "--name", env.kernel,
         "--display-name", f"sdlab ({env.name})"], "ipykernel install")


def source_tree(out: Path, *, worktree: bool) -> Path:
    """HEAD as `git archive` gives it, or (worktree) the tracked files as they are on disk."""
    tree = out / "src"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    if worktree:
        files = run(["git", "-C", ROOT, "ls-files", "-z"], "git ls-files").split("\0")
        for name in filter(None, files):
            if (ROOT / name).is_file():
                (tree / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, tree / name)
        return tree
    changed = run(["git", "-C", ROOT, "status", "--porcelain", "--", "sdlab", "notebooks", "pyproject.toml"], "git")
    if changed.strip():
        say("note: sdlab/, notebooks/ or pyproject.toml have uncommitted changes; checking HEAD (see --worktree)")
    tar = out / "head.tar"
    run(["git", "-C", ROOT, "archive", "--format=tar", "-o", tar, "HEAD"], "git archive")
    with tarfile.open(tar) as archive:
        archive.extractall(tree, filter="data")
    return tree


def build_wheel(tree: Path, out: Path) -> Path:
    """sdlab's wheel, built by this interpreter's pip (in isolation unless setuptools>=77 is here)."""
    dist = out / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    try:
        import setuptools

        isolation = [] if int(setuptools.__version__.split(".")[0]) < 77 else ["--no-build-isolation"]
    except ImportError:
        isolation = []
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", dist, tree], "pip wheel")
    return next(dist.glob("sdlab-*.whl"))


# ---------------------------------------------------------------- running the notebooks

RUNNER = r"""
import json, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

path, kernel, budget, progress = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + budget
current = {"cell": None}

def started(cell, cell_index):
    current["cell"] = cell_index
    with open(progress, "w") as f:
        f.write(str(cell_index))

def first_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""

notebook = nbformat.read(path, as_version=4)
client = NotebookClient(notebook, kernel_name=kernel, startup_timeout=120, on_cell_start=started,
                        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                        resources={"metadata": {"path": "."}})
try:
    client.execute()
    result = {"status": "pass"}
except CellExecutionError as error:
    result = {"status": "FAIL", "error": first_line(f"{error.ename}: {error.evalue}")}
except Exception as error:
    result = {"status": "FAIL", "error": first_line(f"{type(error).__name__}: {error}")}
result["cell"] = current["cell"] if result["status"] == "FAIL" else None
print("RESULT " + json.dumps(result))
"""


def kernel_env(env: Environment) -> dict[str, str]:
    """The runner's environment, which its kernel inherits: quick mode, offline, the venv's kernelspecs."""
    path = f"{env.folder / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return clean_env(**{quick_env_name(): "1"}, HF_HUB_OFFLINE="1", SDLAB_NO_PROGRESS="1",
                     PYDEVD_DISABLE_FILE_VALIDATION="1", JUPYTER_PATH=str(env.folder / "share" / "jupyter"), PATH=path)


def run_notebook(env: Environment, notebook: Path, timeout: int) -> dict:
    """Execute one notebook from an empty folder; {"status", "seconds", "cell", "error"}."""
    with tempfile.TemporaryDirectory(prefix=f"sdlab-{env.name}-") as tmp:
        work, progress = Path(tmp) / "work", Path(tmp) / "progress"
        work.mkdir()
        cmd = [str(env.python), "-c", RUNNER, str(notebook), env.kernel, str(timeout), str(progress)]
        started = time.monotonic()
        process = subprocess.Popen(cmd, cwd=work, env=kernel_env(env), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout + 120)  # a backstop: the runner keeps the budget
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the kernel follows: ipykernel exits with its parent
            output, _ = process.communicate()
            cell = int(progress.read_text()) if progress.exists() else None
            return {"status": "FAIL", "seconds": time.monotonic() - started, "cell": cell,
                    "error": f"killed after {timeout + 120} s"}
        seconds = time.monotonic() - started
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = [line for line in output.splitlines() if line.strip()][-1:] or ["no output"]
        return {"status": "FAIL", "seconds": seconds, "cell": None, "error": f"the runner died: {tail[0]}"}
    return {**json.loads(lines[-1].removeprefix("RESULT ")), "seconds": seconds}


VERSIONS = r"""
import json, sys, importlib.metadata as m
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({name: version(name) for name in sys.argv[1:]}))
"""


def installed_versions(env: Environment) -> dict[str, str | None]:
    out = run([env.python, "-c", VERSIONS, *REPORTED, *ALSO_RECORDED], "reading the versions", cwd=ENVS_DIR)
    return json.loads(out)


# ---------------------------------------------------------------- the report


def cell_text(result: dict) -> str:
    if result["status"] == "pass":
        return f"pass {result['seconds']:.0f} s"
    if result["status"] == "install failed":
        return "install failed"
    where = f"cell {result['cell']}: " if result.get("cell") is not None else ""
    error = result.get("error", "")
    error = error if len(error) <= 90 else error[:87] + "..."
    return f"FAIL {where}{error}".replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def report(results: dict, notebooks: list[Path]) -> str:
    names = list(results)
    rows = [[nb.stem, *(cell_text(results[e]["notebooks"][nb.stem]) for e in names)] for nb in notebooks]
    versions = [[p, *((results[e]["versions"] or {}).get(p) or "-" for e in names)] for p in REPORTED]
    text = markdown_table(["notebook", *names], rows) + "\n\n" + markdown_table(["package", *names], versions)
    with_torchvision = [e for e in names if (results[e]["versions"] or {}).get("torchvision")]
    if with_torchvision:
        text += f"\n\nWARNING: torchvision is installed in {', '.join(with_torchvision)}"
    return text


def check_environment(env: Environment, wheel: Path, notebooks: list[Path], args) -> dict:
    """Build (or reuse) the venv, install sdlab, run the notebooks: this environment's results."""
    result = {"requirements": list(env.requirements), "nodeps": list(env.nodeps), "install": "ok",
              "install_error": None, "versions": None, "notebooks": {}}
    try:
        build_venv(env, args.python)
        install_sdlab(env, wheel)
        result["versions"] = installed_versions(env)
    except InstallError as error:
        say(f"{env.name}: the install failed; its notebooks are not run\n{error}")
        result.update(install="failed", install_error=str(error))
        result["notebooks"] = {nb.stem: {"status": "install failed"} for nb in notebooks}
        return result
    say(f"{env.name}: " + ", ".join(f"{p} {result['versions'][p]}" for p in REPORTED))
    for notebook in notebooks:
        outcome = run_notebook(env, notebook, args.timeout)
        result["notebooks"][notebook.stem] = outcome
        say(f"{env.name}: {notebook.stem}: {cell_text(outcome)}")
    return result


def select_notebooks(prefixes: list[str] | None) -> list[Path]:
    """The checkout's chapter notebooks whose names start with one of ``prefixes`` (all without any)."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not prefixes:
        return notebooks
    unmatched = [p for p in prefixes if not any(nb.name.startswith(p) for nb in notebooks)]
    if unmatched:
        raise SystemExit(f"no notebook starts with {', '.join(unmatched)}")
    return [nb for nb in notebooks if any(nb.name.startswith(p) for p in prefixes)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=ENV_NAMES, default=list(ENV_NAMES), metavar="ENV",
                        help=f"the environments to check, of {', '.join(ENV_NAMES)} (default: all)")
    parser.add_argument("--notebooks", nargs="+", metavar="PREFIX",
                        help="the notebooks whose names start with these, e.g. 00 03 (default: all)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                        help=f"seconds each notebook may run (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--worktree", action="store_true",
                        help="build sdlab and take the notebooks from the tracked files on disk, not from HEAD")
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                        help="the interpreter that creates the venvs (default: this one's base interpreter)")
    parser.add_argument("--print-requirements", action="store_true",
                        help="print each environment's requirement list and exit")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    envs = [environment(name) for name in args.envs]
    selected = select_notebooks(args.notebooks)
    if args.print_requirements:
        print_requirements(envs)
        return 0
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    out = ENVS_DIR / "sdlab-wheel"
    try:
        tree = source_tree(out, worktree=args.worktree)
        wheel = build_wheel(tree, out)
    except InstallError as error:
        raise SystemExit(f"could not build the sdlab wheel\n{error}") from None
    say(f"built {wheel.relative_to(ROOT)}")
    notebooks = [tree / "notebooks" / nb.name for nb in selected]  # the copies that match the wheel
    for missing in [nb for nb in notebooks if not nb.exists()]:
        raise SystemExit(f"{missing.name} is not in the tree checked (untracked? see --worktree)")
    results = {env.name: check_environment(env, wheel, notebooks, args) for env in envs}
    print("\n" + report(results, notebooks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        say(f"wrote {args.json}")
    passed = all(r["status"] == "pass" for e in results.values() for r in e["notebooks"].values())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
