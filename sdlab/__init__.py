"""sdlab: the helper package of "Stable Diffusion from the inside".

Notebooks use it as ``import sdlab as sd`` and reach each part by its module:
``sd.schedules``, ``sd.images``, ``sd.plotting``, ``sd.widgets``, ``sd.checks``,
``sd.silhouettes``, ``sd.data``, ``sd.unet``, ``sd.train``, ``sd.checkpoints``, ``sd.pretrained``,
``sd.random``, ``sd.samplers``, ``sd.evaluate``, ``sd.tokenizer``, ``sd.captions``, ``sd.clip``, ``sd.hub``,
``sd.judge``, ``sd.vae``, ``sd.text_unet``, ``sd.guidance``, ``sd.attention``, ``sd.pipeline``,
``sd.progress``.
The most used names are also available at the top level. Every public name
stays once a chapter uses it.
"""

from sdlab import (
    attention,
    captions,
    checkpoints,
    checks,
    clip,
    data,
    evaluate,
    guidance,
    hub,
    images,
    judge,
    pipeline,
    plotting,
    pretrained,
    progress,
    random,
    samplers,
    schedules,
    silhouettes,
    text_unet,
    tokenizer,
    train,
    unet,
    vae,
    widgets,
)
from sdlab.config import QUICK_ENV, is_quick, quick_or_full
from sdlab.device import pick_device
from sdlab.schedules import SCHEDULE_NAMES, NoiseSchedule, make_betas
from sdlab.unet import UNet, UNetConfig

__version__ = "0.1.0"

__all__ = [
    "attention",
    "captions",
    "checkpoints",
    "checks",
    "clip",
    "data",
    "evaluate",
    "guidance",
    "hub",
    "images",
    "judge",
    "pipeline",
    "plotting",
    "pretrained",
    "progress",
    "random",
    "samplers",
    "schedules",
    "silhouettes",
    "text_unet",
    "tokenizer",
    "train",
    "unet",
    "vae",
    "widgets",
    "QUICK_ENV",
    "is_quick",
    "quick_or_full",
    "pick_device",
    "SCHEDULE_NAMES",
    "NoiseSchedule",
    "make_betas",
    "UNet",
    "UNetConfig",
]
