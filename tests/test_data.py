"""Captioned silhouette scenes: shapes, determinism, captions vs labels, held-out logic, errors."""

import collections
import io
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sdlab as sd
import sdlab.data as data
import sdlab.silhouettes as silhouettes
from sdlab.data import (
    ANIMALS,
    COLOUR_RGB,
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SIZE_FRACTIONS,
    SIZES,
    SceneSpec,
    load_silhouettes,
    make_scenes,
    make_silhouette_batch,
    render_scenes,
)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch32():
    return make_scenes(512, resolution=32, held_out="include", generator=seeded(0))


def _rgb(index):
    return torch.tensor([COLOUR_RGB[COLOURS[i]] for i in index.tolist()], dtype=torch.float32) / 127.5 - 1


def _pairs(batch):
    return {(ANIMALS[a], COLOURS[c]) for a, c in zip(batch.animal.tolist(), batch.colour.tolist())}


# ----------------------------------------------------------------------------- loading


def test_load_silhouettes_split_is_last_100_of_each_class():
    train, train_labels = load_silhouettes()
    test, test_labels = load_silhouettes(split="test")
    assert train.shape == (9000, 28, 28) and train.dtype == torch.uint8 and train_labels.dtype == torch.int64
    assert test.shape == (1000, 28, 28)
    assert torch.equal(torch.bincount(train_labels), torch.full((10,), 900))
    assert torch.equal(torch.bincount(test_labels), torch.full((10,), 100))
    everything, labels = silhouettes._raw()
    cat = ANIMALS.index("cat")
    cats, cat_labels = load_silhouettes(classes=("cat",), split="test")
    assert torch.equal(cats, everything[cat * 1000 + 900: cat * 1000 + 1000]) and set(cat_labels.tolist()) == {cat}


def test_loading_imports_neither_the_package_nor_tensorflow():
    load_silhouettes(classes="dog")
    assert "tensorflow" not in sys.modules and "animal_mnist.dataset_Loader" not in sys.modules


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(silhouettes, "_PACKAGE", "animal_mnist_is_not_installed")
    with pytest.raises(ImportError, match=re.escape("pip install --no-deps animal-mnist==0.4")):
        silhouettes._data_dir()


def test_unpickler_refuses_anything_but_numpy_arrays():
    payload = pickle.dumps(collections.OrderedDict(a=1))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle collections.OrderedDict"):
        silhouettes._ArrayUnpickler(io.BytesIO(payload)).load()


# ----------------------------------------------------------------------------- scenes


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_dtypes_and_ranges(resolution):
    batch = make_scenes(40, resolution=resolution, generator=seeded(1))
    assert batch.images.shape == (40, 3, resolution, resolution) and batch.images.dtype == torch.float32
    assert batch.masks.shape == (40, 1, resolution, resolution)
    assert batch.images.min() >= -1 and batch.images.max() <= 1
    assert batch.masks.min() >= 0 and batch.masks.max() <= 1
    assert len(batch) == len(batch.captions) == 40
    for name, labels in batch.labels.items():
        assert labels.shape == (40,) and labels.dtype == torch.int64, name


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b = make_scenes(64, generator=seeded(7)), make_scenes(64, generator=seeded(7))
    c = make_scenes(64, generator=seeded(8))
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images) and a.captions != c.captions
    torch.manual_seed(3)
    d = make_scenes(8)
    torch.manual_seed(3)
    assert torch.equal(d.images, make_scenes(8).images)  # generator=None uses torch's global seed


def test_labels_depend_on_the_seed_not_on_the_resolution():
    assert make_scenes(32, resolution=32, generator=seeded(2)).captions == \
        make_scenes(32, resolution=64, generator=seeded(2)).captions


def test_captions_match_labels(batch32):
    specs = batch32.specs()
    assert [SceneSpec.from_caption(c) for c in batch32.captions] == specs
    assert [s.caption() for s in specs] == batch32.captions
    assert batch32.captions[0].endswith(f"{COLOURS[batch32.background[0]]} background")


