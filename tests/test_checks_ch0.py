"""Chapter 0's exercise check: the shape of the U-Net's input, from the trace."""

from __future__ import annotations

import pytest
import torch

import sdlab as sd
from sdlab.checks import ExerciseError, check_unet_input_shape


def right(batch, height, width, scale):
    return (2 * batch if scale > 1 else batch, 4, height // 4, width // 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_right_shapes_pass_as_a_tuple_a_list_or_a_size(seed, capsys):
    assert check_unet_input_shape(right, seed=seed)
    assert check_unet_input_shape(lambda *args: list(right(*args)), seed=seed)
    assert check_unet_input_shape(lambda *args: torch.Size(right(*args)), seed=seed)
    assert "✓ the U-Net's input shape" in capsys.readouterr().out


def test_the_first_case_is_the_trace_of_the_chapter():
    pipe = sd.pipeline.load_pipeline()
    rows = {row["part"]: row for row in sd.pipeline.trace(pipe, "a red cat", guidance_scale=3.0,
                                                          num_inference_steps=2)}
    unet = rows["U-Net"]
    first = sd.checks.ch0.UNET_INPUT_SHAPE.cases(0)[0]
    assert first.args == (1, 64, 64, 3.0) and tuple(unet["input"]) == right(*first.args)


@pytest.mark.parametrize("wrong, message", [
    (lambda b, h, w, s: (2 * b if s > 1 else b, 4, h // 8, w // 8), "8 is Stable Diffusion 1's"),
    (lambda b, h, w, s: (2 * b if s > 1 else b, 3, h // 4, w // 4), "4 latent channels"),
    (lambda b, h, w, s: (b, 3, h, w), "the picture's shape"),
    (lambda b, h, w, s: (b, 4, h // 4, w // 4), "two copies"),
    (lambda b, h, w, s: (2 * b, 4, h // 4, w // 4), "skips the unconditional copy"),
    (lambda b, h, w, s: (2 * b if s > 1 else b, 4, w // 4, h // 4), "height comes before the width"),
    (lambda b, h, w, s: (2, 4, 16, 16), "same numbers for other inputs"),
    (lambda b, h, w, s: (2 * b, 4, h // 4), "should have shape"),
    (lambda b, h, w, s: None, "returned None"),
])
def test_each_slip_is_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_unet_input_shape(wrong)
