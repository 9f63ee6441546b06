"""The "real Stable Diffusion" paths: models from the Hugging Face hub, where a hub is reachable.

Everything else in the course runs offline. These helpers are the only code that asks the
network for anything, and they fail fast: offline, or with ``HF_HUB_OFFLINE=1``, or when the
hub does not answer within ``timeout`` seconds, they raise :class:`HubUnavailable` at once,
with a message naming the course's own model to use instead. Nothing is half-downloaded:
the hub is asked only after a connection test succeeds.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

__all__ = ["HubUnavailable", "hub_reachable", "load_real_clip", "load_real_vae", "REAL_STABLE_DIFFUSION",
           "load_real_stable_diffusion", "real_or_course_pipeline"]

HUB_HOST = "huggingface.co"


class HubUnavailable(RuntimeError):
    """The model hub cannot be reached (offline, ``HF_HUB_OFFLINE=1``, or no answer in time)."""


def _offline_by_setting() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(*, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (False when HF_HUB_OFFLINE is set)."""
    if _offline_by_setting():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _require_hub(what: str, instead: str, timeout: float) -> None:
    start = time.perf_counter()
    if not hub_reachable(timeout=timeout):
        why = "HF_HUB_OFFLINE is set" if _offline_by_setting() else \
            f"{HUB_HOST} did not answer within {time.perf_counter() - start:.1f} s"
        raise HubUnavailable(f"cannot load {what}: the model hub is not reachable ({why}). The course's own "
                             f"model works offline: {instead}")


def load_real_clip(name: str = "openai/clip-vit-base-patch32", *, timeout: float = 3.0) -> tuple[Any, Any]:
    """Real CLIP from the hub: ``(transformers.CLIPModel, CLIPTokenizer)``, in eval mode. Needs a network.

    Raises:
        HubUnavailable: within about ``timeout`` seconds when the hub cannot be reached.
    """
    _require_hub(f"CLIP {name!r}", "sd.clip.MiniCLIP, chapter 4's mini-CLIP trained on the course's scenes", timeout)
    from transformers import CLIPModel, CLIPTokenizer

    return CLIPModel.from_pretrained(name).eval(), CLIPTokenizer.from_pretrained(name)


REAL_VAES = {"sd": "stabilityai/sd-vae-ft-mse", "taesd": "madebyollin/taesd"}


def load_real_vae(name: str = "sd", *, timeout: float = 3.0) -> Any:
    """Stable Diffusion's real autoencoder from the hub, in eval mode. Needs a network.

    Args:
        name: ``"sd"`` (``stabilityai/sd-vae-ft-mse``: Stable Diffusion 1's VAE, its decoder fine-tuned,
            an ``AutoencoderKL`` of 84 M parameters, factor 8, scaling factor 0.18215), ``"taesd"``
            (``madebyollin/taesd``: a 2.4 M-parameter ``AutoencoderTiny`` distilled from it), or any hub
            id of an ``AutoencoderKL`` folder.

    Raises:
        HubUnavailable: within about ``timeout`` seconds when the hub cannot be reached.
    """
    repo = REAL_VAES.get(name, name)
    _require_hub(f"the VAE {repo!r}", "sd.pretrained.load_pretrained('vae_f4'), chapter 5's autoencoder "
                 "trained on the course's scenes", timeout)
    from diffusers import AutoencoderKL, AutoencoderTiny

    cls = AutoencoderTiny if repo == REAL_VAES["taesd"] else AutoencoderKL
    return cls.from_pretrained(repo, low_cpu_mem_usage=False).eval()


# A small, ungated Stable Diffusion 1 checkpoint: BK-SDM-Tiny (Kim et al. 2023), SD 1.4 with blocks of the
# U-Net removed and distilled (0.32 B parameters instead of 0.86 B), in diffusers' folder layout.
REAL_STABLE_DIFFUSION = "nota-ai/bk-sdm-tiny"
SMALL_GPU_BYTES = 8 * 2**30  # below this, attention is computed in slices (slower, less memory)


def load_real_stable_diffusion(name: str = REAL_STABLE_DIFFUSION, *, device: Any = None, timeout: float = 3.0) -> Any:
    """A real Stable Diffusion ``StableDiffusionPipeline`` from the hub (about 1 GB at first use). Needs a network.

    float16 on CUDA, with attention slicing on GPUs under 8 GiB; float32 elsewhere. No safety
    checker is loaded (it would add 1.2 GB; the course's readable loop never calls it anyway).

    Args:
        name: a hub id of a Stable Diffusion 1 pipeline folder (default ``REAL_STABLE_DIFFUSION``).
        device: where to run it (default: ``sd.pick_device()``).

    Raises:
        HubUnavailable: within about ``timeout`` seconds when the hub cannot be reached.
    """
    _require_hub(f"Stable Diffusion {name!r}", "sd.pipeline.load_pipeline(), chapter 7's Stable Diffusion built "
                 "from the course's parts", timeout)
    import torch
    from diffusers import StableDiffusionPipeline

    from sdlab.device import pick_device

    device = torch.device(device) if device is not None else pick_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(name, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False).to(device)
    if device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory < SMALL_GPU_BYTES:
        pipe.enable_attention_slicing()
    return pipe


def real_or_course_pipeline(name: str = REAL_STABLE_DIFFUSION, *, timeout: float = 3.0) -> tuple[Any, str]:
    """Real Stable Diffusion where the hub answers, else the course's own pipeline: ``(pipeline, what happened)``.

    The second value is a sentence for the reader: which model they got, and why.
    """
    try:
        return load_real_stable_diffusion(name, timeout=timeout), f"loaded real Stable Diffusion: {name}"
    except HubUnavailable as error:
        from sdlab.pipeline import load_pipeline

        return load_pipeline(), f"{error}\nUsing the course's own Stable Diffusion instead (mini_sd, 64 x 64)."
