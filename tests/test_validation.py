"""The shared argument checks of sdlab.validation, and the numpy scalars the package now accepts through them."""

import math
import re
from typing import Literal

import numpy as np
import pytest
import torch

from sdlab.validation import (
    as_int,
    int_in_range,
    is_integer,
    is_real_number,
    number_in_range,
    one_of,
    positive_int,
    positive_number,
)

NUMPY_INTS = [np.int64(3), np.int32(3), np.int16(3), np.uint8(3)]
NUMPY_FLOATS = [np.float32(0.5), np.float64(0.5), np.float16(0.5)]
NOT_NUMBERS = [True, False, np.bool_(True), "3", None, [3], (3,), 3j, torch.tensor(3)]


# ----------------------------------------------------------------------------- is_integer / is_real_number / as_int


@pytest.mark.parametrize("value", [3, 0, -2, *NUMPY_INTS])
def test_integers_are_integers_and_real_numbers(value):
    assert is_integer(value) and is_real_number(value)


@pytest.mark.parametrize("value", [0.5, 3.0, math.nan, math.inf, *NUMPY_FLOATS])
def test_floats_are_real_numbers_but_not_integers(value):
    assert is_real_number(value) and not is_integer(value)


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_bools_strings_containers_and_tensors_are_not_numbers(value):
    assert not is_integer(value) and not is_real_number(value)


def test_zero_dim_tensors_count_only_when_asked():
    assert is_integer(torch.tensor(3), tensors=True) and is_real_number(torch.tensor(3), tensors=True)
    assert is_real_number(torch.tensor(0.5), tensors=True) and not is_integer(torch.tensor(0.5), tensors=True)
    for tensor in (torch.tensor(True), torch.tensor([3]), torch.tensor(1j)):
        assert not is_integer(tensor, tensors=True) and not is_real_number(tensor, tensors=True)


@pytest.mark.parametrize("value", [3, *NUMPY_INTS])
def test_as_int_returns_a_plain_int(value):
    result = as_int(value, "n")
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value, got", [(True, "bool"), (3.0, "float"), (np.float32(3), "float32"), ("3", "str")])
def test_as_int_refuses_non_integers(value, got):
    with pytest.raises(TypeError, match=rf"^n must be an int; got {got}$"):
        as_int(value, "n")
    assert as_int(torch.tensor(3), "n", tensors=True) == 3


# ----------------------------------------------------------------------------- positive_int / int_in_range


@pytest.mark.parametrize("value", [1, 7, *NUMPY_INTS])
def test_positive_int_accepts_ints_and_numpy_ints(value):
    result = positive_int(value, "steps")
    assert result == value and type(result) is int


@pytest.mark.parametrize("value", [0, -1, np.int64(0), 2.0, 2.5, np.float32(2), True, "2", None, math.nan])
def test_positive_int_message_names_argument_value_and_rule(value):
    with pytest.raises(ValueError, match=rf"^steps must be a positive int; got {re.escape(repr(value))}$"):
        positive_int(value, "steps")


def test_positive_int_or_none():
    assert positive_int(None, "size", allow_none=True) is None
    with pytest.raises(ValueError, match=r"^size must be a positive int or None; got 0$"):
        positive_int(0, "size", allow_none=True)


def test_int_in_range_bounds_are_inclusive():
    assert int_in_range(2, "T", 2) == 2 and int_in_range(np.int32(5), "bins", 1, 5) == 5
    assert type(int_in_range(np.int64(9), "T", 2)) is int
    with pytest.raises(ValueError, match=r"^num_train_timesteps must be an int >= 2; got 1$"):
        int_in_range(1, "num_train_timesteps", 2)
    with pytest.raises(ValueError, match=r"^bins must be an int in \[1, 5\]; got 6$"):
        int_in_range(6, "bins", 1, 5)
    for bad in (True, 3.0, np.float64(3), "3"):
        with pytest.raises(ValueError, match=r"^n must be an int >= 1; got"):
            int_in_range(bad, "n", 1)


