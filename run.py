#!/usr/bin/env python3
"""Build the book or run every test, after setting up `.venv` from the pins.

    python3 run.py book          # build the website (executes every notebook) and serve it
    python3 run.py test          # unit tests + every notebook (quick mode) + quick book build
    python3 run.py release       # student notebooks, solutions removed (nbgrader), in build/release/
    python3 run.py grade DIR     # grade a folder of submitted notebooks into build/grades/ (CSV + feedback)
    python3 run.py reproduce     # retrain every shipped model from scratch (--quick: in under a minute; --help)

Needs nothing but Python 3.11+. The first run creates `.venv` from
requirements.txt / constraints.txt (about 1.5 minutes, 1.9 GB); later runs
reuse it while the pinned files are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import subprocess
import sys
import time
import venv
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
PIN_FILES = ["requirements.txt", "requirements-nodeps.txt", "constraints.txt", "pyproject.toml"]
STAMP = VENV / ".sdlab-pins"


def say(msg: str) -> None:
    print(f"[run.py] {msg}", flush=True)


def pins_digest() -> str:
    h = hashlib.sha256(sys.version.encode())
    for name in PIN_FILES:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def pip(*args: str) -> None:
    cmd = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"pip failed: {' '.join(cmd)}")


def ensure_venv() -> None:
    """Create or update .venv so that it matches the pinned files exactly."""
    if sys.version_info < (3, 11):
        raise SystemExit(f"sdlab needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    digest = pins_digest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        say("creating .venv (first run: about 1.5 minutes, 1.9 GB)")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    else:
        say("pinned files changed: updating .venv")
    pip("-r", "requirements.txt", "-c", "constraints.txt")
    pip("--no-deps", "-r", "requirements-nodeps.txt")
    pip("--no-deps", "-e", ".")
    STAMP.write_text(digest)
    say(".venv is ready")


def venv_env(*, quick: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env["HF_HUB_OFFLINE"] = "1"  # the course never needs a model hub offline
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugger warning in kernels
    env["SDLAB_NO_PROGRESS"] = "1"  # the website shows finished cells: no bar frozen at 0 % (sdlab.progress)
    if quick:
        env["SDLAB_QUICK"] = "1"
    else:
        env.pop("SDLAB_QUICK", None)
    return env


def build_book(*, quick: bool, out: Path) -> None:
    """Execute the notebooks that changed (in parallel, into the cache), then `jupyter-book build`.

    Any warning or error fails the build; so does a notebook that does not run.
    """
    say(f"building the book into {out.relative_to(ROOT)} ({'quick' if quick else 'full'} mode)")
    started = time.monotonic()
    execute = [str(PY), str(ROOT / "scripts" / "execute_notebooks.py"), str(out / "_build" / ".jupyter_cache"),
               "--doctrees", str(out / "_build" / ".doctrees")]
    if subprocess.run(execute, cwd=ROOT, env=venv_env(quick=quick)).returncode != 0:
        raise SystemExit("a notebook failed to run, so the book was not built; see its error above")
    cmd = [str(BIN / "jupyter-book"), "build", ".", "-W", "--keep-going", "--path-output", str(out)]
    code = subprocess.run(cmd, cwd=ROOT, env=venv_env(quick=quick)).returncode
    say(f"the book build took {time.monotonic() - started:.0f} s")
    if code != 0:
        raise SystemExit(f"the book build failed (exit {code}); see the messages above")


def serve(directory: Path, port: int) -> None:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        say(f"serving the book at http://127.0.0.1:{port}/ (Ctrl+C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def run_script(name: str, *args: str) -> None:
    """Run ``scripts/NAME`` with ``args`` inside .venv (full mode) and exit with its status."""
    cmd = [str(PY), str(ROOT / "scripts" / name), *args]
    raise SystemExit(subprocess.run(cmd, cwd=ROOT, env=venv_env(quick=False)).returncode)


def run_module(name: str, *args: str) -> None:
    """Run ``python -m NAME args`` inside .venv (full mode) and exit with its status."""
    cmd = [str(PY), "-m", name, *args]
    raise SystemExit(subprocess.run(cmd, cwd=ROOT, env=venv_env(quick=False)).returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    book = sub.add_parser("book", help="build the website and serve it")
    book.add_argument("--quick", action="store_true", help="execute notebooks in quick mode")
    book.add_argument("--no-serve", action="store_true", help="build only")
    book.add_argument("--port", type=int, default=8000)
    test = sub.add_parser("test", help="unit tests, every notebook (quick mode) and a quick book build")
    test.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    sub.add_parser("setup", help="only create or update .venv")
    release = sub.add_parser("release", help="write the student notebooks (solutions removed) to build/release/")
    release.add_argument("out", nargs="?", default="build/release", help="the release folder (default build/release)")
    sub.add_parser("grade", add_help=False,  # its options (and --help) are sdlab.grading's
                   help="grade a folder of submitted notebooks into build/grades/ (grades.csv, feedback/; --help)")
    sub.add_parser("reproduce", add_help=False,  # its options (and --help) are scripts/reproduce.py's
                   help="retrain every shipped model from scratch into build/reproduced (--quick, --report, --help)")
    args, rest = parser.parse_known_args()
    if rest and args.task not in ("reproduce", "grade"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    ensure_venv()
    if args.task == "book":
        out = ROOT / ("_build/quick" if args.quick else ".")
        build_book(quick=args.quick, out=out)
        html = out / "_build" / "html"
        say(f"built: {html / 'index.html'}")
        if not args.no_serve:
            serve(html, args.port)
    elif args.task == "test":
        build_book(quick=True, out=ROOT / "_build" / "quick")
        cmd = [str(PY), "-m", "pytest", "tests", "notebooks", "--nbval-lax", "--nbval-current-env",
               "-p", "no:cacheprovider", *args.pytest_args]
        say("running the unit tests and every notebook (quick mode)")
        raise SystemExit(subprocess.run(cmd, cwd=ROOT, env=venv_env(quick=True)).returncode)
    elif args.task == "release":
        run_module("sdlab.grading.release", args.out)
    elif args.task == "grade":
        run_module("sdlab.grading", *rest)
    elif args.task == "reproduce":
        run_script("reproduce.py", *rest)


if __name__ == "__main__":
    main()
