"""sdlab.plotting: image grids, schedule curves and the noising grid."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import sdlab.plotting as plotting  # noqa: E402
from sdlab.images import to_numpy_image  # noqa: E402
from sdlab.plotting import plot_noising_grid, plot_schedules, show_images  # noqa: E402
from sdlab.schedules import SCHEDULE_NAMES, NoiseSchedule  # noqa: E402

pytestmark = pytest.mark.usefixtures("close_figures")  # tests/conftest.py


@pytest.fixture(scope="module")
def schedules():
    return [NoiseSchedule(name) for name in SCHEDULE_NAMES]


@pytest.fixture(scope="module")
def x0():
    return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def titles_of(fig):
    return [ax.get_title() for ax in fig.axes]


# ---- show_images -----------------------------------------------------------------------------------------------


def test_show_images_batch_tensor(x0):
    batch = torch.stack([x0, -x0, x0 * 0.5])
    fig = show_images(batch, titles=["a", "b", "c"], suptitle="three")
    assert len(fig.axes) == 3
    assert titles_of(fig) == ["a", "b", "c"]
    assert fig._suptitle.get_text() == "three"
    for ax, image in zip(fig.axes, batch):
        assert not ax.axison
        assert np.allclose(ax.images[0].get_array(), to_numpy_image(image))
        assert ax.images[0].get_clim() == (0.0, 1.0)


def test_show_images_default_columns_fill_a_book_page(x0):
    fig = show_images(x0.expand(7, -1, -1, -1), size=1.3)
    assert len(fig.axes) == 7  # the partial second row leaves no empty frames
    assert fig.get_size_inches()[0] == pytest.approx(5 * 1.3)  # 5 columns of 1.3 inches fill the 6.9 of a page
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 2


def test_show_images_ncols_and_single_image(x0):
    fig = show_images(x0.expand(7, -1, -1, -1), ncols=3)
    assert len(fig.axes) == 7 and fig.get_size_inches()[0] == pytest.approx(3 * 1.35)
    assert len(show_images(x0).axes) == 1  # one (C, H, W) tensor
    assert len(show_images([x0], ncols=10).axes) == 1


def test_show_images_mixed_list_and_grayscale(x0):
    pil = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    array = np.linspace(0, 1, 64).reshape(8, 8)
    fig = show_images([x0, pil, array, x0[:1]], cmap="viridis")
    assert len(fig.axes) == 4
    assert fig.axes[2].images[0].get_cmap().name == "viridis"
    assert fig.axes[3].images[0].get_array().shape == (8, 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(titles=["a", "b"]), ValueError, r"titles has 2 entries but there are 3 images"),
        (dict(titles="abc"), TypeError, r"titles must be a list of strings, one per image; got str"),
        (dict(ncols=0), ValueError, r"ncols must be a positive int or None; got 0"),
        (dict(ncols=2.5), ValueError, r"ncols must be a positive int or None; got 2.5"),
        (dict(size=0), ValueError, r"size must be a number of inches in \(0, 6.9\]; got 0"),
        (dict(size=20), ValueError, r"size must be a number of inches"),
    ],
)
def test_show_images_rejects_bad_options(x0, kwargs, error, match):
    with pytest.raises(error, match=match):
        show_images([x0, x0, x0], **kwargs)


@pytest.mark.parametrize(
    "images, error, match",
    [
        ([], ValueError, r"images is empty"),
        (torch.zeros(2, 2, 3, 4, 4), ValueError, r"images must be a \(B, C, H, W\) or \(C, H, W\) tensor; got shape"),
        (np.zeros((2, 4, 4, 3)), TypeError, r"images must be a \(B, C, H, W\) tensor or a list .*got ndarray"),
        ([torch.zeros(3, 4, 4), torch.zeros(4, 4, 4)], ValueError, r"images\[1\] must have shape \(C, H, W\)"),
        ([torch.zeros(3, 4, 4), "cat.png"], TypeError, r"images\[1\] must be a PIL.Image.Image or a numpy array"),
    ],
)
def test_show_images_rejects_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        show_images(images)


# ---- plot_schedules --------------------------------------------------------------------------------------------


def test_plot_schedules_two_panels_one_line_per_schedule(schedules):
    fig = plot_schedules(schedules, title="schedules")
    assert len(fig.axes) == 2
    ax_ab, ax_snr = fig.axes
    assert [line.get_label() for line in ax_ab.lines] == list(SCHEDULE_NAMES)
    assert [line.get_label() for line in ax_snr.lines] == [*SCHEDULE_NAMES, "signal = noise"]
    for schedule, line_ab, line_snr in zip(schedules, ax_ab.lines, ax_snr.lines):
        assert np.allclose(line_ab.get_ydata(), schedule.alphas_cumprod.numpy())
        assert np.allclose(line_snr.get_ydata(), schedule.snr_db().numpy())
        assert np.array_equal(line_ab.get_xdata(), np.arange(1000))
    zero = ax_snr.lines[-1]
    assert np.all(np.asarray(zero.get_ydata()) == 0.0)
    legend = [t.get_text() for t in ax_snr.get_legend().get_texts()]
    assert legend == [*SCHEDULE_NAMES, "signal = noise"]
    assert fig.get_size_inches()[0] == pytest.approx(plotting.BOOK_WIDTH)


def test_plot_schedules_one_schedule_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert plot_schedules(NoiseSchedule("cosine"), ax=axes) is fig
    assert [len(ax.lines) for ax in axes] == [1, 2]


@pytest.mark.parametrize(
    "schedules, kwargs, match",
    [
        ("linear", {}, r"schedules must be a NoiseSchedule or a non-empty list of them; got 'linear'"),
        ([], {}, r"non-empty list of them; got \[\]"),
        ([NoiseSchedule("linear"), "cosine"], {}, r"got a list holding str"),
        ([NoiseSchedule("linear")], {"ax": "left"}, r"ax must be None or two matplotlib Axes"),
    ],
)
def test_plot_schedules_rejects(schedules, kwargs, match):
    with pytest.raises(TypeError, match=match):
        plot_schedules(schedules, **kwargs)


# ---- plot_noising_grid -----------------------------------------------------------------------------------------


def test_noising_grid_layout_and_labels(x0, schedules):
    steps = [0, 10, 500, 999]
    fig = plot_noising_grid(x0, schedules, steps, generator=torch.Generator().manual_seed(0))
    assert len(fig.axes) == 12
    assert titles_of(fig)[:4] == ["t=0", "t=10", "t=500", "t=999"]
    assert titles_of(fig)[4:] == [""] * 8
    assert [fig.axes[4 * r].get_ylabel() for r in range(3)] == list(SCHEDULE_NAMES)
    assert fig.get_size_inches()[0] <= plotting.BOOK_WIDTH


def test_noising_grid_uses_one_noise_for_every_cell(x0, schedules):
    steps = torch.tensor([0, 300, 999])
    fig = plot_noising_grid(x0[None], schedules, steps, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    for r, schedule in enumerate(schedules):
        for c, t in enumerate(steps.tolist()):
            expected = to_numpy_image(schedule.add_noise(x0, eps, t))
            assert np.allclose(fig.axes[3 * r + c].images[0].get_array(), expected, atol=1e-6)


def test_noising_grid_is_reproducible(x0):
    def cells(seed):
        fig = plot_noising_grid(x0, NoiseSchedule("linear"), [500], generator=torch.Generator().manual_seed(seed))
        return fig.axes[0].images[0].get_array()

    assert np.array_equal(cells(0), cells(0)) and not np.array_equal(cells(0), cells(1))


@pytest.mark.parametrize(
    "x, steps, error, match",
    [
        (np.zeros((3, 4, 4)), [0], TypeError, r"x0 must be a torch.Tensor \(C, H, W\)"),
        (torch.zeros(2, 3, 4, 4), [0], ValueError, r"x0 must be one float image .*got shape \(2, 3, 4, 4\)"),
        (torch.zeros(3, 4, 4, dtype=torch.long), [0], ValueError, r"dtype torch.int64"),
        (None, [0, 1000], ValueError, r"timesteps must lie in \[0, 1000\) for this schedule; got 1000"),
        (None, [], ValueError, r"timesteps must be a non-empty 1-D sequence of ints; got \[\]"),
        (None, [0.5], TypeError, r"timesteps must hold integer timesteps"),
    ],
)
def test_noising_grid_rejects(x0, x, steps, error, match):
    with pytest.raises(error, match=match):
        plot_noising_grid(x0 if x is None else x, NoiseSchedule("linear"), steps)


# ---- shown once in a notebook ----------------------------------------------------------------------------------


def test_cell_figure_leaves_pyplot_only_when_displayed_inline(x0, monkeypatch):
    fig = show_images([x0])
    assert isinstance(fig, plotting.CellFigure) and fig.number in plt.get_fignums()
    assert fig._repr_mimebundle_() is None  # Agg: displaying changes nothing
    assert fig.number in plt.get_fignums()
    monkeypatch.setattr(plotting.matplotlib, "get_backend", lambda: "module://matplotlib_inline.backend_inline")
    fig._repr_mimebundle_()
    assert fig.number not in plt.get_fignums()  # the inline backend will not show it a second time
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # still usable
    assert buffer.getvalue().startswith(b"\x89PNG")


# ---- numpy scalars ---------------------------------------------------------------------------------------------


def test_plotting_options_take_numpy_scalars(x0):
    fig = show_images(x0.expand(7, -1, -1, -1), ncols=np.int64(3), size=np.float32(2.0))
    assert len(fig.axes) == 7 and tuple(fig.get_size_inches())[0] == pytest.approx(6.0)
    assert np.array_equal(plotting.moving_average([1.0, 2.0, 3.0], np.int32(2)), [1.0, 1.5, 2.5])
    batch = x0.expand(3, -1, -1, -1)
    fig = plotting.plot_noise_guesses(batch, batch, batch, batch, np.array([1, 2, 3]), noise_scale=np.float32(2))
    assert len(fig.axes) == 12


@pytest.mark.parametrize("call, match", [
    (lambda x0: show_images([x0], size=float("nan")), r"size must be a number of inches in \(0, 6.9\]; got nan"),
    (lambda x0: show_images([x0], ncols=np.float64(2)), r"ncols must be a positive int or None; got np.float64\(2.0\)"),
    (lambda x0: plotting.moving_average([1.0], True), "window must be a positive int; got True"),
    (lambda x0: plotting.plot_noise_guesses(*[x0[None]] * 4, [1], noise_scale=float("inf")),
     "noise_scale must be a positive number; got inf"),
])
def test_plotting_refuses_nan_bools_and_floats_for_ints(x0, call, match):
    with pytest.raises(ValueError, match=match):
        call(x0)


def test_show_image_rows_names_each_row_and_keeps_every_image(x0):
    batch = torch.stack([x0, -x0, x0 * 0.5])
    fig = plotting.show_image_rows({"original": batch, "restored": batch[:2], "error": batch[:, :1]})
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["original", "restored", "error"]
    assert len(axes[1, 2].images) == 0 and not axes[1, 2].axison  # the shorter row leaves a blank, not a frame
    np.testing.assert_allclose(axes[0, 1].images[0].get_array(), to_numpy_image(-x0))
    assert len(axes[2, 0].images[0].get_array().shape) == 2  # one channel: drawn through the colour map
    with pytest.raises(ValueError, match="non-empty dict"):
        plotting.show_image_rows({})
    with pytest.raises(ValueError, match="non-empty dict"):
        plotting.show_image_rows([batch])


def test_captions_wrap_to_the_width_of_their_picture():
    images = torch.zeros(2, 3, 8, 8)
    caption = "a large black elephant on the right, yellow background"
    narrow = plotting.show_captioned_images(images, [caption] * 2, size=1.6)
    wide = plotting.show_captioned_images(images, [caption] * 2, size=3.2)
    longest = [max(len(line) for line in fig.axes[0].get_xlabel().splitlines()) for fig in (narrow, wide)]
    assert longest[0] <= 20 < longest[1] <= 41
    with pytest.raises(ValueError, match="size must be a number of inches"):
        plotting.show_captioned_images(images, [caption] * 2, size="big")


def test_show_images_wraps_titles_to_the_width_of_their_image(x0):
    fig = show_images(x0.expand(8, -1, -1, -1), titles=["DDIM sampler (ours)"] * 8, ncols=8, size=1.2)
    assert fig.get_size_inches()[0] == pytest.approx(plotting.BOOK_WIDTH)  # 8 x 1.2 in, fitted to the page
    assert fig.axes[0].get_title() == "DDIM\nsampler\n(ours)"  # 9 characters fit 6.9 / 8 in; words stay whole
    assert show_images(x0.expand(2, -1, -1, -1), titles=["t = 5", "t = 9"]).axes[0].get_title() == "t = 5"