def test_animal_pixels_have_the_animal_colour_and_the_rest_the_background(batch32):
    images, alpha = batch32.images.permute(0, 2, 3, 1), batch32.masks[:, 0]
    animal, background = _rgb(batch32.colour)[:, None, None], _rgb(batch32.background)[:, None, None]
    inside, outside = alpha == 1, alpha == 0
    assert inside.flatten(1).any(1).all() and outside.flatten(1).any(1).all()
    assert torch.allclose(images, background + alpha[..., None] * (animal - background), atol=1e-6)
    assert torch.allclose(images[inside], animal.expand_as(images)[inside])
    assert torch.allclose(images[outside], background.expand_as(images)[outside])
    assert (batch32.colour != batch32.background).all()


def _bbox(mask):
    """(x_centre, y_centre, extent) of the pixels with alpha > 0, per image."""
    cols, rows = mask.amax(1) > 0, mask.amax(2) > 0
    ar = torch.arange(mask.shape[-1])
    x0, x1 = torch.where(cols, ar, 999).amin(1), torch.where(cols, ar, -1).amax(1) + 1
    y0, y1 = torch.where(rows, ar, 999).amin(1), torch.where(rows, ar, -1).amax(1) + 1
    return (x0 + x1) / 2, (y0 + y1) / 2, torch.maximum(x1 - x0, y1 - y0)


@pytest.mark.parametrize("resolution", [32, 64])
def test_size_and_position_are_what_the_caption_says(resolution):
    batch = make_scenes(300, resolution=resolution, generator=seeded(4))
    x, y, extent = _bbox(batch.masks[:, 0])
    side = torch.tensor([round(SIZE_FRACTIONS[s] * resolution) for s in SIZES])[batch.size]
    assert ((extent - side).abs() <= 1).all()
    half, jitter = resolution / 2, resolution // 16
    left, centre, right = (batch.position == POSITIONS.index(p) for p in ("left", "centre", "right"))
    assert (x[left] < half - 2).all() and (x[right] > half + 2).all()
    assert ((x[centre] - half).abs() <= jitter / 2 + 1).all() and ((y - half).abs() <= jitter + 1).all()


def test_held_out_pairs_never_in_exclude_and_only_in_only():
    assert _pairs(make_scenes(4000, generator=seeded(5))).isdisjoint(HELD_OUT)
    assert _pairs(make_scenes(500, held_out="only", generator=seeded(5))) == set(HELD_OUT)
    both = _pairs(make_scenes(4000, held_out="include", generator=seeded(5)))
    assert set(HELD_OUT) <= both and len(both) == len(ANIMALS) * len(COLOURS)
    cats = make_scenes(50, classes="cat", held_out="only", generator=seeded(5))
    assert _pairs(cats) == {("cat", "blue")}


def test_every_animal_and_colour_still_seen_in_training():
    batch = make_scenes(2000, generator=seeded(6))
    assert set(batch.animal.tolist()) == set(range(len(ANIMALS)))
    assert set(batch.colour.tolist()) == set(batch.background.tolist()) == set(range(len(COLOURS)))


def test_class_and_colour_restriction():
    batch = make_scenes(400, classes=("dog", "cat"), colours=("red", "green", "blue"), generator=seeded(9))
    assert set(batch.animal.tolist()) == {ANIMALS.index("cat"), ANIMALS.index("dog")}
    allowed = {COLOURS.index(c) for c in ("red", "green", "blue")}
    assert set(batch.colour.tolist()) <= allowed and set(batch.background.tolist()) == allowed
    assert ("cat", "blue") not in _pairs(batch) and ("cat", "red") in _pairs(batch)


def test_split_decides_which_silhouettes_are_painted(monkeypatch):
    def bank(side):  # opaque sprites for test silhouettes, transparent ones for training silhouettes
        is_test = (torch.arange(10000) % 1000 >= 900).to(torch.uint8) * 255
        return is_test[:, None, None].expand(10000, side, side)

    monkeypatch.setattr(data, "_sprite_bank", bank)
    assert make_scenes(200, split="train", generator=seeded(0)).masks.sum() == 0
    assert (make_scenes(200, split="test", generator=seeded(0)).masks.flatten(1).sum(1) > 0).all()


