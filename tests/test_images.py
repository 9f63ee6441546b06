"""sdlab.images: the cat photo, and pixels <-> tensors in [-1, 1]."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.images import load_cat, to_numpy_image, to_pil, to_tensor


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def rgb8(rng):
    return rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)


# ---- load_cat ---------------------------------------------------------------------------------------------------


def test_load_cat_shape_dtype_range():
    x = load_cat()
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) < -0.5 and 0.5 < float(x.max()) <= 1.0  # a real photo spans the range


def test_load_cat_is_the_centre_crop_resized_with_lanczos():
    from skimage import data

    photo = data.chelsea()
    assert photo.shape == (300, 451, 3)
    crop = photo[:, 75:375]  # (451 - 300) // 2 = 75
    assert torch.equal(load_cat(size=None), torch.from_numpy(crop).permute(2, 0, 1).double().div(127.5).sub(1).float())
    expected = np.asarray(Image.fromarray(crop).resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(to_pil(load_cat(size=32))), expected)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "64"])
def test_load_cat_rejects_bad_size(size):
    with pytest.raises(ValueError, match=r"size must be a positive int or None; got"):
        load_cat(size=size)


# ---- to_tensor: what it accepts ---------------------------------------------------------------------------------


def test_uint8_rgb_scaling_and_layout(rgb8):
    x = to_tensor(rgb8)
    assert x.shape == (3, 9, 7) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(rgb8).permute(2, 0, 1).float() / 127.5 - 1, atol=1e-6)
    assert to_tensor(np.array([[0, 255]], dtype=np.uint8)).tolist() == [[[-1.0, 1.0]]]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_round_trip_uint8_to_tensor_to_pil_is_exact(rgb8, mode):
    image = Image.fromarray(rgb8).convert(mode)
    back = to_pil(to_tensor(image))
    assert back.mode == mode
    assert np.array_equal(np.asarray(back), np.asarray(image))
    assert np.array_equal(np.asarray(to_pil(to_tensor(np.asarray(image)))), np.asarray(image))


def test_round_trip_through_to_numpy_image(rgb8):
    assert np.array_equal(np.round(to_numpy_image(to_tensor(rgb8)) * 255).astype(np.uint8), rgb8)


def test_grayscale_gives_one_channel(rgb8):
    assert to_tensor(rgb8[:, :, 0]).shape == (1, 9, 7)
    assert to_tensor(rgb8[:, :, :1]).shape == (1, 9, 7)
    assert to_tensor(Image.fromarray(rgb8).convert("L")).shape == (1, 9, 7)


def test_alpha_is_composited_over_white():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, 0] = 255  # red
    rgba[0, :, 3] = [0, 255, 0]  # transparent, opaque, transparent again
    rgba[0, 2, 3] = 51  # 20 % opaque
    x = to_tensor(rgba)
    assert x.shape == (3, 1, 3)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 1.0, 1.0]))  # fully transparent -> white
    assert torch.allclose(x[:, 0, 1], torch.tensor([1.0, -1.0, -1.0]))  # opaque red stays red
    assert torch.allclose(x[:, 0, 2], torch.tensor([1.0, 0.6, 0.6]), atol=1e-6)  # 0.2 red + 0.8 white
    assert torch.equal(to_tensor(Image.fromarray(rgba, mode="RGBA")), x)


def test_gray_alpha_mode_la():
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    assert to_tensor(la).tolist() == [[[1.0, -1.0]]]


def test_palette_images(rgb8):
    palette = Image.fromarray(rgb8).quantize(colors=8)
    assert palette.mode == "P"
    assert torch.equal(to_tensor(palette), to_tensor(palette.convert("RGB")))
    palette.info["transparency"] = 0  # palette entry 0 becomes transparent -> white
    x = to_tensor(palette)
    transparent = np.asarray(palette) == 0
    assert transparent.any() and torch.all(x[:, torch.from_numpy(transparent)] == 1.0)


def test_bilevel_and_bool_images():
    bits = np.array([[True, False], [False, True]])
    expected = [[[1.0, -1.0], [-1.0, 1.0]]]
    assert to_tensor(Image.fromarray(bits)).tolist() == expected  # PIL mode "1"
    assert to_tensor(bits).tolist() == expected


def test_cmyk_is_converted_to_rgb(rgb8):
    cmyk = Image.fromarray(rgb8).convert("CMYK")
    assert torch.equal(to_tensor(cmyk), to_tensor(cmyk.convert("RGB")))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_arrays_in_unit_range(dtype, rng):
    a = rng.random((5, 6, 3)).astype(dtype)
    x = to_tensor(a)
    assert x.dtype == torch.float32 and x.shape == (3, 5, 6)
    assert torch.allclose(x, torch.from_numpy(a.astype(np.float64) * 2 - 1).permute(2, 0, 1).float(), atol=1e-6)


def test_non_contiguous_arrays_work(rgb8):
    assert torch.equal(to_tensor(rgb8[:, ::-1]), to_tensor(rgb8).flip(-1))


# ---- to_tensor: what it rejects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_rejects_high_bit_depth_pil_modes(mode):
    with pytest.raises(ValueError, match=rf"image has PIL mode '{mode}'.*allowed: P, RGB"):
        to_tensor(Image.new(mode, (4, 4)))


@pytest.mark.parametrize(
    "array, dtype_name",
    [(np.zeros((4, 4), np.int64), "int64"), (np.zeros((4, 4), np.complex64), "complex64"),
     (np.zeros((4, 4), object), "object"), (np.zeros((4, 4), np.uint16), "uint16")],
)
def test_rejects_other_dtypes(array, dtype_name):
    with pytest.raises(TypeError, match=rf"image has dtype {dtype_name}; allowed: uint8"):
        to_tensor(array)


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (4,), (2, 4, 4, 3)])
def test_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"image must have shape \(H, W\), \(H, W, 1\), \(H, W, 3\) or \(H, W, 4\)"):
        to_tensor(np.zeros(shape, np.uint8))


def test_four_d_arrays_get_a_batch_hint():
    with pytest.raises(ValueError, match=r"a batch\? convert the images one at a time"):
        to_tensor(np.zeros((2, 4, 4, 3), np.uint8))


def test_rejects_empty_images():
    with pytest.raises(ValueError, match=r"image has no pixels"):
        to_tensor(np.zeros((0, 4, 3), np.uint8))


@pytest.mark.parametrize("low, high", [(-0.5, 0.5), (0.0, 255.0), (0.0, np.inf)])
def test_rejects_float_arrays_outside_unit_range(low, high):
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        to_tensor(np.array([[low, high]]))


def test_tolerates_rounding_error_at_the_ends():
    assert to_tensor(np.array([[-1e-9, 1 + 1e-9]])).tolist() == [[[-1.0, 1.0]]]


def test_rejects_nan():
    with pytest.raises(ValueError, match=r"image contains NaN values"):
        to_tensor(np.array([[0.5, np.nan]]))


def test_rejects_bool_colour_arrays():
    with pytest.raises(ValueError, match=r"bool arrays must have shape \(H, W\)"):
        to_tensor(np.zeros((2, 2, 3), bool))


def test_rejects_tensors_with_a_hint():
    with pytest.raises(TypeError, match=r"image is already a torch.Tensor .*can be used as it is"):
        to_tensor(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("value", [[[0, 1]], "cat.png", None])
def test_rejects_other_types(value):
    with pytest.raises(TypeError, match=r"image must be a PIL.Image.Image or a numpy array; got"):
        to_tensor(value)


def test_error_messages_use_the_given_name():
    with pytest.raises(TypeError, match=r"^frames\[2\] has dtype int64"):
        to_tensor(np.zeros((2, 2), np.int64), name="frames[2]")


# ---- to_pil and to_numpy_image -----------------------------------------------------------------------------------


def test_to_pil_modes_sizes_and_clamping():
    x = torch.tensor([[[-3.0, -1.0, 0.0, 1.0, 5.0]]])
    gray = to_pil(x)
    assert gray.mode == "L" and gray.size == (5, 1)
    assert np.asarray(gray).tolist() == [[0, 0, 128, 255, 255]]  # 127.5 rounds to even: 128
    colour = to_pil(torch.zeros(1, 3, 2, 4))
    assert colour.mode == "RGB" and colour.size == (4, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_to_pil_any_float_dtype(rgb8, dtype):
    x = to_tensor(rgb8).to(dtype)
    expected = np.asarray(to_pil(x.float()))
    assert np.array_equal(np.asarray(to_pil(x)), expected)
    assert np.abs(expected.astype(int) - rgb8).max() <= (2 if dtype == torch.bfloat16 else 0)


def test_to_pil_detaches_tensors_that_require_grad():
    assert to_pil(torch.zeros(3, 2, 2, requires_grad=True)).size == (2, 2)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.zeros(2, 3, 4, 4), ValueError, r"x holds a batch of 2 images; pass one image, e.g. x\[0\]"),
        (torch.zeros(4, 4, 4), ValueError, r"x must have shape \(C, H, W\) or \(1, C, H, W\) with C = 1 or 3"),
        (torch.zeros(4, 4), ValueError, r"got shape \(4, 4\)"),
        (torch.zeros(3, 0, 4), ValueError, r"x has no pixels"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), TypeError, r"x must be a floating-point tensor .*torch.uint8"),
        (np.zeros((3, 4, 4), np.float32), TypeError, r"x must be a torch.Tensor of shape \(C, H, W\); got ndarray"),
        (torch.full((3, 2, 2), float("nan")), ValueError, r"x contains NaN values"),
    ],
)
def test_to_pil_rejects(x, error, match):
    with pytest.raises(error, match=match):
        to_pil(x)


def test_to_numpy_image_shapes_and_values(rgb8):
    x = to_tensor(rgb8)
    image = to_numpy_image(x[None])
    assert image.shape == (9, 7, 3) and image.dtype == np.float32
    assert np.allclose(image, rgb8 / 255.0, atol=1e-6)
    gray = to_numpy_image(x[:1])
    assert gray.shape == (9, 7)
    assert to_numpy_image(torch.tensor([[[-2.0, 2.0]]])).tolist() == [[0.0, 1.0]]  # clamped


def test_to_numpy_image_accepts_pil_and_numpy(rgb8):
    expected = to_numpy_image(to_tensor(rgb8))
    assert np.array_equal(to_numpy_image(Image.fromarray(rgb8)), expected)
    assert np.array_equal(to_numpy_image(rgb8), expected)


def test_to_numpy_image_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"panel holds a batch of 5 images"):
        to_numpy_image(torch.zeros(5, 3, 4, 4), name="panel")


def test_load_cat_takes_a_numpy_int_size():
    assert torch.equal(load_cat(size=np.int64(16)), load_cat(size=16))


def test_tile_lays_a_batch_out_row_by_row():
    from sdlab.images import tile

    x = torch.arange(5 * 1 * 2 * 3, dtype=torch.float32).reshape(5, 1, 2, 3)
    grid = tile(x, ncols=2)
    assert grid.shape == (1, 6, 6)
    assert torch.equal(grid[:, 0:2, 3:6], x[1]) and torch.equal(grid[:, 4:6, 0:3], x[4])
    assert (grid[:, 4:6, 3:6] == -1).all()  # the missing sixth image is padding
    assert tile(x, ncols=5).shape == (1, 2, 15)
    with pytest.raises(ValueError, match=r"images must be a non-empty \(B, C, H, W\) tensor; got \(2, 3\)"):
        tile(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ncols must be a positive int; got 0"):
        tile(x, ncols=0)
