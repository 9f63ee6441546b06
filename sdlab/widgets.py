"""Interactive players with a static fallback: a live slider in a kernel, a JavaScript player on the website.

``timestep_player`` displays as an ipywidgets slider wherever a widget manager
runs (JupyterLab, Notebook 7, classic Notebook, Colab), and as matplotlib's
``to_jshtml`` player (HTML + JavaScript, frames embedded as PNG) where none
does, such as the Jupyter Book website built without a kernel. Both come from
the same precomputed frames. ``animate`` gives the JavaScript player alone.
"""

from __future__ import annotations

import html
import io
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from sdlab.images import to_numpy_image
from sdlab.validation import is_integer, is_real_number, number_in_range

__all__ = ["FramePlayer", "TimestepPlayer", "timestep_player", "slider_player", "animate", "PromptBox", "prompt_box",
           "images_html", "tokens_html", "token_box"]

_PANEL_PIXELS = 192  # each panel is drawn about this many pixels wide (a whole multiple of the image)
_GAP = 4  # pixels around and between panels
_DPI = 72  # frames are PNGs at this resolution (12-point titles are 12 pixels high)
# to_jshtml draws its buttons with Font Awesome icons from a CDN; the course's pages work offline, so the
# stylesheet link goes and each icon becomes a character that every font has.
_FONT_AWESOME = re.compile(r'<link rel="stylesheet"\s+href="https://[^"]*font-awesome[^"]*">\n?')
_ICON_TEXT = {
    "fa-minus": "\u2212", "fa-fast-backward": "\u21e4", "fa-step-backward": "\u2039",
    "fa-play fa-flip-horizontal": "\u25c0", "fa-pause": "\u275a\u275a", "fa-play": "\u25b6",
    "fa-step-forward": "\u203a", "fa-fast-forward": "\u21e5", "fa-plus": "+",
}
_ICON = re.compile(r'<i class="fa ([^"]+)"></i>')
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # a widget manager's mimetype


def _widget_view(widget: Any) -> dict[str, Any]:
    """The bundle entry a widget manager draws a live widget from, on ipywidgets 7 and 8 alike.

    ipywidgets 8 returns it from ``Widget._repr_mimebundle_``; 7 (preinstalled on Colab) has no such
    method and publishes it from ``_ipython_display_`` instead. Both build it from ``get_view_spec()``.
    """
    return {_WIDGET_VIEW: widget.get_view_spec()}


def _offline_buttons(html: str) -> str:
    """matplotlib's player without its one download: no Font Awesome stylesheet, plain characters as icons."""
    html = _FONT_AWESOME.sub("", html)
    return _ICON.sub(lambda m: f'<span aria-hidden="true">{_ICON_TEXT.get(m[1], m[1])}</span>', html)


def _panel_pixels(shape: tuple[int, ...]) -> tuple[int, int]:
    """Width and height in pixels for an image of shape (H, W): a whole-number zoom up to ~192 pixels."""
    h, w = shape
    zoom = max(1, round(_PANEL_PIXELS / max(h, w))) if max(h, w) <= _PANEL_PIXELS else _PANEL_PIXELS / max(h, w)
    return round(w * zoom), round(h * zoom)


def _check_interval(interval_ms: Any) -> int:
    """Validate the delay between frames in milliseconds."""
    return int(number_in_range(interval_ms, "interval_ms", 10, 10_000, what="a number of milliseconds"))


def _check_labels(labels: Sequence[str] | None, count: int, *, name: str, what: str) -> list[str] | None:
    """Return ``labels`` as a list of ``count`` strings (or None), checking type and length."""
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"{name} must be a list of strings, one per {what}; got {type(labels).__name__}")
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} entries but there are {count} {what}s")
    return [str(label) for label in labels]


