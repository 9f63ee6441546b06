"""Chapter 5's exercise checks: the right answers pass, each plausible slip is named."""

from __future__ import annotations

import pytest
import torch

import sdlab as sd
from sdlab.checks import ExerciseError, check_kl_divergence, check_reparameterise


def test_reparameterise_accepts_the_library_and_a_written_out_answer():
    assert check_reparameterise(sd.vae.reparameterise)
    assert check_reparameterise(lambda m, lv, e: m + lv.mul(0.5).exp() * e)
    assert check_reparameterise(lambda m, lv, e: m + torch.sqrt(torch.exp(lv)) * e)


@pytest.mark.parametrize("wrong, says", [
    (lambda m, lv, e: m + torch.exp(lv) * e, "variance"),
    (lambda m, lv, e: m + lv * e, "logvar itself"),
    (lambda m, lv, e: m + torch.exp(2 * lv) * e, "the ½ goes the other way"),
    (lambda m, lv, e: m - torch.exp(0.5 * lv) * e, "sign"),
    (lambda m, lv, e: torch.exp(0.5 * lv) * e, "left out the mean"),
    (lambda m, lv, e: m + e, "unscaled"),
    (lambda m, lv, e: m + torch.exp(0.5 * lv) * torch.randn_like(m), "your own noise"),
    (lambda m, lv, e: m + torch.exp(0.5 * lv) * e + 0.01, "off by"),
    (lambda m, lv, e: None, "returned None"),
])
def test_reparameterise_names_each_slip(wrong, says):
    with pytest.raises(ExerciseError, match=says):
        check_reparameterise(wrong)


def test_kl_accepts_the_library_and_diffusers():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    assert check_kl_divergence(sd.vae.kl_divergence)
    # diffusers' own KL (it sums over channels and pixels), fed the same mean and logvar
    assert check_kl_divergence(lambda m, lv: DiagonalGaussianDistribution(torch.cat([m, lv], 1)).kl())



@pytest.mark.parametrize("wrong, says", [
    (lambda m, lv: (m**2 + lv.exp() - 1 - lv).flatten(1).sum(1), "½ is missing"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 + lv).flatten(1).sum(1), "log-variance term is flipped"),
    (lambda m, lv: -0.5 * (m**2 + lv.exp() - 1 - lv).flatten(1).sum(1), "wrong sign"),
    (lambda m, lv: 0.5 * (m**2 + lv**2 - 1 - torch.log(lv**2)).flatten(1).sum(1), "standard deviation"),
    (lambda m, lv: 0.5 * (m**2 + torch.exp(2 * lv) - 1 - lv).flatten(1).sum(1), "squared it"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - lv).flatten(1).sum(1), "− 1"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).flatten(1).mean(1), "averaged"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(), "one KL per image"),
    (lambda m, lv: 0.5 * (lv.exp() - 1 - lv).flatten(1).sum(1), "μ²"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(1), "shape"),
])
def test_kl_names_each_slip(wrong, says):
    with pytest.raises(ExerciseError, match=says):
        check_kl_divergence(wrong)