def test_render_scenes_renders_the_given_specs():
    specs = [SceneSpec("cat", "blue", "yellow", "small", "left"), SceneSpec("zebra", "white", "black")]
    batch = render_scenes(specs, resolution=64, generator=seeded(0), device="cpu")
    assert batch.specs() == specs and batch.images.shape == (2, 3, 64, 64)
    assert batch.captions[0] == "a small blue cat on the left, yellow background"
    assert specs[1].caption() == "a large white zebra in the centre, black background"
    assert specs[0].caption(style="short") == "a blue cat"
    assert batch.to("cpu").specs() == specs
    assert render_scenes(specs[0], generator=seeded(0)).captions == [specs[0].caption()]


# ----------------------------------------------------------------------------- silhouettes


@pytest.mark.parametrize("kind", ["grey", "mask"])
def test_silhouette_batch(kind):
    images, labels = make_silhouette_batch(300, classes=("cat", "dog"), kind=kind, generator=seeded(1))
    again, _ = make_silhouette_batch(300, classes=("cat", "dog"), kind=kind, generator=seeded(1))
    assert images.shape == (300, 1, 32, 32) and images.dtype == torch.float32 and torch.equal(images, again)
    assert images.min() == -1 and images.max() <= 1 and images[:, :, 0, 0].eq(-1).float().mean() > 0.8
    assert set(labels.tolist()) == {ANIMALS.index("cat"), ANIMALS.index("dog")}
    if kind == "mask":
        assert images.ge(0).float().mean() > 0.2


def test_silhouette_batch_test_split_uses_test_frames():
    images, labels = make_silhouette_batch(20, classes="cat", resolution=32, split="test", generator=seeded(2))
    frames = silhouettes._frame_bank(32, "grey").float() / 127.5 - 1
    cat = ANIMALS.index("cat") * 1000
    match = (images[:, None, 0] == frames[None, cat: cat + 1000]).flatten(2).all(2)  # (20, 1000)
    assert match.any(1).all() and not match[:, :900].any()


# ----------------------------------------------------------------------------- speed and errors


def test_data_benchmark_script_reports_a_rate():
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_data.py"
    out = subprocess.run([sys.executable, str(script), "--n", "2000", "--batch-size", "500"], capture_output=True,
                         text=True, check=True).stdout
    rate = float(out.split()[0])
    assert rate > 1000 and "scenes/s at 32 px, 1 thread(s)" in out  # the target is >= 5000/s; loose for a busy CI


