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

__all__ = ["HubUnavailable", "hub_reachable", "load_real_clip", "load_real_vae"]

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