def _frame_panels(frame: Any, index: int) -> list[np.ndarray]:
    """Turn one frame (an image, a list of images, or a (P, C, H, W) tensor) into display arrays."""
    if isinstance(frame, (list, tuple)):
        if not frame:
            raise ValueError(f"frames[{index}] is an empty list; give each frame at least one image")
        return [to_numpy_image(p, name=f"frames[{index}][{j}]") for j, p in enumerate(frame)]
    if isinstance(frame, torch.Tensor) and frame.dim() == 4:
        return [to_numpy_image(p, name=f"frames[{index}][{j}]") for j, p in enumerate(frame)]
    return [to_numpy_image(frame, name=f"frames[{index}]")]


def _check_same_layout(frames: list[list[np.ndarray]]) -> None:
    """Every frame must have the same number of panels and each panel the same image shape."""
    first = [p.shape for p in frames[0]]
    for i, frame in enumerate(frames[1:], start=1):
        shapes = [p.shape for p in frame]
        if shapes != first:
            raise ValueError(
                f"frame {i} has panels of shapes {shapes} but frame 0 has {first}; every frame needs the same layout"
            )


class FramePlayer:
    """Precomputed frames (each one or more panels) drawn as PNGs or as a to_jshtml player.

    Args:
        frames: per frame, a list of display arrays (H, W) or (H, W, 3) in [0, 1].
        titles: one title per frame, drawn above the panels.
        panel_titles: one fixed title per panel.
        interval_ms: delay between frames when playing.
    """

    def __init__(
        self,
        frames: list[list[np.ndarray]],
        *,
        titles: list[str] | None = None,
        panel_titles: list[str] | None = None,
        interval_ms: int = 200,
    ) -> None:
        self.frames = frames
        self.titles = titles
        self.panel_titles = panel_titles
        self.interval_ms = interval_ms
        self._html: str | None = None
        self._pngs: dict[int, bytes] = {}
        self._drawing: tuple[Figure, Callable[[int], list]] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self.frames)} frames of {len(self.frames[0])} panel(s)>"

    def _figure(self) -> tuple[Figure, Callable[[int], list]]:
        """Build a figure not managed by pyplot (so no stray static copy) and its frame-update function.

        Each panel is drawn at a whole multiple of its pixel size (nearest neighbour), which keeps
        pixels sharp and the PNGs small.
        """
        sizes = [_panel_pixels(panel.shape[:2]) for panel in self.frames[0]]
        lines = max(t.count("\n") + 1 for t in self.titles) if self.titles is not None else 0
        heading = 17 * lines + 6 if lines else 0
        panel_title = 20 if self.panel_titles is not None else 0
        content = sum(w for w, _ in sizes) + _GAP * (len(sizes) + 1)
        longest = max((len(line) for t in self.titles or [] for line in t.split("\n")), default=0)
        width = max(content, 7 * longest + 2 * _GAP)  # ~7 pixels per character at 12 points
        height = max(h for _, h in sizes) + heading + panel_title + 2 * _GAP
        fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
        images, left = [], _GAP + (width - content) // 2
        for j, (w, h) in enumerate(sizes):
            ax = fig.add_axes((left / width, _GAP / height, w / width, h / height))
            images.append(ax.imshow(self.frames[0][j], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"))
            ax.set_axis_off()
            if self.panel_titles is not None:
                ax.set_title(self.panel_titles[j], fontsize=11, pad=4)
            left += w + _GAP
        title = fig.suptitle("", fontsize=12, y=1 - 4 / height, va="top") if self.titles is not None else None

        def update(i: int) -> list:
            for image, data in zip(images, self.frames[i]):
                image.set_data(data)
            if title is not None:
                title.set_text(self.titles[i])
            return images

        return fig, update

    def to_html(self) -> str:
        """Return the to_jshtml player: HTML and JavaScript with every frame embedded as a base64 PNG."""
        if self._html is None:
            fig, update = self._figure()
            animation = FuncAnimation(fig, update, frames=len(self.frames), interval=self.interval_ms, repeat=False)
            html = animation.to_jshtml(fps=1000.0 / self.interval_ms, embed_frames=True, default_mode="once")
            self._html = _offline_buttons(html)
        return self._html

    def frame_png(self, index: int) -> bytes:
        """Return frame ``index`` drawn as PNG bytes (what the live slider shows), drawing it on first use."""
        if index not in self._pngs:
            if self._drawing is None:
                self._drawing = self._figure()
            fig, update = self._drawing
            update(index)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=_DPI)
            self._pngs[index] = buffer.getvalue()
        return self._pngs[index]

    def frame_pngs(self) -> list[bytes]:
        """Return every frame as PNG bytes."""
        return [self.frame_png(i) for i in range(len(self.frames))]

    def _repr_html_(self) -> str:
        return self.to_html()


def animate(
    frames: Sequence[Any] | torch.Tensor,
    *,
    titles: Sequence[str] | None = None,
    panel_titles: Sequence[str] | None = None,
    interval_ms: int = 200,
) -> FramePlayer:
    """Make a JavaScript player (matplotlib ``to_jshtml``) that steps through frames, no kernel needed.

    Args:
        frames: a list of frames, or a (N, C, H, W) tensor of N one-panel frames. A frame is one
            image ((C, H, W) tensor in [-1, 1], PIL image or numpy array), or several panels side
            by side: a list of images or a (P, C, H, W) tensor, e.g. [x_t, x̂0] in a sampling loop.
        titles: one title per frame, e.g. ``[f"t={t}" for t in timesteps]``.
        panel_titles: one fixed title per panel, e.g. ``["x_t", "predicted x0"]``.
        interval_ms: delay between frames when playing.

    Returns:
        A FramePlayer; a notebook displays it as the player (``.to_html()`` gives the HTML).
    """
    interval_ms = _check_interval(interval_ms)
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4:
            raise ValueError(f"frames as a tensor must be (N, C, H, W); got shape {tuple(frames.shape)}")
        frames = [frames[i] for i in range(frames.shape[0])]
    if not isinstance(frames, Sequence) or isinstance(frames, str):
        raise TypeError(f"frames must be a list of images or a (N, C, H, W) tensor; got {type(frames).__name__}")
    if len(frames) == 0:
        raise ValueError("frames is empty; give at least one frame")
    arrays = [_frame_panels(frame, i) for i, frame in enumerate(frames)]
    _check_same_layout(arrays)
    return FramePlayer(
        arrays,
        titles=_check_labels(titles, len(arrays), name="titles", what="frame"),
        panel_titles=_check_labels(panel_titles, len(arrays[0]), name="panel_titles", what="panel"),
        interval_ms=interval_ms,
    )


class TimestepPlayer:
    """A slider over precomputed frames that shows as a live widget or as a JavaScript player.

    Displayed in a notebook it offers both mimetypes: a front-end with a widget
    manager shows the ipywidgets slider, others (the static website) the HTML player.
    """

    def __init__(self, player: FramePlayer, values: list[int], *, label: str, title: str | None) -> None:
        self.player = player
        self.values = values
        self.label = label
        self.title = title
        self._widget: Any = None

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self.values[:4])) + (", ..." if len(self.values) > 4 else "")
        return f"<TimestepPlayer: {self.label} in [{shown}] ({len(self.values)} frames)>"

    def to_html(self) -> str:
        """The static to_jshtml player (HTML and JavaScript, frames embedded)."""
        return self.player.to_html()

    def widget(self) -> Any:
        """The ipywidgets view: a play button and a SelectionSlider over the values, and the frame image."""
        if self._widget is None:
            import ipywidgets as w  # imported here: only needed where a notebook displays the widget

            slider = w.SelectionSlider(options=[(str(v), i) for i, v in enumerate(self.values)], description=self.label)
            play = w.Play(min=0, max=len(self.values) - 1, interval=self.player.interval_ms, description="play")
            w.jslink((play, "value"), (slider, "index"))
            image = w.Image(value=self.player.frame_png(0), format="png")

            def on_change(change: dict) -> None:
                image.value = self.player.frame_png(change["new"])  # drawn on first visit, then cached

            slider.observe(on_change, names="index")
            self._widget = w.VBox([w.HBox([play, slider]), image])
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Widget view, HTML player and plain text; the front-end picks the richest it can show."""
        bundle = _widget_view(self.widget())
        bundle["text/html"] = self.to_html()
        bundle["text/plain"] = repr(self)
        return bundle


def _check_values(values: Any) -> list[int]:
    """Validate the slider values: a non-empty sequence of ints (range, list, 1-D array or tensor)."""
    if isinstance(values, (torch.Tensor, np.ndarray)):
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D; got shape {tuple(values.shape)}")
        values = values.tolist()
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"values must be a sequence of ints such as [0, 100, 200]; got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError("values is empty; give at least one value, e.g. range(0, 1000, 100)")
    bad = [v for v in values if not is_integer(v)]
    if bad:
        raise TypeError(f"values must all be ints; got {bad[0]!r} ({type(bad[0]).__name__})")
    return [int(v) for v in values]


def timestep_player(
    render: Callable[[int], Any],
    values: Sequence[int],
    *,
    label: str = "t",
    title: str | None = None,
    interval_ms: int = 300,
) -> TimestepPlayer:
    """Render one image per value and return a player that shows it as a slider (live) or a JS player (static).

    Args:
        render: called once per value, ``render(value) -> image``: a (C, H, W) tensor in [-1, 1],
            a PIL image, or a numpy array (H, W[, C]) in [0, 1] or uint8.
        values: the slider positions, e.g. ``[0, 100, ..., 999]``. Every frame is embedded in the
            page as a PNG: a noisy 64 × 64 image costs about 27 kB a frame, a 128 × 128 one about 100 kB.
        label: the slider's name; frames are titled "{label}={value}".
        title: a fixed title drawn above every frame.
        interval_ms: delay between frames when playing.

    Returns:
        A TimestepPlayer; display it (last line of a cell) to get the slider or the player.
    """
    return _slider(render, _check_values(values), label=label, title=title, interval_ms=interval_ms)


def slider_player(
    render: Callable[[float], Any],
    values: Sequence[float],
    *,
    label: str,
    title: str | None = None,
    interval_ms: int = 300,
) -> TimestepPlayer:
    """`timestep_player` over any numbers, e.g. guidance scales ``[1, 2, 3, 5, 7.5]``: a slider live, a player static.

    Args:
        render: ``render(value) -> image``, called once per value. values: the slider positions.
        label: the slider's name (frames are titled "{label}={value}"). title, interval_ms: as `timestep_player`.
    """
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"values must be a non-empty sequence of numbers such as [1, 3, 7.5]; got {values!r}")
    bad = [v for v in values if not is_real_number(v)]
    if bad:
        raise TypeError(f"values must all be numbers; got {bad[0]!r} ({type(bad[0]).__name__})")
    return _slider(render, list(values), label=label, title=title, interval_ms=interval_ms)


def _slider(render: Callable, values: list, *, label: str, title: str | None, interval_ms: int) -> TimestepPlayer:
    if not callable(render):
        raise TypeError(f"render must be a function value -> image; got {type(render).__name__}")
    interval_ms = _check_interval(interval_ms)
    frames = [[to_numpy_image(render(v), name=f"render({v})")] for v in values]
    _check_same_layout(frames)
    titles = [f"{label}={v}" if title is None else f"{title}\n{label}={v}" for v in values]
    player = FramePlayer(frames, titles=titles, interval_ms=interval_ms)
    return TimestepPlayer(player, values, label=label, title=title)


class PromptBox:
    """A text box that re-renders as you type (live Jupyter); on the website, the fixed example's rendering.

    ``render(prompt) -> str`` returns HTML (for example a table of a prompt's tokens). Warnings that
    ``render`` raises (the course's model never saw a word of the prompt) are shown above its HTML.
    """

    def __init__(self, render: Callable[[str], str], value: str, *, description: str = "prompt") -> None:
        if not callable(render):
            raise TypeError(f"render must be a function prompt -> HTML; got {type(render).__name__}")
        if not isinstance(value, str):
            raise TypeError(f"value must be a str; got {type(value).__name__}")
        self.render, self.value, self.description = render, value, description

    def __repr__(self) -> str:
        return f"<PromptBox: {self.value!r}>"

    def rendered(self, prompt: str) -> str:
        """``render(prompt)``, with any warning it gave written above it."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            view = self.render(prompt)
        notes = "".join(f"<p><strong>Note:</strong> {html.escape(str(w.message), quote=False)}</p>" for w in caught)
        return notes + view

    def widget(self, *, first_view: str | None = None) -> Any:
        """The live version: an ipywidgets Text box above an HTML view that follows it.

        ``first_view``: the example's HTML when it is already rendered (slow renders run once).
        """
        import ipywidgets

        box = ipywidgets.Text(value=self.value, description=self.description,
                              layout=ipywidgets.Layout(width="100%"), continuous_update=False)
        view = ipywidgets.HTML(self.rendered(self.value) if first_view is None else first_view)

        def on_change(change: dict) -> None:
            try:
                view.value = self.rendered(change["new"])
            except (TypeError, ValueError) as error:  # the reader's input: show the message, keep the box
                view.value = f"<p>{html.escape(str(error))}</p>"

        box.observe(on_change, names="value")
        return ipywidgets.VBox([box, view])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Widget view, the example's HTML and plain text; the front-end picks the richest it can show."""
        example = self.rendered(self.value)
        bundle = _widget_view(self.widget(first_view=example))
        bundle["text/html"] = f"<p><code>{html.escape(self.value)}</code></p>" + example
        bundle["text/plain"] = repr(self)
        return bundle


def prompt_box(render: Callable[[str], str], value: str, *, description: str = "prompt") -> PromptBox:
    """A :class:`PromptBox`: type a prompt, see ``render(prompt)``; the website shows ``render(value)``."""
    return PromptBox(render, value, description=description)


def images_html(images: Any, *, captions: Sequence[str] | None = None, pixels: int = 128) -> str:
    """Pictures as inline PNGs in one wrapping row, each ``pixels`` wide, with an optional caption under each.

    Args:
        images: (B, C, H, W) in [−1, 1] (or a list of (C, H, W)); enlarged without smoothing.
        captions: one string per picture. pixels: the width of each picture on the page.
    """
    import base64

    from PIL import Image

    from sdlab.validation import positive_int

    items = list(images)
    labels = _check_labels(captions, len(items), name="captions", what="picture")
    pixels = positive_int(pixels, "pixels")
    cells = []
    for k, image in enumerate(items):
        array = to_numpy_image(image, name=f"images[{k}]")
        picture = Image.fromarray((array * 255).round().astype(np.uint8).squeeze())
        picture = picture.resize((pixels, round(pixels * picture.height / picture.width)), Image.NEAREST)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        source = base64.b64encode(buffer.getvalue()).decode("ascii")
        caption = f'<br><small>{html.escape(labels[k])}</small>' if labels else ""
        alt = html.escape(f"picture {k + 1}: {labels[k]}" if labels else f"picture {k + 1}", quote=True)
        cells.append(f'<div style="width:{pixels}px;text-align:center;font-size:12px">'
                     f'<img src="data:image/png;base64,{source}" width="{pixels}" alt="{alt}">'
                     f"{caption}</div>")
    return f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(cells)}</div>'


def tokens_html(prompt: str) -> str:
    """An HTML table of a prompt's BPE pieces and their ids (``</w>`` shown as ␣: the end of a word)."""
    from sdlab.tokenizer import END_OF_WORD, pieces

    found = pieces(prompt)
    style = "padding:2px 6px;text-align:center;border:1px solid #ddd"
    cells = "".join(f'<td style="{style}"><code>{html.escape(p.replace(END_OF_WORD, "␣"))}</code><br>'
                    f"<small>{i}</small></td>" for p, i in found)
    note = f"<p>{len(found)} tokens (of 77 places)</p>" if len(found) <= 77 else \
        f"<p>{len(found)} tokens: only the first 77 reach the text encoder</p>"
    return f'<div style="overflow-x:auto"><table><tr>{cells}</tr></table></div>{note}'


def token_box(value: str = "a small red cat on the left, blue background") -> PromptBox:
    """Type a prompt, see its pieces and ids (live); the website shows ``value``'s."""
    return prompt_box(tokens_html, value)
