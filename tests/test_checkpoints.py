"""Checkpoints: loading is all or nothing, malformed files say so, shipped weights are told from training state."""

import json
import os
import tempfile
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sdlab.checkpoints as checkpoints
from sdlab.checkpoints import CheckpointError, check_fits, load_checkpoint, load_weights, save_checkpoint
from sdlab.pretrained import load_pretrained, save_pretrained
from sdlab.schedules import NoiseSchedule
from sdlab.train import TrainConfig, train
from sdlab.unet import UNet, UNetConfig

torch.set_num_threads(1)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return UNet(UNetConfig.tiny(in_channels=1, out_channels=1, sample_size=8, **overrides))


def stepped_optimizer(model, seed=0, **kwargs):
    """An AdamW over ``model`` after one step, so that it has state to compare."""
    optimizer = torch.optim.AdamW(model.parameters(), **kwargs)
    torch.manual_seed(seed)
    model(torch.randn(2, 1, 8, 8), torch.tensor([3, 500])).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer


def training_state(seed):
    """A model, EMA, optimizer and generator whose contents depend on ``seed``."""
    model, ema = tiny_model(seed), tiny_model(seed + 100)
    generator = torch.Generator().manual_seed(seed)
    torch.rand(7, generator=generator)
    return {"model": model, "ema": ema, "optimizer": stepped_optimizer(model, seed), "generator": generator}


def snapshot(objects):
    """Copies of everything the objects hold, for tensor-by-tensor comparison."""
    copies = {}
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            copies[name] = {k: v.clone() for k, v in obj.state_dict().items()}
        elif isinstance(obj, torch.optim.Optimizer):
            state = obj.state_dict()
            copies[name] = ({i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                             for i, s in state["state"].items()}, json.dumps(state["param_groups"]))
        else:
            copies[name] = obj.get_state().clone()
    return copies


def assert_same(before, after):
    assert before.keys() == after.keys()
    for name in before:
        a, b = before[name], after[name]
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name
        elif isinstance(a, tuple):  # optimizer: per-parameter state, then the param groups
            assert a[1] == b[1], name
            assert a[0].keys() == b[0].keys(), name
            for i in a[0]:
                assert a[0][i].keys() == b[0][i].keys(), (name, i)
                for k in a[0][i]:
                    equal = torch.equal if isinstance(a[0][i][k], torch.Tensor) else (lambda x, y: x == y)
                    assert equal(a[0][i][k], b[0][i][k]), (name, i, k)
        else:
            assert a.keys() == b.keys(), name
            assert all(torch.equal(a[k], b[k]) for k in a), name


def rewrite_metadata(path, raw):
    """Rewrite a file's sdlab metadata to the string ``raw``, keeping its tensors."""
    save_file(load_file(path), path, metadata={"sdlab": raw})


def read_metadata(path):
    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["sdlab"])


# ---------------------------------------------------------------- resume: all or nothing


def test_resume_restores_every_part(tmp_path):
    saved = training_state(0)
    path = save_checkpoint(tmp_path / "run.safetensors", **saved, step=5, info={"losses": [1.0, 0.5]})
    target = training_state(1)
    assert load_checkpoint(path, **target) == {"step": 5, "info": {"losses": [1.0, 0.5]}}
    assert_same(snapshot(saved), snapshot(target))


def _ema_of_another_architecture(path, target):
    target["ema"] = tiny_model(7, base_channels=8)
    return path


def _optimizer_over_other_parameters(path, target):
    target["optimizer"] = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    return path


def _optimizer_with_two_groups(path, target):
    params = list(target["model"].parameters())
    target["optimizer"] = torch.optim.AdamW([{"params": params[:3]}, {"params": params[3:]}])
    return path


def _optimizer_over_parameters_in_another_order(path, target):
    target["optimizer"] = torch.optim.AdamW(list(target["model"].parameters())[::-1])
    return path


def _no_optimizer_state(path, target):
    return save_checkpoint(path, model=tiny_model(0), ema=tiny_model(1), generator=torch.Generator())


def _no_rng_state(path, target):
    model = tiny_model(0)
    return save_checkpoint(path, model=model, ema=tiny_model(1), optimizer=stepped_optimizer(model))


def _no_ema(path, target):
    model = tiny_model(0)
    return save_checkpoint(path, model=model, optimizer=stepped_optimizer(model), generator=torch.Generator())


def _rng_of_a_cuda_generator(path, target):
    meta = read_metadata(path)
    rewrite_metadata(path, json.dumps({**meta, "rng_device": "cuda:0"}))
    return path


