"""sdlab.widgets: a live slider in a kernel, a JavaScript player without one."""

import matplotlib

matplotlib.use("Agg")

import io  # noqa: E402
import re  # noqa: E402

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import sdlab as sd  # noqa: E402
from sdlab.images import to_numpy_image  # noqa: E402
from sdlab.schedules import NoiseSchedule  # noqa: E402
from sdlab.widgets import FramePlayer, TimestepPlayer, animate, timestep_player  # noqa: E402

STEPS = [*range(0, 1000, 100), 999]  # 11 frames

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"  # what ipywidgets puts in a bundle


def embedded_frames(html):
    """The frames matplotlib's to_jshtml embeds, as 'frames[i] = "data:image/png;base64,...'."""
    return re.findall(r'frames\[(\d+)\] = "data:image/png;base64,', html)


@pytest.fixture(scope="module")
def x0():
    return torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def player(x0):
    schedule = NoiseSchedule("linear")
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    return timestep_player(lambda t: schedule.add_noise(x0, eps, t), STEPS, title="linear")


# ---- timestep_player -------------------------------------------------------------------------------------------


def test_bundle_has_widget_html_and_text(player):
    bundle = player._repr_mimebundle_()
    assert set(bundle) == {WIDGET_MIME, "text/html", "text/plain"}
    assert bundle[WIDGET_MIME]["model_id"] == player.widget().model_id
    assert bundle["text/plain"] == "<TimestepPlayer: t in [0, 100, 200, 300, ...] (11 frames)>"


def test_live_view_does_not_need_ipywidgets_8s_display_hook(player, monkeypatch):
    """Colab preinstalls ipywidgets 7, whose widgets have no _repr_mimebundle_ (they use _ipython_display_)."""
    from IPython.core.formatters import DisplayFormatter

    from sdlab.widgets import prompt_box

    widget = player.widget()
    view = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}  # the widget-view mimetype, v2.0
    if hasattr(widget, "_repr_mimebundle_"):  # ipywidgets 8: what its own hook gives
        assert widget._repr_mimebundle_()[WIDGET_MIME] == view
    for cls in type(widget).__mro__:  # now make the widgets look like ipywidgets 7's
        if "_repr_mimebundle_" in vars(cls):
            monkeypatch.delattr(cls, "_repr_mimebundle_")
    assert not hasattr(widget, "_repr_mimebundle_")
    data, _ = DisplayFormatter().format(player)  # as IPython displays a cell's value (it prints, not raises, errors)
    assert data[WIDGET_MIME] == view and set(data) == {WIDGET_MIME, "text/html", "text/plain"}
    data, _ = DisplayFormatter().format(prompt_box(str.upper, "a cat"))
    assert set(data[WIDGET_MIME]) == set(view) and re.fullmatch(r"[0-9a-f]{32}", data[WIDGET_MIME]["model_id"])
    assert "A CAT" in data["text/html"]


def test_html_player_embeds_every_frame(player):
    html = player.to_html()
    assert html.count("<img") == 1
    assert embedded_frames(html) == [str(i) for i in range(11)]
    assert player._repr_mimebundle_()["text/html"] == html
    assert len(html) < 400_000  # 11 PNG frames of a 64 x 64 noisy image stay light for the website


def test_html_player_needs_no_download(player):
    html = player.to_html()
    assert "font-awesome" not in html and "<link" not in html and 'class="fa ' not in html
    assert not re.findall(r'(?:src|href)="(?!data:)', html)  # nothing is fetched: frames are data: URLs
    for glyph in ("\u25b6", "\u25c0", "\u275a\u275a", "\u21e4", "\u21e5"):  # play, reverse, pause, first, last
        assert glyph in html


def test_frames_are_the_rendered_images(x0, player):
    frames = player.player.frames
    assert len(frames) == 11 and all(len(f) == 1 for f in frames)
    schedule, eps = NoiseSchedule("linear"), torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    assert np.allclose(frames[5][0], to_numpy_image(schedule.add_noise(x0, eps, 500)), atol=1e-6)
    assert player.player.titles[-1] == "linear\nt=999"


def test_widget_slider_switches_the_image(player):
    box = player.widget()
    (play, slider), image = box.children[0].children, box.children[1]
    assert slider.options == tuple((str(t), i) for i, t in enumerate(STEPS))
    assert play.max == 10 and play.interval == 300 and slider.description == "t"
    pngs = player.player.frame_pngs()
    assert image.value == pngs[0]
    slider.index = 7
    assert slider.label == "700" and image.value == pngs[7] and pngs[7] != pngs[0]
    assert Image.open(io.BytesIO(pngs[7])).format == "PNG"


