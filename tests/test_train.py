"""The training loop: learning, determinism, exact resume, and safe checkpoints."""

import os

import pytest
import torch

import sdlab.checkpoints as checkpoints
from sdlab.checkpoints import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from sdlab.schedules import NoiseSchedule
from sdlab.train import TrainConfig, diffusion_loss, per_timestep_loss, train
from sdlab.unet import UNet, UNetConfig

torch.set_num_threads(2)
SCHEDULE = NoiseSchedule("cosine")


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return UNet(UNetConfig.tiny(in_channels=1, out_channels=1, sample_size=8, **overrides))


def stripes(batch_size, generator):
    """A toy data set: vertical or horizontal stripes, 8x8, values ±1."""
    horizontal = torch.rand(batch_size, generator=generator, device=generator.device) < 0.5
    pattern = (torch.arange(8) % 2 * 2 - 1.0).to(generator.device)
    rows = pattern.view(1, 1, 8, 1).expand(batch_size, 1, 8, 8)
    cols = pattern.view(1, 1, 1, 8).expand(batch_size, 1, 8, 8)
    return torch.where(horizontal.view(-1, 1, 1, 1), rows, cols).contiguous()


def test_untrained_model_has_loss_one():
    # The output convolution starts at zero, so ε̂ = 0 and the loss is E[ε²] = 1.
    g = torch.Generator().manual_seed(0)
    loss = diffusion_loss(tiny_model(), SCHEDULE, stripes(256, g), generator=g)
    assert loss.shape == () and abs(loss.item() - 1) < 0.05


def test_training_lowers_the_loss():
    result = train(tiny_model(), SCHEDULE, stripes, config=TrainConfig(steps=60, batch_size=16, warmup_steps=5),
                   progress=False)
    assert len(result.losses) == 60
    assert sum(result.losses[-10:]) / 10 < 0.6 * sum(result.losses[:5]) / 5
    assert result.images_per_second > 0


def test_same_seed_same_run():
    config = TrainConfig(steps=8, batch_size=8, warmup_steps=2)
    a = train(tiny_model(), SCHEDULE, stripes, config=config, progress=False)
    b = train(tiny_model(), SCHEDULE, stripes, config=config, progress=False)
    assert a.losses == b.losses
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_resume_continues_identically(tmp_path):
    config = TrainConfig(steps=12, batch_size=8, warmup_steps=3, checkpoint_every=6)
    straight = train(tiny_model(), SCHEDULE, stripes, config=config, progress=False)

    path = tmp_path / "run.safetensors"
    calls = 0

    def interrupted(batch_size, generator):  # the run dies while fetching step 8's batch
        nonlocal calls
        calls += 1
        if calls == 8:
            raise KeyboardInterrupt
        return stripes(batch_size, generator)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), SCHEDULE, interrupted, config=config, checkpoint=path, progress=False)
    resumed = train(tiny_model(seed=99), SCHEDULE, stripes, config=config, checkpoint=path, resume=True, progress=False)

    assert resumed.losses == straight.losses
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(resumed.ema.parameters(), straight.ema.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_round_trip_and_weights(tmp_path):
    model, other = tiny_model(0), tiny_model(1)
    path = save_checkpoint(tmp_path / "m.safetensors", model=model, ema=tiny_model(3), step=7, info={"note": "hi"})
    state = load_checkpoint(path, model=other)
    assert state == {"step": 7, "info": {"note": "hi"}}
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    assert load_weights(path, tiny_model(2)) is not None


def test_mismatched_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model=tiny_model())
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_weights(path, UNet(UNetConfig.tiny(in_channels=3, out_channels=1, sample_size=8)))
    with pytest.raises(CheckpointError, match="does not fit this model .*unexpected keys"):
        load_weights(path, torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        model = tiny_model()
        load_checkpoint(path, model=model, optimizer=torch.optim.AdamW(model.parameters()))


def test_corrupt_or_missing_checkpoint_gives_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model=tiny_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(path, tiny_model())
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_weights(tmp_path / "absent.safetensors", tiny_model())


def test_failed_save_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", model=tiny_model(0), step=1)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=tiny_model(1), step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"], "no temporary file is left behind"