def _rng_state_of_another_size(path, target):
    tensors = load_file(path)
    tensors["rng.state"] = tensors["rng.state"][:16].clone()
    save_file(tensors, path, metadata={"sdlab": json.dumps(read_metadata(path))})
    return path


def _scalar_state_for_an_unlisted_parameter(path, target):
    meta = read_metadata(path)
    meta["optimizer"]["scalars"]["999.extra"] = 1
    rewrite_metadata(path, json.dumps(meta))
    return path


MISFITS = [
    (_ema_of_another_architecture, r"tensors of the wrong shape for this model \(ema\)"),
    (_optimizer_over_other_parameters, r"param group 0 holds \d+ parameters in the checkpoint, 2 in this optimizer"),
    (_optimizer_with_two_groups, "holds optimizer state for 1 param groups; this optimizer has 2"),
    (_optimizer_over_parameters_in_another_order, "optimizer state tensors of the wrong shape.* vs parameter"),
    (_no_optimizer_state, "holds no optimizer state"),
    (_no_rng_state, "holds no random-number state"),
    (_no_ema, r"holds no ema\.\* tensors"),
    (_rng_of_a_cuda_generator, "state of a cuda generator; it does not fit this cpu generator"),
    (_rng_state_of_another_size, r"random-number state of \(16,\) torch.uint8; this cpu generator's is \(5056,\)"),
    (_scalar_state_for_an_unlisted_parameter, r"optimizer state for parameter ids \[999\] that no param group lists"),
]


@pytest.mark.parametrize("make_misfit, message", MISFITS, ids=[f.__name__.strip("_") for f, _ in MISFITS])
def test_a_misfit_changes_nothing(tmp_path, make_misfit, message):
    path = save_checkpoint(tmp_path / "run.safetensors", **training_state(0), step=5)
    target = training_state(1)
    path = make_misfit(path, target)
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, **target)
    assert_same(before, snapshot(target))


def test_a_refusal_by_pytorch_after_the_checks_changes_nothing(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "run.safetensors", **training_state(0), step=5)
    target = training_state(1)
    before = snapshot(target)

    def refuse(state_dict):
        raise ValueError("some check sdlab does not make")

    monkeypatch.setattr(target["optimizer"], "load_state_dict", refuse)
    with pytest.raises(CheckpointError, match="PyTorch refused .*some check sdlab does not make"):
        load_checkpoint(path, **target)
    assert_same(before, snapshot(target))  # the generator, already set, was put back


def test_check_fits_checks_without_loading(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model=tiny_model(0))
    tensors, _ = checkpoints._read(path)
    other = tiny_model(1)
    before = snapshot({"model": other})
    found = check_fits(other, tensors, "model", path)
    assert found.keys() == other.state_dict().keys()
    assert_same(before, snapshot({"model": other}))
    message = r"m.safetensors does not fit this model \(model\): 2 missing keys \['bias', 'weight'\], 144 unexpected"
    with pytest.raises(CheckpointError, match=message + r" keys \['conv_in.bias', .*\]…"):
        check_fits(torch.nn.Linear(2, 2), tensors, "model", path)


# ---------------------------------------------------------------- malformed metadata

