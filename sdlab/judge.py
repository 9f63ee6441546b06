"""The judge of chapters 5–7: five classifiers that read a 64 × 64 scene back into its caption.

Before any number about a generated picture counts ("is this a small red cat on the left?"),
the judge must be right on clean scenes: ``AttributeJudge`` is one small CNN with a head per
attribute (animal, colour, background, size, position), trained on scenes of every combination
(held-out pairs included: it judges them), half of them softened and speckled as a decoder
leaves them (``degrade``), and shipped only if it names each attribute of ≥ 98 % of clean
held-out scenes correctly (``judge_accuracy``).

    >>> judge, info = sd.pretrained.load_pretrained("judge")
    >>> sd.judge.judge_accuracy(judge, scenes)            # {"animal": 0.99.., "colour": 1.0, ...}
    >>> sd.judge.describe(judge, images)                  # ["a small red cat on the left, blue background", ...]
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from sdlab.data import ATTRIBUTES, SCENES, SceneBatch, SceneSpec, make_scenes
from sdlab.random import rand, randint, randn_tensor, seeded_global_rng
from sdlab.validation import number_in_range, positive_int

__all__ = ["ATTRIBUTES", "AttributeJudge", "degrade", "judge_batch", "judge_loss", "train_judge", "predict",
           "judge_accuracy", "agreement", "describe", "disagreements", "features"]



class AttributeJudge(nn.Module):
    """A CNN that names the five attributes of 64 × 64 scenes: x (B, 3, 64, 64) → {attribute: logits}.

    Four 3×3 convolutions (R → R/16 by strides of 2), GroupNorm and SiLU, then the flattened
    4 × 4 map (where things are matters for size and position) into one linear head per attribute.

    Args:
        width: channels of the first convolution (then 2×, 4×, 4×).
        resolution: image side in pixels (a multiple of 16).
    """

    def __init__(self, *, width: int = 32, resolution: int = 64) -> None:
        super().__init__()
        positive_int(width, "width")
        positive_int(resolution, "resolution")
        if resolution % 16 or width % 8:
            raise ValueError(f"resolution must be a multiple of 16 and width of 8; got {resolution} and {width}")
        self.config = {"width": width, "resolution": resolution}
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.GroupNorm(8, chans[i + 1]),
                       nn.SiLU()]
        self.convs = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.1))
        flat = chans[-1] * (resolution // 16) ** 2
        self.heads = nn.ModuleDict({name: nn.Linear(flat, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        R = self.config["resolution"]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, R, R):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, 3, {R}, {R}) tensor of colour scenes in [-1, 1]; got {shape}")
        features = self.convs(x)
        return {name: head(features) for name, head in self.heads.items()}


def degrade(images: torch.Tensor, generator: torch.Generator, *, fraction: float = 0.5) -> torch.Tensor:
    """Soften and speckle a random ``fraction`` of the images, as a decoder's output is: (B, 3, H, W) → same.

    Each chosen image is blended with its 3 × 3 box blur by a random amount in [0, 1] and gets Gaussian
    noise of a random σ in [0, 0.05]. A judge trained on such images reads a scene the same way before
    and after a faithful round trip, instead of flipping on borderline silhouettes at the first blur.
    """
    fraction = number_in_range(fraction, "fraction", 0, 1)
    b, device = images.shape[0], images.device
    chosen = (rand((b, 1, 1, 1), generator=generator, device=device) < fraction).to(images.dtype)
    amount = rand((b, 1, 1, 1), generator=generator, device=device) * chosen
    sigma = rand((b, 1, 1, 1), generator=generator, device=device) * 0.05 * chosen
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noise = randn_tensor(images.shape, generator=generator, device=device, dtype=images.dtype)
    return ((1 - amount) * images + amount * blurred + sigma * noise).clamp(-1, 1)


def judge_batch(batch_size: int, generator: torch.Generator, *, degraded: float = 0.5) -> SceneBatch:
    """Training scenes of every combination (held-out pairs too), "train" silhouettes; ``degraded``: see `degrade`."""
    batch = make_scenes(batch_size, held_out="include", generator=generator, device=generator.device, **SCENES)
    if degraded:
        batch = dataclasses.replace(batch, images=degrade(batch.images, generator, fraction=degraded))
    return batch


def judge_loss(model: AttributeJudge, batch: SceneBatch, generator: torch.Generator | None = None) -> torch.Tensor:
    """The sum over attributes of the cross-entropy of each head."""
    logits = model(batch.images)
    return sum(F.cross_entropy(logits[name], batch.labels[name]) for name in ATTRIBUTES)


def train_judge(*, steps: int = 1500, batch_size: int = 128, lr: float = 3e-3, width: int = 32,
                generator: torch.Generator | None = None, device: torch.device | str | None = None,
                progress: bool = True) -> tuple[AttributeJudge, list[float]]:
    """Train an ``AttributeJudge`` through the course's loop (`sdlab.train.fit`); ``generator`` seeds all of it.

    Returns:
        (judge in eval mode, per-step losses).
    """
    from sdlab.train import TrainConfig, fit

    seed = int(randint(0, 2**31, (), generator=generator))
    with seeded_global_rng(seed):
        model = AttributeJudge(width=width, resolution=SCENES["resolution"])
    model = model.to("cpu" if device is None else device)
    config = TrainConfig(steps=positive_int(steps, "steps"), batch_size=batch_size, lr=lr,
                         warmup_steps=max(1, steps // 20), weight_decay=1e-2, ema_decay=0.0, grad_clip=10.0,
                         seed=seed)
    result = fit(model, judge_loss, judge_batch, config=config, progress=progress, desc="judge")
    return result.model, result.losses


@torch.no_grad()
def predict(judge: AttributeJudge, images: torch.Tensor, *, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The judge's answer for each image: {attribute: (B,) int64 index into its names}."""
    judge.eval()
    device = next(judge.parameters()).device
    parts = [judge(chunk.to(device).clamp(-1, 1)) for chunk in images.split(batch_size)]
    return {name: torch.cat([p[name] for p in parts]).argmax(1).cpu() for name in ATTRIBUTES}


