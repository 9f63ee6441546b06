"""sdlab: the helper package of "Stable Diffusion from the inside".

Notebooks use it as ``import sdlab as sd``. Every public name listed in
``__all__`` stays once a chapter uses it.
"""

from sdlab.config import QUICK_ENV, is_quick, quick_or_full
from sdlab.device import pick_device
from sdlab.schedules import SCHEDULE_NAMES, NoiseSchedule, make_betas

__version__ = "0.1.0"

__all__ = [
    "QUICK_ENV",
    "is_quick",
    "quick_or_full",
    "pick_device",
    "SCHEDULE_NAMES",
    "NoiseSchedule",
    "make_betas",
]