@pytest.mark.parametrize("call, match", [
    (lambda: make_scenes(4, classes=("cat", "lion")), r"classes must be a non-empty selection of \('bear'"),
    (lambda: make_scenes(4, classes=()), "classes must be a non-empty selection"),
    (lambda: make_scenes(4, colours=("red", "teal")), r"colours must be a non-empty selection of \('red'"),
    (lambda: make_scenes(4, colours="red"), "colours needs at least two colours"),
    (lambda: make_scenes(4, resolution=48), r"resolution must be one of \(32, 64\); got 48"),
    (lambda: make_scenes(4, resolution=32.0), r"resolution must be one of \(32, 64\); got 32.0"),
    (lambda: make_scenes(0), "n must be an int >= 1; got 0"),
    (lambda: make_scenes(2.5), "n must be an int >= 1; got 2.5"),
    (lambda: make_scenes(4, split="val"), r"split must be one of \('train', 'test'\); got 'val'"),
    (lambda: make_scenes(4, held_out="never"), "held_out must be one of"),
    (lambda: make_scenes(4, classes="cat", colours=("red", "green"), held_out="only"),
     r"held_out='only' .* leaves no \(animal, colour\) combination"),
    (lambda: SceneSpec("cat", "red", "red"), "colour and background must differ; both are 'red'"),
    (lambda: SceneSpec("cat", "red", "blue", size="huge"), r"size must be one of \('small', 'large'\); got 'huge'"),
    (lambda: SceneSpec("cat", "red", "blue", position="top"), "position must be one of"),
    (lambda: SceneSpec("lion", "red", "blue"), "animal must be one of"),
    (lambda: SceneSpec("cat", "red", "blue").caption(style="long"), "style must be one of"),
    (lambda: SceneSpec.from_caption("a red cat"), "does not follow"),
    (lambda: render_scenes([]), "specs must be a non-empty sequence of SceneSpec"),
    (lambda: render_scenes(["a red cat"]), "specs must be a non-empty sequence of SceneSpec"),
    (lambda: make_silhouette_batch(4, kind="rgb"), "kind must be one of"),
    (lambda: make_silhouette_batch(4, classes="unicorn"), "classes must be a non-empty selection"),
    (lambda: load_silhouettes(split="all"), "split must be one of"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_detail_shading_keeps_the_inner_detail_of_the_silhouette():
    flat = make_scenes(64, resolution=64, generator=torch.Generator().manual_seed(3))
    detail = make_scenes(64, resolution=64, shading="detail", generator=torch.Generator().manual_seed(3))
    assert flat.captions == detail.captions and torch.equal(flat.masks, detail.masks)  # same scenes, same shapes
    background = flat.masks == 0
    assert torch.equal(flat.images * background, detail.images * background)  # only the animal changes
    inside = (flat.masks > 0.99).expand_as(flat.images)
    changed = (flat.images - detail.images).abs()[inside]
    assert changed.max() > 0.3 and changed.median() < 0.2  # darker detail here and there, the colour kept
    zebra = make_scenes(1, resolution=64, classes="zebra", colours=("white", "black"), shading="detail",
                        generator=torch.Generator().manual_seed(0))
    body = zebra.images[0][(zebra.masks[0] > 0.99).expand(3, -1, -1)]
    assert body.std() > 0.1  # stripes: the body is not one flat colour
    with pytest.raises(ValueError, match="shading must be one of \\('flat', 'detail'\\); got 'grey'"):
        make_scenes(2, shading="grey")


def test_clear_shapes_are_a_subset_of_each_split_and_scenes_paint_only_them():
    for split, k in (("train", 200), ("test", 20)):
        clear, every = sd.data.silhouette_indices(split, "clear"), sd.data.silhouette_indices(split, "all")
        assert clear.shape == (len(sd.data.ANIMALS), k)
        assert all(set(c.tolist()) <= set(e.tolist()) for c, e in zip(clear, every))
    # Fingerprint of a painted silhouette: the sum of its alpha (placement does not change it).
    bank = sd.silhouettes._sprite_bank(round(64 * 11 / 16)).flatten(1).sum(1)

    def fingerprints(shapes):
        scenes = make_scenes(200, resolution=64, shapes=shapes, split="test",
                             generator=torch.Generator().manual_seed(0))
        large = scenes.size == sd.data.SIZES.index("large")
        sums = (scenes.masks[large] * 255).round().flatten(1).sum(1)
        return sums, scenes.animal[large]

    clear = sd.data.silhouette_indices("test", "clear")
    sums, animals = fingerprints("clear")
    assert all((bank[clear[a]] == s).any() for s, a in zip(sums.tolist(), animals.tolist()))
    sums, animals = fingerprints("all")
    assert not all((bank[clear[a]] == s).any() for s, a in zip(sums.tolist(), animals.tolist()))
    with pytest.raises(ValueError, match="shapes"):
        make_scenes(2, shapes="pretty")


def test_the_second_half_scenes_are_64_pixels_with_detail_and_clear_shapes():
    assert dict(sd.data.SCENES) == {"resolution": 64, "shading": "detail", "shapes": "clear"}
    assert sd.clip.SCENES is sd.data.SCENES


def test_the_five_attributes_have_one_home_and_every_part_reads_it():
    assert tuple(sd.data.ATTRIBUTES) == ("animal", "colour", "background", "size", "position")
    assert sd.data.ATTRIBUTES["background"] == sd.data.COLOURS and sd.data.ATTRIBUTES["animal"] == sd.data.ANIMALS
    assert sd.judge.ATTRIBUTES is sd.data.ATTRIBUTES and sd.clip.ATTRIBUTES == tuple(sd.data.ATTRIBUTES)
    scenes = sd.data.make_scenes(2, generator=torch.Generator().manual_seed(0))
    assert tuple(scenes.labels) == tuple(sd.data.ATTRIBUTES)
    with pytest.raises(TypeError):
        sd.data.ATTRIBUTES["animal"] = ("unicorn",)  # read-only: one list for every part of the course
