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

__all__ = ["HubUnavailable", "hub_reachable", "load_real_clip"]

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