MALFORMED = {
    "a list": ("[1, 2]", "expected an object with 'step' and 'info'; got list"),
    "a number": ("3", "expected an object with 'step' and 'info'; got int"),
    "step a string": ('{"step": "3", "info": {}}', "'step' must be an int >= 0; got '3'"),
    "step a bool": ('{"step": true, "info": {}}', "'step' must be an int >= 0; got True"),
    "step negative": ('{"step": -1, "info": {}}', "'step' must be an int >= 0; got -1"),
    "no step": ('{"info": {}}', r"'step' \(an int >= 0\) is missing"),
    "info a list": ('{"step": 0, "info": []}', "'info' must be an object; got list"),
    "no info": ('{"step": 0}', r"'info' \(an object\) is missing"),
    "optimizer a list": ('{"step": 0, "info": {}, "optimizer": [1]}', "'optimizer' must be an object"),
    "optimizer without scalars": ('{"step": 0, "info": {}, "optimizer": {"param_groups": []}}',
                                  "'optimizer' must be an object with a 'param_groups' list and a 'scalars' object"),
    "optimizer params not ints": (('{"step": 0, "info": {}, "optimizer": {"param_groups": [{"params": [0, "a"]}], '
                                   '"scalars": {}}}'),
                                  "optimizer param group 0 must be an object whose 'params' is a list of ints"),
    "optimizer group not a dict": ('{"step": 0, "info": {}, "optimizer": {"param_groups": [3], "scalars": {}}}',
                                   "optimizer param group 0 must be an object"),
    "optimizer scalar misnamed": ('{"step": 0, "info": {}, "optimizer": {"param_groups": [], "scalars": {"x": 1}}}',
                                  r"optimizer state names must read '<parameter id>.<key>'; got \['x'\]"),
    "rng_device not a device": ('{"step": 0, "info": {}, "rng_device": 5}', "'rng_device' must name a device; got 5"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_metadata_is_named_by_every_loader(tmp_path, case):
    raw, message = MALFORMED[case]
    path = save_pretrained(tmp_path / "m.safetensors", tiny_model())
    rewrite_metadata(path, raw)
    for load in (lambda: load_checkpoint(path, model=tiny_model()), lambda: load_weights(path, tiny_model()),
                 lambda: load_pretrained(path)):
        with pytest.raises(CheckpointError, match=f"m.safetensors has malformed sdlab metadata: {message}"):
            load()


def test_optimizer_tensors_without_their_metadata_are_malformed(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"model.w": torch.zeros(2), "optimizer.w": torch.zeros(2)}, path,
              metadata={"sdlab": '{"step": 0, "info": {}}'})
    with pytest.raises(CheckpointError, match="'optimizer' must be an object .*; got null"):
        load_weights(path, torch.nn.Module())


# ---------------------------------------------------------------- shipped weights or not


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_model(3)
    path = save_pretrained(tmp_path / "toy.safetensors", model, info={"steps": 9})
    loaded, info = load_pretrained(path)
    assert loaded.config == model.config and info == json.loads(json.dumps({"class": "UNet",
                                                                           "config": asdict(model.config),
                                                                           "steps": 9}))
    for p, q in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(p.half().float(), q)


def test_load_pretrained_refuses_a_training_checkpoint(tmp_path):
    path = tmp_path / "run.safetensors"
    train(tiny_model(), NoiseSchedule("cosine"), lambda n, g: torch.randn(n, 1, 8, 8, generator=g, device=g.device),
          config=TrainConfig(steps=2, batch_size=2, warmup_steps=1), checkpoint=path, progress=False)
    with pytest.raises(CheckpointError, match="run.safetensors is a training checkpoint, not shipped weights: "
                                              "load it with load_checkpoint"):
        load_pretrained(path)


@pytest.mark.parametrize("saved, message", [
    ({"ema": tiny_model(1)}, "is a training checkpoint, not shipped weights"),
    ({"info": {}}, "m.safetensors holds no model config: was it written by save_pretrained?"),
    ({"info": {"config": asdict(TrainConfig())}},
     r"m.safetensors holds no valid UNet config \(was it written by save_pretrained\?\): unknown UNetConfig keys"),
    ({"info": {"config": [16, 32]}}, "m.safetensors has a config of type list, not a UNetConfig dict"),
    ({"info": {"config": {**asdict(UNetConfig.tiny()), "base_channels": 3}}},
     "holds no valid UNet config .*base_channels must be even"),
    ({"model": torch.nn.Module(), "info": {"config": asdict(UNetConfig.tiny())}}, r"holds no model weights"),
], ids=["ema", "no config", "train config", "config a list", "invalid config", "no weights"])
def test_load_pretrained_says_what_the_file_is_not(tmp_path, saved, message):
    path = save_checkpoint(tmp_path / "m.safetensors", **{"model": tiny_model(), **saved})
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(path)


# ---------------------------------------------------------------- no stray temporary files


def test_a_successful_save_removes_what_killed_saves_left(tmp_path):
    path = tmp_path / "m.safetensors"
    fd, killed = tempfile.mkstemp(prefix=".m.safetensors.", suffix=".tmp", dir=tmp_path)  # as save_checkpoint names it
    os.close(fd)
    others = [".m.safetensors.bak.abcd1234.tmp", ".n.safetensors.abcd1234.tmp", "m.safetensors.abcd1234.tmp"]
    for name in [".m.safetensors.stale.tmp", *others]:
        (tmp_path / name).write_bytes(b"half-written")
    save_checkpoint(path, model=tiny_model(), step=3)
    assert sorted(os.listdir(tmp_path)) == sorted(["m.safetensors", *others])  # only this target's leftovers go
    assert load_checkpoint(path, model=tiny_model(1))["step"] == 3
    assert not os.path.exists(killed)
