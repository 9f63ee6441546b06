"""Measure generated cats and dogs: a small cat-vs-dog classifier and sample-quality numbers.

The classifier is trained on the clean cat and dog silhouettes of the ``"train"`` split
(``sdlab.data``) and tested on the held-out ``"test"`` split. It gives every image a
probability of being a dog; its 32 penultimate activations are the feature space of a
Fréchet distance between generated and real images (the recipe of FID, Heusel et al.
2017, with this small classifier in place of Inception). Shipped weights:
``sdlab/weights/catdog_classifier.safetensors``, written by ``scripts/train_weights.py catdog_classifier``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sdlab.checkpoints import CheckpointError
from sdlab.data import ANIMALS, load_silhouettes, make_silhouette_batch
from sdlab.random import rand, randint, seeded_global_rng
from sdlab.silhouettes import Split
from sdlab.validation import number_in_range, positive_int

__all__ = [
    "CLASSES", "CatDogClassifier", "real_images", "train_classifier", "save_classifier", "load_classifier",
    "dog_probability", "classifier_features", "accuracy", "blend", "ambiguous_fraction", "confidence",
    "frechet_distance", "SampleQuality", "sample_quality",
]

CLASSES = ("cat", "dog")  # label 0 is a cat, label 1 a dog
_DOG = ANIMALS.index("dog")


class CatDogClassifier(nn.Module):
    """A small CNN that says how likely a one-channel image is a dog rather than a cat.

    Four 3×3 convolutions (the last three with stride 2: R → R/8), GroupNorm and SiLU,
    then a linear layer to ``feature_dim`` features and one logit. About 0.1 M parameters.

    Args:
        width: channels of the first convolution (then 2×, 4×, 4×).
        feature_dim: size of the feature vector used by :func:`frechet_distance`.
        resolution: image side in pixels (a multiple of 8).
    """

    def __init__(self, *, width: int = 16, feature_dim: int = 32, resolution: int = 32) -> None:
        super().__init__()
        for name, value in (("width", width), ("feature_dim", feature_dim), ("resolution", resolution)):
            positive_int(value, name)
        if resolution % 8 or width % 4:
            raise ValueError(f"resolution must be a multiple of 8 and width of 4; got {resolution} and {width}")
        self.config = {"width": width, "feature_dim": feature_dim, "resolution": resolution}
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1),
                       nn.GroupNorm(4, chans[i + 1]), nn.SiLU()]
        self.convs = nn.Sequential(*layers)
        flat = chans[-1] * (resolution // 8) ** 2
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(flat, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations: x (B, 1, R, R) in [-1, 1] → (B, feature_dim)."""
        R = self.config["resolution"]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, R, R):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, 1, {R}, {R}) tensor of grey images; got {shape}")
        return self.project(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of "dog": x (B, 1, R, R) → (B,); ``sigmoid`` of it is p(dog)."""
        return self.head(self.features(x))[:, 0]


def real_images(*, split: Split = "test", resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cat and dog silhouette of one split, as ``make_silhouette_batch`` draws them.

    Returns:
        images: (N, 1, R, R) float32 in [-1, 1] (cats first, then dogs; N = 200 for "test");
        labels: (N,) int64, 0 = cat, 1 = dog.
    """
    grey, animal = load_silhouettes(classes=CLASSES, split=split)
    x = F.interpolate(grey[:, None].float(), size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255) / 127.5 - 1, (animal == _DOG).long()


def _augment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 2 pixels (background −1 fills in)."""
    flip = rand((len(x),), generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (int(v) - 2 for v in randint(0, 5, (2,), generator=generator))
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    R = x.shape[-1]
    return padded[..., 2 + dy : 2 + dy + R, 2 + dx : 2 + dx + R]


def _classifier_batch(batch_size: int, generator: torch.Generator, *, resolution: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented cat and dog silhouettes of the "train" split and their labels (1 = dog)."""
    x, animal = make_silhouette_batch(batch_size, classes=CLASSES, resolution=resolution, split="train",
                                      generator=generator, device=generator.device)
    return _augment(x, generator), (animal == _DOG).float()


def _classifier_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
                     ) -> torch.Tensor:
    x, is_dog = batch
    return F.binary_cross_entropy_with_logits(model(x).float(), is_dog)


def train_classifier(
    *,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 3e-3,
    resolution: int = 32,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[CatDogClassifier, list[float]]:
    """Train a :class:`CatDogClassifier` on the clean cat and dog silhouettes of the "train" split.

    Binary cross-entropy, random flips and small shifts, through the course's one loop
    (:func:`sdlab.train.fit`: AdamW, warm-up for a tenth of the steps, cosine decay). ``generator``
    seeds everything, the initial weights included, on any ``device``; without one the global RNG does.

    Returns:
        (classifier in eval mode, per-step losses).
    """
    from sdlab.train import TrainConfig, fit  # sdlab.train imports the U-Net; keep this module light

    steps = positive_int(steps, "steps")
    seed = int(randint(0, 2**31, (), generator=generator))
    with seeded_global_rng(seed):
        model = CatDogClassifier(resolution=resolution)
    model = model.to("cpu" if device is None else device)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 10),
                         weight_decay=1e-2, ema_decay=0.0, grad_clip=10.0, seed=seed)
    result = fit(model, _classifier_loss, functools.partial(_classifier_batch, resolution=resolution),
                 config=config, progress=progress, desc="classifier")
    return result.model, result.losses


