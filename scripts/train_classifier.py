"""Train the small cat-vs-dog classifier that chapter 3 uses to judge generated images.

    .venv/bin/python scripts/train_classifier.py            # writes sdlab/weights/catdog_classifier.safetensors
    .venv/bin/python scripts/train_classifier.py --steps 300 --out /tmp/clf.safetensors

It trains on the clean cat and dog silhouettes of the "train" split, prints its
accuracy on the held-out "test" split, and saves the weights (float32, ~0.4 MB)
with the settings, accuracy and time in the file's metadata. About a minute on a
2-core CPU with the default settings; deterministic for a given seed on the CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sdlab as sd
from sdlab.checkpoints import WEIGHTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / "catdog_classifier.safetensors")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the initial weights
    start = time.perf_counter()
    classifier, losses = sd.evaluate.train_classifier(steps=args.steps, batch_size=args.batch_size,
                                                      generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - start
    results = {}
    for split in ("train", "test"):
        images, labels = sd.evaluate.real_images(split=split)
        results[f"{split}_accuracy"] = round(sd.evaluate.accuracy(classifier, images, labels), 4)
    info = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "seconds": round(seconds, 1),
            "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4), **results,
            "trained_on": f"cpu ({torch.get_num_threads()} threads)", "date": time.strftime("%Y-%m-%d")}
    path = sd.evaluate.save_classifier(args.out, classifier, info=info)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) in {seconds:.0f} s: {info}")


if __name__ == "__main__":
    main()