def test_render_is_called_once_per_value_and_may_return_pil_or_numpy():
    calls = []

    def render(t):
        calls.append(t)
        return Image.new("L", (8, 8), color=t) if t % 2 else np.full((8, 8), t / 255.0)

    p = timestep_player(render, np.array([1, 2, 3]), label="step")
    assert calls == [1, 2, 3] and isinstance(p, TimestepPlayer)
    assert p.player.titles == ["step=1", "step=2", "step=3"]
    assert [float(f[0].mean()) for f in p.player.frames] == pytest.approx([1 / 255, 2 / 255, 3 / 255])


@pytest.mark.parametrize(
    "render, values, kwargs, error, match",
    [
        ("frame.png", [0], {}, TypeError, r"render must be a function value -> image; got str"),
        (None, [], {}, ValueError, r"values is empty; give at least one value"),
        (None, [0, 0.5], {}, TypeError, r"values must all be ints; got 0.5 \(float\)"),
        (None, [True], {}, TypeError, r"values must all be ints; got True"),
        (None, 10, {}, TypeError, r"values must be a sequence of ints such as \[0, 100, 200\]; got int"),
        (None, torch.zeros(2, 2, dtype=torch.long), {}, ValueError, r"values must be 1-D; got shape \(2, 2\)"),
        (None, [0], {"interval_ms": 0}, ValueError, r"interval_ms must be a number of milliseconds in \[10, 10000\]"),
        (lambda t: torch.zeros(4, 8, 8), [3], {}, ValueError, r"render\(3\) must have shape \(C, H, W\)"),
        (lambda t: torch.zeros(3, 8, 8 + t), [0, 1], {}, ValueError, r"frame 1 has panels of shapes"),
    ],
)
def test_timestep_player_rejects(render, values, kwargs, error, match):
    with pytest.raises(error, match=match):
        timestep_player(render or (lambda t: torch.zeros(3, 8, 8)), values, **kwargs)


# ---- animate ---------------------------------------------------------------------------------------------------


def test_animate_single_panel_frames(x0):
    player = animate([x0, -x0, x0 * 0], titles=["a", "b", "c"], interval_ms=100)
    assert isinstance(player, FramePlayer) and len(player) == 3
    html = player._repr_html_()
    assert embedded_frames(html) == ["0", "1", "2"] and html == player.to_html()
    fig, _ = player._figure()
    assert len(fig.axes) == 1


def test_animate_several_panels_per_frame(x0):
    player = animate([[x0, x0[:1]], (-x0, x0[:1])], panel_titles=["x_t", "predicted x0"])
    fig, _ = player._figure()
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["x_t", "predicted x0"]
    assert player.frames[0][1].shape == (64, 64) and np.allclose(player.frames[1][0], 1 - player.frames[0][0])
    stacked = animate([torch.stack([x0, -x0])] * 3)  # a (P, C, H, W) tensor per frame: P panels
    assert len(stacked) == 3 and len(stacked.frames[0]) == 2


def test_animate_tensor_of_frames_is_pixel_exact(x0):
    player = animate(torch.stack([x0, -x0]))
    assert len(player) == 2
    png = Image.open(io.BytesIO(player.frame_pngs()[0])).convert("RGB")
    assert png.size == (3 * 64 + 8, 3 * 64 + 8)  # a 3x zoom and 4-pixel margins
    expected = np.asarray(Image.fromarray(np.round(to_numpy_image(x0) * 255).astype(np.uint8)))
    assert np.abs(np.asarray(png)[4 + 1 : 4 + 192 : 3, 4 + 1 : 4 + 192 : 3].astype(int) - expected).max() <= 1


@pytest.mark.parametrize(
    "frames, kwargs, error, match",
    [
        ([], {}, ValueError, r"frames is empty"),
        ([[]], {}, ValueError, r"frames\[0\] is an empty list"),
        ("x_t", {}, TypeError, r"frames must be a list of images or a \(N, C, H, W\) tensor; got str"),
        (torch.zeros(3, 8, 8), {}, ValueError, r"frames as a tensor must be \(N, C, H, W\); got shape \(3, 8, 8\)"),
        ([torch.zeros(3, 8, 8), [torch.zeros(3, 8, 8)] * 2], {}, ValueError, r"frame 1 has panels of shapes"),
        ([torch.zeros(3, 8, 8), np.zeros((8, 8), np.int64)], {}, TypeError, r"frames\[1\] has dtype int64"),
        ([torch.zeros(3, 8, 8)] * 2, {"titles": ["a"]}, ValueError, r"titles has 1 entries but there are 2 frames"),
        ([torch.zeros(3, 8, 8)], {"panel_titles": "x"}, TypeError, r"panel_titles must be a list of strings"),
        ([torch.zeros(3, 8, 8)], {"interval_ms": "fast"}, ValueError, r"interval_ms must be a number"),
    ],
)
def test_animate_rejects(frames, kwargs, error, match):
    with pytest.raises(error, match=match):
        animate(frames, **kwargs)


# ---- in a real kernel ------------------------------------------------------------------------------------------