# ----------------------------------------------------------------------------- positive_number / number_in_range


@pytest.mark.parametrize("value", [2, 0.5, *NUMPY_FLOATS, *NUMPY_INTS])
def test_positive_number_accepts_numpy_scalars_and_returns_a_float(value):
    result = positive_number(value, "noise_scale")
    assert result == pytest.approx(float(value)) and type(result) is float


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, np.float32("nan"), True, "2", None])
def test_positive_number_refuses_zero_nan_inf_bools_and_strings(value):
    with pytest.raises(ValueError, match=r"^noise_scale must be a positive number; got "):
        positive_number(value, "noise_scale")


def test_number_in_range_closed_and_open_ends():
    assert number_in_range(0, "dropout", 0, 1, high_open=True) == 0.0
    assert type(number_in_range(np.float32(0.25), "dropout", 0, 1, high_open=True)) is float
    assert number_in_range(10.0, "size", 0, 10.0, low_open=True) == 10.0
    with pytest.raises(ValueError, match=r"^dropout must be a float in \[0, 1\); got 1.0$"):
        number_in_range(1.0, "dropout", 0, 1, high_open=True, what="a float")
    with pytest.raises(ValueError, match=r"^size must be a number of inches in \(0, 10.0\]; got 0$"):
        number_in_range(0, "size", 0, 10.0, low_open=True, what="a number of inches")


@pytest.mark.parametrize("kwargs, text", [
    (dict(low=0), ">= 0"), (dict(low=0, low_open=True), "> 0"), (dict(high=1), "<= 1"),
    (dict(high=1, high_open=True), "< 1"),
])
def test_number_in_range_one_bound_messages(kwargs, text):
    with pytest.raises(ValueError, match=rf"^eta must be a number {text}; got 'x'$"):
        number_in_range("x", "eta", **kwargs)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan"), True, None, "0.5"])
def test_number_in_range_needs_a_finite_number(value):
    with pytest.raises(ValueError, match=r"^x must be a number; got "):
        number_in_range(value, "x")


# ----------------------------------------------------------------------------- one_of


def test_one_of_takes_a_tuple_or_a_literal():
    assert one_of("epsilon", "prediction_type", ("epsilon", "v_prediction")) == "epsilon"
    with pytest.raises(ValueError, match=r"^prediction_type must be one of \('epsilon', 'v_prediction'\); got 'x'$"):
        one_of("x", "prediction_type", Literal["epsilon", "v_prediction"])


def test_one_of_returns_the_plain_choice_for_numpy_ints_and_str_subclasses():
    result = one_of(np.int64(32), "resolution", Literal[32, 64])
    assert result == 32 and type(result) is int
    result = one_of(np.str_("train"), "split", ("train", "test"))
    assert result == "train" and type(result) is str


@pytest.mark.parametrize("value", [32.0, np.float32(32), True, "32", None, torch.tensor(32), np.array([32])])
def test_one_of_matches_only_values_of_the_same_kind(value):
    with pytest.raises(ValueError, match=r"^resolution must be one of \(32, 64\); got "):
        one_of(value, "resolution", (32, 64))


def test_one_of_keeps_bools_apart_from_ints():
    assert one_of(True, "clip", (True, False)) is True
    assert one_of(np.bool_(False), "clip", (True, False)) is False
    with pytest.raises(ValueError, match=r"^clip must be one of \(True, False\); got 1$"):
        one_of(1, "clip", (True, False))
    with pytest.raises(ValueError, match=r"^level must be one of \(0, 1\); got True$"):
        one_of(True, "level", (0, 1))


# ----------------------------------------------------------------------------- the package accepts numpy scalars