def save_classifier(path: str | Path, classifier: CatDogClassifier, *, info: dict | None = None) -> Path:
    """Write the classifier's weights (float32), config and ``info`` (any JSON dict) as one safetensors file."""
    from sdlab.pretrained import save_pretrained

    if not isinstance(classifier, CatDogClassifier):
        raise TypeError(f"classifier must be a CatDogClassifier; got {type(classifier).__name__}")
    return save_pretrained(path, classifier, info=info, dtype=torch.float32)


def load_classifier(name_or_path: str | Path = "catdog_classifier", *, device: torch.device | str | None = None
                    ) -> tuple[CatDogClassifier, dict]:
    """Load a saved classifier (by default the shipped one); return ``(classifier in eval mode, info)``.

    The shipped-weights registry (:func:`sdlab.pretrained.load_pretrained`) does the loading.
    """
    from sdlab.pretrained import load_pretrained

    classifier, info = load_pretrained(name_or_path, device=device)
    if not isinstance(classifier, CatDogClassifier):
        raise CheckpointError(f"{name_or_path} holds a {type(classifier).__name__}, not a CatDogClassifier")
    return classifier, info


def _batches(classifier: nn.Module, images: torch.Tensor, fn, batch_size: int) -> torch.Tensor:
    """Apply ``fn`` to ``images`` in batches without gradients, on the classifier's device."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, 1, H, W) tensor; got {shape}")
    param = next(classifier.parameters())
    with torch.no_grad():
        out = [fn(chunk.to(param.device, param.dtype)).float() for chunk in images.split(batch_size)]
    return torch.cat(out).to(images.device)


def dog_probability(classifier: CatDogClassifier, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """p(dog) for each image: images (N, 1, R, R) in [-1, 1] → (N,) in [0, 1], on the images' device.

    Images are clamped to [−1, 1] first, as every displayed image is.
    """
    return _batches(classifier, images.clamp(-1, 1), lambda x: torch.sigmoid(classifier(x)), batch_size)


def classifier_features(classifier: CatDogClassifier, images: torch.Tensor, *, batch_size: int = 512
                        ) -> torch.Tensor:
    """The classifier's penultimate features: images (N, 1, R, R) → (N, feature_dim)."""
    return _batches(classifier, images.clamp(-1, 1), classifier.features, batch_size)


def accuracy(classifier: CatDogClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose more likely class (p(dog) > 0.5 means dog) is the label (0 cat, 1 dog)."""
    p = dog_probability(classifier, images)
    if labels.shape != p.shape:
        raise ValueError(f"labels must have shape ({len(p)},), one per image; got {tuple(labels.shape)}")
    return ((p > 0.5).long().cpu() == labels.cpu()).float().mean().item()


def blend(a: torch.Tensor, b: torch.Tensor, *, weight: float = 0.5) -> torch.Tensor:
    """Pixel average (1 − w)·a + w·b of two images of the same shape: "in between" a and b."""
    weight = number_in_range(weight, "weight", 0, 1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    return (1 - weight) * a + weight * b


def _check_probabilities(p: torch.Tensor) -> torch.Tensor:
    if not isinstance(p, torch.Tensor) or p.dim() != 1 or p.numel() == 0:
        shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise ValueError(f"p must be a non-empty 1-D tensor of probabilities; got {shape}")
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError("p must hold probabilities in [0, 1]")
    return p.double()


def ambiguous_fraction(p: torch.Tensor, *, low: float = 0.2, high: float = 0.8) -> float:
    """Fraction of probabilities strictly between ``low`` and ``high``: images the classifier cannot place."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"need 0 <= low < high <= 1; got low={low!r}, high={high!r}")
    p = _check_probabilities(p)
    return ((p > low) & (p < high)).double().mean().item()


def confidence(p: torch.Tensor) -> float:
    """Mean of max(p, 1 − p): 1 when every image is clearly a cat or a dog, 0.5 when none is."""
    p = _check_probabilities(p)
    return torch.maximum(p, 1 - p).mean().item()


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh(a)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula, Heusel et al. 2017):

        d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}).

    Args:
        features_a: (N_a, D); features_b: (N_b, D); N ≥ 2 each. Computed in float64.
    Returns:
        d² ≥ 0 (as FID reports it). It is biased upwards for small N: compare sets of equal size.
    """
    for name, f in (("features_a", features_a), ("features_b", features_b)):
        if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] < 2:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"{name} must be a (N, D) tensor with N >= 2; got {shape}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} and {features_b.shape[1]}")
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    d2 = (mu_a - mu_b).square().sum() + torch.trace(cov_a + cov_b - 2 * cross)
    return max(d2.item(), 0.0)


@dataclass(frozen=True)
class SampleQuality:
    """The chapter's numbers for one set of images (probabilities from the classifier)."""

    n: int
    dog_fraction: float  # share with p(dog) > 0.5
    ambiguous_fraction: float  # share with 0.2 < p(dog) < 0.8
    confidence: float  # mean max(p, 1 − p)
    frechet_distance: float  # in the classifier's feature space, against the reference images

    def as_dict(self) -> dict:
        return asdict(self)


def sample_quality(classifier: CatDogClassifier, images: torch.Tensor, reference: torch.Tensor) -> SampleQuality:
    """Score ``images`` (N, 1, R, R): class balance, ambiguity, confidence and Fréchet distance to ``reference``."""
    p = dog_probability(classifier, images)
    fd = frechet_distance(classifier_features(classifier, images), classifier_features(classifier, reference))
    return SampleQuality(n=len(p), dog_fraction=(p > 0.5).double().mean().item(),
                         ambiguous_fraction=ambiguous_fraction(p), confidence=confidence(p),
                         frechet_distance=fd)