def test_per_timestep_loss_shapes():
    centres, losses = per_timestep_loss(tiny_model(), SCHEDULE, stripes, bins=4, batch_size=8)
    assert centres.tolist() == [125.0, 375.0, 625.0, 875.0] and losses.shape == (4,)
    with pytest.raises(ValueError, match="bins must be an int in \\[1, 1000\\]; got 0"):
        per_timestep_loss(tiny_model(), SCHEDULE, stripes, bins=0)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="steps must be a positive int; got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="ema_decay must be a number in \\[0, 1\\); got 1.5"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match="precision must be one of \\('auto', 'fp32', 'bf16'\\); got 'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision='bf16' needs a CUDA device"):
        train(tiny_model(), SCHEDULE, stripes, config=TrainConfig(steps=1, precision="bf16"), progress=False)


def test_ema_warms_up_instead_of_clinging_to_the_untrained_start():
    # With a plain decay of 0.999, 30 steps would leave the EMA 97 % at its initial weights.
    start = tiny_model()
    result = train(tiny_model(), SCHEDULE, stripes, config=TrainConfig(steps=30, batch_size=8, warmup_steps=2),
                   progress=False)
    moved = sum((e - s).abs().sum() for e, s in zip(result.ema.parameters(), start.parameters()))
    travelled = sum((m - s).abs().sum() for m, s in zip(result.model.parameters(), start.parameters()))
    assert moved > 0.5 * travelled


# --- fit: the same loop for any model ---------------------------------------------------------------

def _line_data(batch_size, generator):
    x = torch.randn(batch_size, 1, generator=generator, device=generator.device)
    return x, 2 * x + 1


def _mse(model, batch, generator):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def test_fit_trains_any_model_with_its_own_loss():
    from sdlab.train import fit

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    result = fit(model, _mse, _line_data, config=TrainConfig(steps=300, batch_size=32, lr=0.05, warmup_steps=10,
                                                              ema_decay=0.0), progress=False)
    assert abs(result.model.weight.item() - 2) < 0.05 and abs(result.model.bias.item() - 1) < 0.05
    assert len(result.losses) == 300 and result.losses[-1] < 1e-3 and not result.model.training


def test_fit_leaves_frozen_parameters_alone_and_refuses_a_frozen_model():
    from sdlab.train import fit

    model = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)
    frozen = model[0].weight.clone()
    fit(model, _mse, _line_data, config=TrainConfig(steps=5, batch_size=8, warmup_steps=1), progress=False)
    assert torch.equal(model[0].weight, frozen)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model.requires_grad_(False), _mse, _line_data, config=TrainConfig(steps=1, batch_size=2), progress=False)


def test_train_refuses_something_that_is_not_a_schedule():
    with pytest.raises(TypeError, match="schedule must be a sdlab NoiseSchedule; got str"):
        train(tiny_model(), "cosine", stripes, config=TrainConfig(steps=1, batch_size=2), progress=False)


class _Constant(torch.nn.Module):
    """A 'network' that always predicts zero: its loss is the mean square of the target."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return torch.zeros_like(x) + 0 * self.unused


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_diffusion_loss_targets_and_min_snr_weights(prediction_type, snr_gamma):
    g = torch.Generator().manual_seed(3)
    x0 = stripes(6, g)
    t = torch.tensor([0, 100, 300, 500, 800, 999])
    loss = diffusion_loss(_Constant(), SCHEDULE, x0, t=t, generator=torch.Generator().manual_seed(4),
                          prediction_type=prediction_type, snr_gamma=snr_gamma)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    target = noise if prediction_type == "epsilon" else SCHEDULE.velocity(x0, noise, t)
    per_image = target.pow(2).mean(dim=(1, 2, 3))
    snr = SCHEDULE.snr(t)
    if snr_gamma is None:
        weight = torch.ones(6)
    else:  # diffusers' train_text_to_image.py: min(SNR, γ) / SNR for ε, / (SNR + 1) for v
        weight = torch.minimum(snr, torch.tensor(snr_gamma)) / (snr if prediction_type == "epsilon" else snr + 1)
    assert loss.item() == pytest.approx((weight * per_image).mean().item(), rel=1e-5)
    if snr_gamma is not None:  # the nearly clean steps weigh less than the noisy ones
        assert weight[0] < 0.01 and weight[-1] == pytest.approx(1.0 if prediction_type == "epsilon" else
                                                                 (snr[-1] / (snr[-1] + 1)).item(), rel=1e-4)


def test_diffusion_loss_refuses_unknown_prediction_types():
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_loss(_Constant(), SCHEDULE, torch.zeros(2, 1, 8, 8), prediction_type="sample")
    with pytest.raises(ValueError, match="snr_gamma"):
        diffusion_loss(_Constant(), SCHEDULE, torch.zeros(2, 1, 8, 8), snr_gamma=0)
