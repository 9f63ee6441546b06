"""Pick the device a notebook runs on: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(*, verbose: bool = True) -> torch.device:
    """Return the fastest available device and, by default, say which it is.

    Library functions never call this: they follow the device of their inputs.
    Notebooks call it once and move models and data there.
    """
    if torch.cuda.is_available():
        device = torch.device("cuda")
        detail = torch.cuda.get_device_name(device)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
        detail = "Apple GPU (Metal)"
    else:
        device = torch.device("cpu")
        threads = torch.get_num_threads()
        detail = f"{threads} CPU thread{'s' if threads != 1 else ''}"
    if verbose:
        print(f"sdlab is using {device.type.upper()}: {detail}")
    return device