def test_scenes_and_silhouettes_take_numpy_ints():
    from sdlab.data import SceneSpec, make_scenes, make_silhouette_batch

    scenes = make_scenes(np.int64(3), resolution=np.int64(32), generator=torch.Generator().manual_seed(0))
    same = make_scenes(3, resolution=32, generator=torch.Generator().manual_seed(0))
    assert len(scenes) == 3 and torch.equal(scenes.images, same.images) and scenes.captions == same.captions
    images, _ = make_silhouette_batch(np.int32(2), resolution=np.int64(32), generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 32, 32)
    spec = SceneSpec(np.str_("cat"), "red", "blue")
    assert type(spec.animal) is str and spec == SceneSpec("cat", "red", "blue")


@pytest.mark.parametrize("t", [np.int64(5), np.int32(5), np.uint8(5)])
def test_add_noise_takes_numpy_int_timesteps(t):
    from sdlab.schedules import NoiseSchedule

    schedule = NoiseSchedule("linear")
    x0, noise = torch.randn(2, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))  # leaves torch's RNG alone
    assert torch.equal(schedule.add_noise(x0, noise, t=t), schedule.add_noise(x0, noise, t=5))
    assert torch.equal(schedule.snr(t), schedule.snr(5))
    assert schedule.check_timesteps(t).dtype == torch.int64


def test_schedule_stores_plain_values_and_still_refuses_floats_and_bools():
    from sdlab.schedules import NoiseSchedule

    schedule = NoiseSchedule(np.str_("cosine"), num_train_timesteps=np.int64(50))
    assert type(schedule.num_train_timesteps) is int and type(schedule.name) is str
    assert schedule.diffusers_config() == NoiseSchedule("cosine", num_train_timesteps=50).diffusers_config()
    for t, got in ((np.float64(5), "float64"), (np.float32(5), "float32"), (True, "bool"), ([5], "list")):
        with pytest.raises(TypeError, match=rf"t must be an int or an integer tensor; got {got}"):
            schedule.check_timesteps(t)
    with pytest.raises(ValueError, match="num_train_timesteps must be an int >= 2; got True"):
        NoiseSchedule("linear", num_train_timesteps=True)


def test_unet_config_stores_plain_values_from_numpy_scalars():
    import dataclasses
    import json

    from sdlab.unet import UNetConfig

    config = UNetConfig(base_channels=np.int64(32), channel_mults=[np.int32(1), np.int64(2), 2],
                        attention_levels=np.array([2]).tolist() + [np.int64(1)], num_classes=np.int64(10),
                        dropout=np.float32(0.25))
    assert config == UNetConfig(base_channels=32, channel_mults=(1, 2, 2), attention_levels=(2, 1), num_classes=10,
                                dropout=0.25)
    values = dataclasses.asdict(config)
    assert type(values["base_channels"]) is int and type(values["dropout"]) is float
    assert all(type(v) is int for v in values["channel_mults"] + values["attention_levels"])
    assert UNetConfig.from_dict(json.loads(json.dumps(values))) == config
    with pytest.raises(ValueError, match=r"attention_levels must hold level indices in \[0, 3\); got \(1.0,\)"):
        UNetConfig(attention_levels=(1.0,))
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\); got nan"):
        UNetConfig(dropout=math.nan)


def test_samplers_and_training_take_numpy_numbers():
    import json
    from dataclasses import asdict

    from sdlab.samplers import DDIMSampler, predict_original_sample
    from sdlab.schedules import NoiseSchedule
    from sdlab.train import TrainConfig

    sampler = DDIMSampler(NoiseSchedule("cosine"), eta=np.float32(0.5), steps_offset=np.int64(1))
    sampler.set_timesteps(np.int64(10))
    assert sampler.eta == 0.5 and type(sampler.eta) is float and sampler.timesteps[0] == 901
    config = TrainConfig(steps=np.int64(5), batch_size=np.int32(4), lr=np.float32(1e-3), ema_decay=np.float64(0.9))
    assert json.loads(json.dumps(asdict(config)))["steps"] == 5 and type(config.batch_size) is int
    x = torch.ones(1, 1, 2, 2)
    assert torch.equal(predict_original_sample(x, x, np.float64(1.0)), x)
    with pytest.raises(ValueError, match="lr must be a positive number; got nan"):
        TrainConfig(lr=float("nan"))