def test_notebook_outputs_carry_both_views_and_figures_show_once():
    """Execute a notebook as Jupyter Book does (nbclient) and read the stored outputs."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import torch, sdlab.plotting as pl, sdlab.widgets as wd\n"
            "x = torch.zeros(3, 16, 16)\n"
            "wd.timestep_player(lambda t: x + t / 10, [0, 5, 10])"
        ),
        nbformat.v4.new_code_cell("pl.show_images([x, -x])"),
        nbformat.v4.new_code_cell("fig = pl.show_images([x])"),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    player, last_value, assigned = (cell.outputs for cell in nb.cells)
    assert len(player) == 1 and set(player[0]["data"]) == {WIDGET_MIME, "text/html", "text/plain"}
    assert embedded_frames(player[0]["data"]["text/html"]) == ["0", "1", "2"]
    assert [o.output_type for o in last_value] == ["execute_result"] and "image/png" in last_value[0]["data"]
    assert [o.output_type for o in assigned] == ["display_data"] and "image/png" in assigned[0]["data"]


def test_player_takes_numpy_scalars_and_refuses_nan(x0):
    player = timestep_player(lambda t: x0, [np.int64(0), np.int32(5)], interval_ms=np.float32(100))
    assert player.values == [0, 5] and all(type(v) is int for v in player.values)
    assert player.player.interval_ms == 100 and type(player.player.interval_ms) is int
    with pytest.raises(ValueError, match=r"interval_ms must be a number of milliseconds in \[10, 10000\]; got nan"):
        animate([x0], interval_ms=float("nan"))
    with pytest.raises(TypeError, match=r"values must all be ints; got np.True_"):
        timestep_player(lambda t: x0, [np.bool_(True)])


def test_prompt_box_renders_live_and_for_the_website():
    from sdlab.widgets import prompt_box

    box = prompt_box(lambda p: f"<b>{len(p.split())} words</b>", "a red cat")
    bundle = box._repr_mimebundle_()
    assert WIDGET_MIME in bundle and "<b>3 words</b>" in bundle["text/html"] and "a red cat" in bundle["text/html"]
    widget = box.widget()
    text, view = widget.children
    text.value = "a small red cat"
    assert view.value == "<b>4 words</b>"
    failing = prompt_box(lambda p: (_ for _ in ()).throw(ValueError("too long")) if len(p) > 5 else p, "ok")
    text, view = failing.widget().children
    text.value = "far too long"
    assert view.value == "<p>too long</p>"
    with pytest.raises(TypeError, match="render must be a function"):
        prompt_box("not a function", "x")


def test_token_box_shows_pieces_and_ids():
    from sdlab.widgets import token_box, tokens_html

    table = tokens_html("a photo of a cat")
    for piece, i in [("photo␣", 1125), ("cat␣", 2368), ("&lt;|startoftext|&gt;", 49406)]:
        assert f"<code>{piece}</code><br><small>{i}</small>" in table.replace("<br>\n", "<br>")
    assert "7 tokens (of 77 places)" in table
    assert "only the first 77" in tokens_html("cat " * 80)
    assert "photo" in token_box("a photo")._repr_mimebundle_()["text/html"]


def test_slider_player_takes_guidance_scales():
    from sdlab.widgets import slider_player

    player = slider_player(lambda s: torch.full((3, 8, 8), s / 10 - 1), [1, 2.5, 7.5], label="s")
    assert player.values == [1, 2.5, 7.5] and player.player.titles == ["s=1", "s=2.5", "s=7.5"]
    assert "<script" in player.to_html()
    with pytest.raises(TypeError, match="must all be numbers; got True"):
        slider_player(lambda s: torch.zeros(3, 8, 8), [1, True], label="s")
    with pytest.raises(TypeError, match="non-empty sequence"):
        slider_player(lambda s: torch.zeros(3, 8, 8), [], label="s")


def test_images_html_embeds_every_picture_with_its_caption():
    import base64

    from PIL import Image

    images = torch.linspace(-1, 1, 3)[:, None, None, None].expand(3, 3, 4, 4)
    page = sd.widgets.images_html(images, captions=["dark", "grey <b>", "light"], pixels=32)
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 3 and "grey &lt;b&gt;" in page and "http" not in page
    assert re.findall(r'alt="([^"]+)"', page) == ["picture 1: dark", "picture 2: grey &lt;b&gt;", "picture 3: light"]
    first = Image.open(io.BytesIO(base64.b64decode(sources[0])))
    assert first.size == (32, 32) and first.getpixel((0, 0)) == (0, 0, 0)
    with pytest.raises(ValueError, match="captions has 1 entries but there are 3 pictures"):
        sd.widgets.images_html(images, captions=["one"])


def test_a_prompt_box_renders_its_example_once(monkeypatch):
    calls = []

    def render(prompt):
        calls.append(prompt)
        return f"<p>{prompt}</p>"

    bundle = sd.widgets.prompt_box(render, "a cat")._repr_mimebundle_()
    assert calls == ["a cat"] and "<p>a cat</p>" in bundle["text/html"]
