"""The cat-vs-dog judge of chapter 3 and its quality numbers."""

import numpy as np
import pytest
import scipy.linalg
import torch

import sdlab as sd
from sdlab.checkpoints import CheckpointError
from sdlab.evaluate import (
    CatDogClassifier,
    accuracy,
    ambiguous_fraction,
    blend,
    classifier_features,
    confidence,
    dog_probability,
    frechet_distance,
    load_classifier,
    real_images,
    sample_quality,
    save_classifier,
    train_classifier,
)


@pytest.fixture(scope="module")
def test_split():
    return real_images(split="test")


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()[0]


def test_real_images_are_every_silhouette_as_make_silhouette_batch_draws_them(test_split):
    images, labels = test_split
    assert images.shape == (200, 1, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0] * 100 + [1] * 100
    assert images.min() >= -1 and images.max() <= 1
    drawn, animals = sd.data.make_silhouette_batch(16, classes=("cat", "dog"), split="test",
                                                   generator=torch.Generator().manual_seed(3))
    match = (drawn[:, None] == images[None]).flatten(2).all(2)  # (16, 200): exact copies
    assert match.any(1).all()
    found = match.float().argmax(1)
    assert labels[found].tolist() == (animals == sd.data.ANIMALS.index("dog")).long().tolist()
    assert real_images(split="train")[0].shape == (1800, 1, 32, 32)


def test_classifier_shapes_and_clear_errors():
    model = CatDogClassifier()
    x = torch.zeros(3, 1, 32, 32)
    assert model(x).shape == (3,) and model.features(x).shape == (3, 32)
    assert sum(p.numel() for p in model.parameters()) < 250_000  # ships in well under 1 MB
    with pytest.raises(ValueError, match=r"x must be a \(B, 1, 32, 32\) tensor of grey images; got \(3, 3, 32, 32\)"):
        model(torch.zeros(3, 3, 32, 32))
    with pytest.raises(ValueError, match="width must be a positive int; got 0"):
        CatDogClassifier(width=0)
    with pytest.raises(ValueError, match="resolution must be a multiple of 8"):
        CatDogClassifier(resolution=30)


def test_train_classifier_runs_and_rejects_bad_steps():
    model, losses = train_classifier(steps=3, batch_size=8, generator=torch.Generator().manual_seed(0),
                                     progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses)) and not model.training
    with pytest.raises(ValueError, match="steps must be a positive int; got 0"):
        train_classifier(steps=0)


def test_save_and_load_round_trip(tmp_path):
    model = CatDogClassifier(width=8, feature_dim=16).eval()
    path = save_classifier(tmp_path / "clf.safetensors", model, info={"note": "test"})
    loaded, info = load_classifier(path)
    x = torch.randn(4, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert info["note"] == "test" and info["config"] == {"width": 8, "feature_dim": 16, "resolution": 32}
    with pytest.raises(CheckpointError, match="no checkpoint at .*missing.safetensors"):
        load_classifier(tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="classifier must be a CatDogClassifier"):
        save_classifier(tmp_path / "x.safetensors", torch.nn.Linear(2, 2))


def test_shipped_classifier_tells_held_out_cats_from_dogs(shipped, test_split):
    images, labels = test_split
    assert accuracy(shipped, images, labels) >= 0.95
    with pytest.raises(ValueError, match=r"labels must have shape \(200,\)"):
        accuracy(shipped, images, labels[:10])


def test_dog_probability_is_a_probability_of_clamped_images(shipped, test_split):
    images = test_split[0][::20]
    p = dog_probability(shipped, images)
    assert p.shape == (10,) and (p >= 0).all() and (p <= 1).all()
    loud = images * 5
    torch.testing.assert_close(dog_probability(shipped, loud), dog_probability(shipped, loud.clamp(-1, 1)))
    torch.testing.assert_close(dog_probability(shipped, images, batch_size=3), p)
    assert classifier_features(shipped, images).shape == (10, 32)
    with pytest.raises(ValueError, match=r"images must be a \(N, 1, H, W\) tensor; got \(1, 32, 32\)"):
        dog_probability(shipped, images[0])


def test_blend_is_a_pixel_average():
    a, b = torch.full((2, 1, 4, 4), -1.0), torch.ones(2, 1, 4, 4)
    assert torch.equal(blend(a, b), torch.zeros(2, 1, 4, 4))
    assert torch.equal(blend(a, b, weight=0.0), a) and torch.equal(blend(a, b, weight=1), b)
    with pytest.raises(ValueError, match="weight must be a number in \\[0, 1\\]; got 1.5"):
        blend(a, b, weight=1.5)
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        blend(a, b[:1])


def test_ambiguous_fraction_and_confidence():
    p = torch.tensor([0.0, 0.1, 0.2, 0.5, 0.79, 0.8, 1.0, 0.95], dtype=torch.float64)
    assert ambiguous_fraction(p) == pytest.approx(2 / 8)  # 0.5 and 0.79: the bounds are excluded
    assert ambiguous_fraction(p, low=0.05, high=0.99) == pytest.approx(6 / 8)
    assert confidence(torch.tensor([0.0, 1.0, 0.5, 0.25])) == pytest.approx((1 + 1 + 0.5 + 0.75) / 4)
    with pytest.raises(ValueError, match="p must hold probabilities in \\[0, 1\\]"):
        confidence(torch.tensor([1.2]))
    with pytest.raises(ValueError, match="p must be a non-empty 1-D tensor"):
        ambiguous_fraction(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="need 0 <= low < high <= 1; got low=0.8, high=0.2"):
        ambiguous_fraction(p, low=0.8, high=0.2)


def scipy_frechet(a, b):
    """FID's reference formula (pytorch-fid) with scipy's general matrix square root."""
    a, b = a.double().numpy(), b.double().numpy()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(ca @ cb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * cross))


def test_frechet_distance_matches_the_reference_formula_and_closed_forms():
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(300, 5, generator=g) @ torch.randn(5, 5, generator=g)).double()
    b = torch.randn(200, 5, generator=g) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([3.0, 0, 0, 4.0, 0])
    assert frechet_distance(a, a + shift) == pytest.approx(25.0, rel=1e-9)  # same covariance: ‖Δμ‖²
    x = torch.randn(1000, 1, generator=g, dtype=torch.float64)
    expected = (2 + 2 * x.mean()) ** 2 + (2 * x.std()) ** 2  # 1-D: (μ_a − μ_b)² + (σ_a − σ_b)²
    assert frechet_distance(x, 3 * x + 2) == pytest.approx(expected.item(), rel=1e-9)
    few = torch.randn(4, 32, generator=g)  # fewer samples than features: singular covariances still work
    assert np.isfinite(frechet_distance(few, torch.randn(4, 32, generator=g)))
    with pytest.raises(ValueError, match=r"features_b must be a \(N, D\) tensor with N >= 2; got \(1, 5\)"):
        frechet_distance(a, b[:1])
    with pytest.raises(ValueError, match="feature sizes differ: 5 and 4"):
        frechet_distance(a, b[:, :4])


def test_sample_quality_separates_real_images_from_blends(shipped, test_split):
    images, labels = test_split
    real = sample_quality(shipped, images[::2], images[1::2])
    mixed = sample_quality(shipped, blend(images[:100], images[100:]), images)
    assert real.n == 100 and 0.3 < real.dog_fraction < 0.7
    assert real.confidence > mixed.confidence and real.ambiguous_fraction < mixed.ambiguous_fraction
    assert real.frechet_distance < mixed.frechet_distance
    assert set(real.as_dict()) == {"n", "dog_fraction", "ambiguous_fraction", "confidence", "frechet_distance"}
