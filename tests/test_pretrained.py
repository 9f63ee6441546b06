"""The registry of shipped weights: one loader for every model, and plain errors for files it cannot load."""

import json

import pytest
import torch

import sdlab as sd
from sdlab import pretrained
from sdlab.checkpoints import CheckpointError, save_checkpoint
from sdlab.pretrained import REGISTRY, Shipped, load_pretrained, save_pretrained


def tiny_unet():
    with sd.random.seeded_global_rng(0):
        return sd.UNet(sd.UNetConfig.tiny(in_channels=1, out_channels=1, sample_size=8))


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(KeyError, match=r"no shipped weights called 'scenes64'; the course ships \['scenes32'"):
        load_pretrained("scenes64")
    assert pretrained.names() == list(REGISTRY)


def test_save_and_load_a_unet_file_round_trip(tmp_path):
    model = tiny_unet()
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    path = save_pretrained(tmp_path / "mine.safetensors", model, info={"steps": 3}, dtype=torch.float32)
    loaded, info = load_pretrained(path, device="cpu")
    x = torch.randn(2, 1, 8, 8)
    assert info["steps"] == 3 and info["class"] == "UNet"
    torch.testing.assert_close(loaded(x, 5), model.eval()(x, 5))


def test_save_and_load_a_classifier_file_round_trip(tmp_path):
    model = sd.evaluate.CatDogClassifier(width=8, feature_dim=4).eval()
    path = save_pretrained(tmp_path / "judge.safetensors", model, dtype=torch.float32)
    loaded, info = load_pretrained(str(path))
    assert isinstance(loaded, sd.evaluate.CatDogClassifier) and info["config"]["width"] == 8


def test_save_pretrained_refuses_library_models(tmp_path):
    with pytest.raises(TypeError, match="library models: use their own save_pretrained"):
        save_pretrained(tmp_path / "x.safetensors", torch.nn.Linear(2, 2))


def test_a_training_checkpoint_is_named_as_such(tmp_path):
    model = tiny_unet()
    path = save_checkpoint(tmp_path / "run.safetensors", model=model, ema=model,
                           optimizer=torch.optim.AdamW(model.parameters()), generator=torch.Generator(),
                           info={"config": {"steps": 10, "batch_size": 4}, "losses": []})
    with pytest.raises(CheckpointError, match="is a training checkpoint, not shipped weights: load it with"):
        load_pretrained(path)


@pytest.mark.parametrize("info", [{"class": "Transformer", "config": {}}, {"class": "UNet", "config": [1, 2]},
                                  {"class": "UNet"}, {"class": "CatDogClassifier", "config": {"depth": 3}}])
def test_wrong_or_missing_config_says_so(tmp_path, info):
    path = save_checkpoint(tmp_path / "odd.safetensors", model=tiny_unet(), info=info)
    with pytest.raises(CheckpointError, match="odd.safetensors"):
        load_pretrained(path)


def test_a_missing_registry_file_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="train them with: python scripts/train_weights.py scenes32"):
        load_pretrained("scenes32")


def test_library_models_load_from_their_own_save_pretrained_folder(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    with sd.random.seeded_global_rng(0):
        vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                            up_block_types=("UpDecoderBlock2D",), latent_channels=2, norm_num_groups=4,
                            sample_size=8)
    vae.save_pretrained(tmp_path / "tiny_vae")
    (tmp_path / "tiny_vae" / pretrained.RECORD_FILE).write_text(json.dumps({"steps": 7}))
    entry = Shipped("tiny_vae", 5, "a test autoencoder", "diffusers.AutoencoderKL", recipe=None, format="folder")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(REGISTRY, "tiny_vae", entry)
    loaded, info = load_pretrained("tiny_vae")
    x = torch.randn(1, 3, 8, 8)
    assert info == {"steps": 7} and isinstance(loaded, AutoencoderKL) and not loaded.training
    torch.testing.assert_close(loaded.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean)
    monkeypatch.setitem(REGISTRY, "gone", Shipped("gone", 5, "", "diffusers.AutoencoderKL", None, "folder"))
    with pytest.raises(CheckpointError, match="no diffusers.AutoencoderKL folder at .*gone"):
        load_pretrained("gone")


def test_the_old_names_still_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="use sd.pretrained.load_pretrained"):
        model, info = sd.checkpoints.load_pretrained("scenes32")
    assert isinstance(model, sd.UNet) and info["steps"] == REGISTRY["scenes32"].recipe.steps


def test_recipes_give_their_training_settings():
    for name in ("scenes32", "miniclip"):
        recipe = REGISTRY[name].recipe
        config = recipe.train_config(steps=7)
        assert config.steps == 7 and config.batch_size == recipe.batch_size and config.lr == recipe.lr
        assert config.seed == recipe.seed and config.warmup_steps == recipe.warmup_steps
    assert REGISTRY["miniclip"].recipe.train_config().ema_decay == 0.0  # its final weights ship


def test_replace_folder_swaps_a_whole_folder_and_keeps_the_old_one_when_writing_fails(tmp_path):
    import pytest

    from sdlab.pretrained import replace_folder

    target = tmp_path / "model"
    replace_folder(target, lambda folder: (folder / "a.txt").write_text("one"))
    replace_folder(target, lambda folder: (folder / "b.txt").write_text("two"))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # nothing of the first left over

    def fails(folder):
        (folder / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_folder(target, fails)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # the old folder is whole
    replace_folder(target, lambda folder: (folder / "c.txt").write_text("three"))  # a stale .tmp is no obstacle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_weights_dir_moves_every_registry_path_and_restores_it_also_on_error(tmp_path):
    from sdlab.pretrained import weights_dir

    shipped = {name: entry.path for name, entry in REGISTRY.items()}
    with weights_dir(tmp_path / "fresh") as folder:
        assert folder == (tmp_path / "fresh").resolve()
        assert {name: entry.path for name, entry in REGISTRY.items()} == {
            name: folder / path.name for name, path in shipped.items()}
        save_pretrained(REGISTRY["scenes32"].path, tiny_unet(), info={"steps": 2})
        model, info = load_pretrained("scenes32")  # the file just written there, not the shipped one
        assert info["steps"] == 2 and model.config == tiny_unet().config
        with weights_dir(tmp_path / "inner"):  # blocks nest
            assert REGISTRY["judge"].path.parent == (tmp_path / "inner").resolve()
        assert REGISTRY["judge"].path.parent == folder
    assert {name: entry.path for name, entry in REGISTRY.items()} == shipped
    with pytest.raises(CheckpointError, match="no weights for 'judge'"), weights_dir(tmp_path / "empty"):
        load_pretrained("judge")
    assert REGISTRY["judge"].path == shipped["judge"]
    assert load_pretrained("scenes32")[1]["steps"] == REGISTRY["scenes32"].recipe.steps  # the shipped file again


def test_phases_lists_a_two_phase_record_first_phase_first():
    first, second = {"steps": 3600, "seconds": 4151.5}, {"steps": 1200, "seconds": 3927.9}
    assert sd.pretrained.phases({**second, "start": first}) == [first, {**second, "start": first}]
    assert sd.pretrained.phases(first) == [first]
    with pytest.raises(TypeError, match="record must be a training record"):
        sd.pretrained.phases(None)
