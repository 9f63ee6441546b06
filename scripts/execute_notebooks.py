"""Execute the book's notebooks in parallel into myst-nb's execution cache, before the book is built.

    .venv/bin/python scripts/execute_notebooks.py CACHE_DIR [--doctrees DIR] [--jobs N]

``python3 run.py book`` and ``python3 run.py test`` call this; the build that follows
(``execute_notebooks: cache`` in _config.yml) then finds every notebook executed and only
renders it. A notebook whose code did not change since its last run is not run again, so a
rebuild with nothing changed takes seconds. What the notebooks import can change their
outputs without changing their code: the cache is cleared whenever the ``sdlab`` package,
its shipped weights, the pins or the mode (quick or full) change.

Notebooks run longest first, one per core, each kernel with an equal share of the cores'
threads. Each one's time is printed as it finishes. A notebook that fails stops the build
with its error: no page is built from a notebook that does not run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution

ROOT = Path(__file__).resolve().parents[1]
STAMPED = ["sdlab", "requirements.txt", "requirements-nodeps.txt", "constraints.txt", "pyproject.toml"]


def inputs_stamp() -> str:
    """A digest of everything besides a notebook's own code that its outputs depend on."""
    digest = hashlib.sha256(f"quick={os.environ.get('SDLAB_QUICK') == '1'}".encode())
    for name in STAMPED:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def book_notebooks() -> list[Path]:
    """The notebooks the table of contents lists, in its order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for entry in toc.get("chapters", [])]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def _execute(path: str, timeout: int, threads: int) -> tuple[str, float, str | None, str]:
    """Run one notebook in its own folder; return (path, seconds, error text or None, executed notebook JSON)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)  # the kernel inherits these: no two kernels fight over a core
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False,
                                 meta_override=True)
    error = f"{type(result.err).__name__}\n{result.exc_string}" if result.err is not None else None
    return path, result.time, error, nbformat.writes(nb)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="myst-nb's jupyter-cache folder for this build")
    parser.add_argument("--doctrees", type=Path, help="Sphinx's doctrees: an executed notebook's page is re-read")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="notebooks run at once")
    args = parser.parse_args(argv)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    stamp_file, times_file = args.cache / "sdlab-inputs.sha256", args.cache / "sdlab-seconds.json"
    stamp = inputs_stamp()
    seconds = json.loads(times_file.read_text()) if times_file.exists() else {}  # read before any clearing
    if args.cache.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        print("[execute] sdlab, its weights or the pins changed: running every notebook again", flush=True)
        shutil.rmtree(args.cache)
    args.cache.mkdir(parents=True, exist_ok=True)
    cache = get_cache(args.cache)
    todo = []
    for path in book_notebooks():
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(str(path))
    todo.sort(key=lambda p: -seconds.get(Path(p).name, 0.0))  # longest first: the cores finish together
    stamp_file.write_text(stamp)
    if not todo:
        print("[execute] every notebook is cached and unchanged", flush=True)
        return
    jobs = max(1, min(args.jobs, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    failed = []
    started = time.monotonic()
    print(f"[execute] running {len(todo)} notebook(s), {jobs} at a time, {threads} thread(s) each", flush=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_execute, path, int(config.get("timeout", 1800)), threads) for path in todo]
        for future in as_completed(futures):
            path, took, error, executed = future.result()
            name = Path(path).name
            if error is not None:
                print(f"[execute] {name} FAILED after {took:.1f} s", flush=True)
                failed.append((name, error))
                continue
            stage = cache.add_nb_to_project(path)
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(executed, as_version=4), stage.uri,
                                                      data={"execution_seconds": took}),
                                        check_validity=False, overwrite=True)
            seconds[name] = round(took, 1)
            if args.doctrees:  # new outputs for unchanged code: make Sphinx read the page again
                (args.doctrees / Path(path).relative_to(ROOT).with_suffix(".doctree")).unlink(missing_ok=True)
            print(f"[execute] {name} executed in {took:.1f} s", flush=True)
    times_file.write_text(json.dumps(seconds, indent=1))
    print(f"[execute] done in {time.monotonic() - started:.0f} s", flush=True)
    for name, error in failed:
        print(f"\n[execute] {name} raised:\n{error}", file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} notebook(s) failed: {', '.join(n for n, _ in failed)}")


if __name__ == "__main__":
    main()