@torch.no_grad()
def features(judge: AttributeJudge, images: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """The judge's view of each image as a vector: its last feature map, averaged over positions, (B, 4·width).

    What the Fréchet distance and the diversity of chapter 6 compare (as FID uses an Inception
    network's pooled features); float32 on the CPU.
    """
    judge.eval()
    device = next(judge.parameters()).device
    body = judge.convs[:-2]  # the convolutions, without the flattening and dropout of the heads
    return torch.cat([body(chunk.to(device).clamp(-1, 1)).mean((2, 3)).float().cpu()
                      for chunk in images.split(batch_size)])


def judge_accuracy(judge: AttributeJudge, scenes: SceneBatch, images: torch.Tensor | None = None
                   ) -> dict[str, float]:
    """Share of scenes whose attribute the judge names correctly, per attribute, plus ``"all"`` (all five right).

    Args:
        scenes: the scenes whose labels are the truth. images: what to judge instead of
            ``scenes.images`` (their VAE reconstructions, or pictures generated from their captions).
    """
    guess = predict(judge, scenes.images if images is None else images)
    right = {name: guess[name] == scenes.labels[name].cpu() for name in ATTRIBUTES}
    out = {name: r.double().mean().item() for name, r in right.items()}
    out["all"] = functools.reduce(torch.logical_and, right.values()).double().mean().item()
    return out


def agreement(judge: AttributeJudge, images: torch.Tensor, others: torch.Tensor) -> dict[str, float]:
    """Share of image pairs on which the judge gives the same answer, per attribute (e.g. scene vs its round trip)."""
    a, b = predict(judge, images), predict(judge, others)
    return {name: (a[name] == b[name]).double().mean().item() for name in ATTRIBUTES}


def describe(judge: AttributeJudge, images: torch.Tensor) -> list[str]:
    """What the judge sees in each image, as a caption ("?" where colour and background come out the same)."""
    guess = predict(judge, images)
    captions = []
    for row in zip(*(guess[name].tolist() for name in ATTRIBUTES)):
        names = [values[i] for values, i in zip(ATTRIBUTES.values(), row)]
        try:
            captions.append(SceneSpec(*names).caption())
        except ValueError:
            captions.append(f"a {names[3]} {names[1]} {names[0]}, ? background")
    return captions


def disagreements(judge: AttributeJudge, images: torch.Tensor, prompts: list[str]) -> list[dict[str, str]]:
    """Per picture, what the judge sees instead of what its prompt states (`sd.captions.stated`); {} when all agree.

    Only the attributes a prompt states are compared: "purple giraffe" may stand on any background.
    """
    from sdlab.captions import stated

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"one prompt per picture: got {len(prompts)} prompts for {len(images)} pictures")
    guess = predict(judge, images)
    out = []
    for i, prompt in enumerate(prompts):
        seen = {name: values[guess[name][i]] for name, values in ATTRIBUTES.items()}
        out.append({name: seen[name] for name, value in stated(prompt).items() if seen[name] != value})
    return out
