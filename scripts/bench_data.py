"""How fast the course makes its training data: scenes per second of ``sd.data.make_scenes``.

    .venv/bin/python scripts/bench_data.py                 # 20 000 scenes at 32 px, one thread
    .venv/bin/python scripts/bench_data.py --resolution 64 --threads 2

Prints one line: scenes per second, resolution, threads and machine. The caches (silhouette
sprites) are warmed first, so the figure is the steady-state rate a training loop sees.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from sdlab.data import make_scenes
from sdlab.validation import int_in_range, one_of

RESOLUTIONS = (32, 64)


def benchmark_scenes(n: int = 20000, *, resolution: int = 32, batch_size: int = 1000,
                     num_threads: int = 1) -> float:
    """Scenes per second of ``make_scenes`` on the CPU with ``num_threads`` threads (caches warmed first)."""
    n, batch_size = int_in_range(n, "n", 1), int_in_range(batch_size, "batch_size", 1)
    resolution = one_of(resolution, "resolution", RESOLUTIONS)
    num_threads = int_in_range(num_threads, "num_threads", 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        make_scenes(8, resolution=resolution, generator=torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for first in range(0, n, batch_size):
            make_scenes(min(batch_size, n - first), resolution=resolution, generator=generator)
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--resolution", type=int, default=32, choices=RESOLUTIONS)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rate = benchmark_scenes(args.n, resolution=args.resolution, batch_size=args.batch_size, num_threads=args.threads)
    machine = platform.processor() or platform.machine()
    print(f"{rate:.0f} scenes/s at {args.resolution} px, {args.threads} thread(s), {machine}")


if __name__ == "__main__":
    main()
