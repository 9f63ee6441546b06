"""Figures for the course: image grids, noise schedules and the forward process.

Every function returns its matplotlib ``Figure`` and never calls ``plt.show()``;
in a notebook the figure appears at the end of the cell. Figures are sized for
the website's text column: at most ``BOOK_WIDTH`` inches wide. Images are tensors in [-1, 1] (see
``sdlab.images``); PIL images and numpy arrays are converted with ``to_tensor``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sdlab.data import ATTRIBUTES
from sdlab.images import to_numpy_image
from sdlab.random import randn_tensor
from sdlab.schedules import NoiseSchedule
from sdlab.validation import number_in_range, positive_int, positive_number

__all__ = [
    "BOOK_WIDTH", "CellFigure", "show_images", "plot_schedules", "plot_noising_grid", "imshow",
    "show_captioned_images", "moving_average", "plot_losses", "plot_per_timestep_loss", "plot_noise_guesses",
    "show_image_rows", "plot_wording_adherence",
]

# inches: the website's 688-pixel column at 100 dpi. A figure drawn wider is shrunk to fit, and its text
# with it; at this width text of 8 points or more stays at least 10 pixels high on the page.
BOOK_WIDTH = 6.9
_TITLE_CHARS_PER_INCH = 11  # characters of a 10-point title per inch of width
_COLORS = {"linear": "tab:blue", "cosine": "tab:orange", "scaled_linear": "tab:green"}


class CellFigure(Figure):
    """A pyplot Figure that a notebook shows once, whether or not it is the cell's last value.

    pyplot's inline backend shows every open figure when a cell ends; a figure that is also the
    cell's result would appear twice. Being displayed removes this one from pyplot, so it does not.
    """

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> None:
        if "inline" in matplotlib.get_backend():
            plt.close(self)  # the display formatter draws it next; pyplot will not draw it again
        return None  # IPython's image/png formatter for Figure does the drawing


def _subplots(nrows: int, ncols: int, *, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """plt.subplots with a CellFigure, constrained layout and a 2-D array of Axes, never wider than BOOK_WIDTH."""
    width, height = figsize
    if width > BOOK_WIDTH:  # keep the shape, fit the column
        figsize = (BOOK_WIDTH, height * BOOK_WIDTH / width)
    return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained", FigureClass=CellFigure)


def imshow(ax: Axes, image: Any, *, title: str | None = None, cmap: str = "gray", name: str = "image") -> None:
    """Draw one image on ``ax`` with its axes hidden: values in [0, 1], grayscale through ``cmap``.

    Args:
        ax: the matplotlib Axes to draw on.
        image: (C, H, W) or (1, C, H, W) tensor in [-1, 1], a PIL image, or a numpy array (see ``to_tensor``).
        title: text above the image.
        cmap: colour map for one-channel images.
        name: the argument name used in error messages.
    """
    pixels = to_numpy_image(image, name=name)
    ax.imshow(pixels, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=10)


def _image_list(images: Any) -> list[Any]:
    """Split ``images`` into a list of single images, rejecting containers show_images cannot read."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            return [images]
        if images.dim() == 4:
            return list(images)
        raise ValueError(f"images must be a (B, C, H, W) or (C, H, W) tensor; got shape {tuple(images.shape)}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is empty; pass at least one image")
        return list(images)
    raise TypeError(
        "images must be a (B, C, H, W) tensor or a list of (C, H, W) tensors / PIL images / numpy arrays; "
        f"got {type(images).__name__}"
    )


def _check_titles(titles: Sequence[str] | None, count: int, *, name: str = "titles") -> list[str | None]:
    """Return one title per image (None where there is none), checking the count."""
    if titles is None:
        return [None] * count
    if isinstance(titles, str) or not isinstance(titles, Sequence):
        raise TypeError(f"{name} must be a list of strings, one per image; got {type(titles).__name__}")
    if len(titles) != count:
        raise ValueError(f"{name} has {len(titles)} entries but there are {count} images")
    return [str(t) for t in titles]


def show_images(
    images: Any,
    *,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 1.35,
    suptitle: str | None = None,
    cmap: str = "gray",
) -> Figure:
    """Show images in a grid, each with an optional title above it.

    Args:
        images: a (B, C, H, W) tensor in [-1, 1], one (C, H, W) tensor, or a list of
            (C, H, W) tensors / PIL images / numpy arrays (C = 1 or 3).
        titles: one title per image, wrapped to the width its image has on the page.
        ncols: images per row; default: as many as fit the page (``BOOK_WIDTH``) at ``size`` inches each.
        size: width and height of each image in inches (less when ``ncols`` of them would not fit the page).
        suptitle: a title over the whole grid.
        cmap: colour map for one-channel images.

    Returns:
        The figure, with one Axes per image.
    """
    items = _image_list(images)
    labels = _check_titles(titles, len(items))
    size = number_in_range(size, "size", 0, BOOK_WIDTH, low_open=True, what="a number of inches")
    ncols = positive_int(ncols, "ncols", allow_none=True)
    if ncols is None:
        ncols = min(len(items), max(1, int(BOOK_WIDTH // size)))
    ncols = min(ncols, len(items))
    nrows = math.ceil(len(items) / ncols)
    size = min(size, BOOK_WIDTH / ncols)  # the width each image gets on the page
    width = max(4, round(size * _TITLE_CHARS_PER_INCH))
    labels = [textwrap.fill(label, width, break_long_words=False, break_on_hyphens=False) if label else label
              for label in labels]
    lines = max((label.count("\n") + 1 for label in labels if label), default=0)
    title_room = 0.3 + 0.17 * (lines - 1) if titles is not None else 0.0
    fig, axes = _subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + title_room) + (0.4 if suptitle else 0)))
    for i, ax in enumerate(axes.flat):
        if i < len(items):
            imshow(ax, items[i], title=labels[i], cmap=cmap, name=f"images[{i}]")
        else:
            fig.delaxes(ax)  # leave no empty frames in a partial last row
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig


def _schedule_list(schedules: Any, name: str = "schedules") -> list[NoiseSchedule]:
    """Accept one NoiseSchedule or a non-empty sequence of them."""
    if isinstance(schedules, NoiseSchedule):
        return [schedules]
    if isinstance(schedules, Sequence) and not isinstance(schedules, str) and schedules:
        bad = [type(s).__name__ for s in schedules if not isinstance(s, NoiseSchedule)]
        if not bad:
            return list(schedules)
        got = f"a list holding {', '.join(sorted(set(bad)))}"
    else:
        got = repr(schedules) if isinstance(schedules, (Sequence, str)) else type(schedules).__name__
    raise TypeError(f"{name} must be a NoiseSchedule or a non-empty list of them; got {got}")


def plot_schedules(
    schedules: NoiseSchedule | Sequence[NoiseSchedule],
    *,
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """Plot ᾱ_t and the signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) in dB, one line per schedule.

    Args:
        schedules: one NoiseSchedule or a list of them.
        ax: two Axes (a list or array) to draw into: ᾱ panel, SNR panel; default: a new 10 × 3.6 inch figure.
        title: a title over both panels.

    Returns:
        The figure holding the two panels.
    """
    items = _schedule_list(schedules)
    given = list(np.ravel(ax)) if isinstance(ax, (Sequence, np.ndarray)) and not isinstance(ax, str) else None
    if ax is None:
        fig, axes = _subplots(1, 2, figsize=(BOOK_WIDTH, 3.6))
        ax_ab, ax_snr = axes[0]
    elif given is not None and len(given) == 2 and all(isinstance(a, Axes) for a in given):
        ax_ab, ax_snr = given
        fig = ax_ab.figure
    else:
        raise TypeError(f"ax must be None or two matplotlib Axes (ᾱ panel, SNR panel); got {ax!r}")
    for schedule in items:
        t = np.arange(schedule.num_train_timesteps)
        color = _COLORS.get(schedule.name)
        ax_ab.plot(t, schedule.alphas_cumprod.numpy(), label=schedule.name, color=color, lw=2)
        ax_snr.plot(t, schedule.snr_db().numpy(), label=schedule.name, color=color, lw=2)
    ax_snr.axhline(0.0, color="0.3", ls="--", lw=1, label="signal = noise")
    ax_ab.set(xlabel="timestep t", ylabel="fraction of signal variance kept", ylim=(-0.02, 1.02))
    ax_ab.set_title(r"$\bar{\alpha}_t$", fontsize=12)
    ax_snr.set(xlabel="timestep t", ylabel="SNR (dB)")
    ax_snr.set_title(r"signal-to-noise ratio  $\bar{\alpha}_t\,/\,(1-\bar{\alpha}_t)$", fontsize=12)
    for a in (ax_ab, ax_snr):
        a.grid(alpha=0.3)
        a.legend(fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _check_x0(x0: Any) -> torch.Tensor:
    """Return x0 as one image (C, H, W), validating type and shape."""
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor (C, H, W) in [-1, 1]; got {type(x0).__name__}")
    if x0.dim() == 4 and x0.shape[0] == 1:
        x0 = x0[0]
    if x0.dim() != 3 or x0.shape[0] not in (1, 3) or not x0.is_floating_point():
        raise ValueError(
            f"x0 must be one float image (C, H, W) or (1, C, H, W) with C = 1 or 3; "
            f"got shape {tuple(x0.shape)}, dtype {x0.dtype}"
        )
    return x0


def plot_noising_grid(
    x0: torch.Tensor,
    schedules: NoiseSchedule | Sequence[NoiseSchedule],
    timesteps: Sequence[int] | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Figure:
    """Show x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε (DDPM eq. 4): rows are schedules, columns timesteps.

    One ε is drawn and used in every cell, so the only difference between rows is the schedule.

    Args:
        x0: the clean image, (C, H, W) or (1, C, H, W) in [-1, 1].
        schedules: one NoiseSchedule or a list of them (one row each).
        timesteps: the t of each column, each in [0, T) for every schedule.
        generator: seeds ε ~ N(0, I); must live on x0's device.

    Returns:
        The figure, with len(schedules) × len(timesteps) Axes.
    """
    x0 = _check_x0(x0)
    items = _schedule_list(schedules)
    steps = torch.as_tensor(timesteps) if not isinstance(timesteps, torch.Tensor) else timesteps
    if steps.dim() != 1 or steps.numel() == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D sequence of ints; got {timesteps!r}")
    for schedule in items:
        steps = schedule.check_timesteps(steps, name="timesteps")
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    n = steps.numel()
    batch_x0 = x0.expand(n, *x0.shape)
    batch_noise = noise.expand(n, *noise.shape)
    cell = min(1.5, (BOOK_WIDTH - 1.1) / n)
    fig, axes = _subplots(len(items), n, figsize=(cell * n + 1.1, cell * len(items) + 0.35))
    for row, schedule in zip(axes, items):
        x_t = schedule.add_noise(batch_x0, batch_noise, steps)
        for col, ax in enumerate(row):
            imshow(ax, x_t[col])
        row[0].set_axis_on()  # keep the row label while hiding ticks and frame
        row[0].set(xticks=[], yticks=[])
        row[0].spines[:].set_visible(False)
        row[0].set_ylabel(schedule.name, fontsize=10, rotation=0, ha="right", va="center")
    for ax, t in zip(axes[0], steps.tolist()):
        ax.set_title(f"t={t}", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- training (chapter 2)


def _as_1d(values: Any, name: str) -> np.ndarray:
    """Return a non-empty 1-D float array of finite values."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a 1-D sequence of numbers; got {type(values).__name__}") from error
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values (did the training diverge?)")
    return array


def _target_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, axes = _subplots(1, 1, figsize=figsize)
        return fig, axes[0, 0]
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be None or a matplotlib Axes; got {type(ax).__name__}")
    return ax.figure, ax


def _finish_loss_axes(fig: Figure, ax: Axes, *, xlabel: str, title: str | None) -> Figure:
    """The common finish of the loss plots: log-scale MSE axis, grid, legend, optional title."""
    ax.set(xlabel=xlabel, ylabel="loss (mean squared error)", yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def moving_average(values: Any, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start): m_i = mean(v[max(0, i−w+1) … i]).

    Args:
        values: (N,) numbers. window: how many values each mean covers (>= 1).

    Returns:
        (N,) float64 array.
    """
    array, window = _as_1d(values, "values"), positive_int(window, "window")
    sums = np.cumsum(np.concatenate([[0.0], array]))
    ends = np.arange(1, array.size + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_losses(
    losses: Any,
    *,
    every: int = 1,
    smooth: int = 50,
    label: str | None = None,
    color: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Plot a training loss curve: every recorded loss, faint, and its moving average on top.

    Args:
        losses: (N,) recorded losses, one every ``every`` training steps (the shipped weights keep every 10th).
        every: training steps between two recorded losses; sets the step axis.
        smooth: moving-average window, in recorded losses.
        label: legend entry of the smoothed curve (to compare runs drawn into one ``ax``).
        color: line colour; default: matplotlib's next colour.
        ax: an Axes to draw into; default: a new 10 × 3.2 inch figure.
        title: a title over the plot.

    Returns:
        The figure; the loss axis is logarithmic.
    """
    values = _as_1d(losses, "losses")
    every, smooth = positive_int(every, "every"), positive_int(smooth, "smooth")
    fig, ax = _target_axes(ax, (BOOK_WIDTH, 3.2))
    steps = np.arange(1, values.size + 1) * every
    (line,) = ax.plot(steps, moving_average(values, smooth), color=color, lw=2,
                      label=label or f"moving average of {smooth * every} steps")
    ax.plot(steps, values, color=line.get_color(), lw=0.8, alpha=0.25)
    return _finish_loss_axes(fig, ax, xlabel="training step", title=title)


def plot_per_timestep_loss(
    centres: Any,
    losses: Any,
    *,
    label: str = "trained model",
    baselines: dict[str, Any] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Plot the loss against the timestep t (from ``sdlab.train.per_timestep_loss``), with reference curves.

    Args:
        centres: (K,) timesteps at the middle of each band.
        losses: (K,) mean loss in each band.
        label: legend entry of ``losses``.
        baselines: name -> (K,) losses of reference predictors at the same ``centres``, drawn dashed.
        ax: an Axes to draw into; default: a new 10 × 3.4 inch figure.
        title: a title over the plot.

    Returns:
        The figure; the loss axis is logarithmic.
    """
    t, values = _as_1d(centres, "centres"), _as_1d(losses, "losses")
    if t.size != values.size:
        raise ValueError(f"centres has {t.size} entries but losses has {values.size}")
    if baselines is not None and not isinstance(baselines, dict):
        raise TypeError(f"baselines must be a dict of name -> losses; got {type(baselines).__name__}")
    fig, ax = _target_axes(ax, (BOOK_WIDTH, 3.4))
    ax.plot(t, values, "o-", lw=2, ms=4, label=label, color="tab:blue", zorder=3)
    for i, (name, reference) in enumerate((baselines or {}).items()):
        ref = _as_1d(reference, f"baselines[{name!r}]")
        if ref.size != t.size:
            raise ValueError(f"baselines[{name!r}] has {ref.size} entries but centres has {t.size}")
        ax.plot(t, ref, "--", lw=1.5, label=name, color=f"C{i + 1}")
    return _finish_loss_axes(fig, ax, xlabel="timestep t (noisier →)", title=title)


def plot_noise_guesses(
    x_t: torch.Tensor,
    noise: torch.Tensor,
    noise_pred: torch.Tensor,
    pred_original: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    noise_scale: float = 2.5,
) -> Figure:
    """Show, per timestep (columns): the noisy input, the true noise ε, the model's ε̂ and the implied x̂0.

    Noise has unit variance, not values in [−1, 1], so ε and ε̂ are drawn as ε / ``noise_scale``
    (clipped): mid-grey is 0. x̂0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t (DDPM eq. 15) is drawn clipped to [−1, 1].

    Args:
        x_t, noise, noise_pred, pred_original: (N, C, H, W) each, one image per timestep.
        timesteps: the N timesteps, used as column titles.
        x0: optional (N, C, H, W) or (C, H, W) clean image(s), drawn as an extra first row.
        noise_scale: noise values are divided by this before drawing.

    Returns:
        The figure, with 4 (or 5) rows of N images.
    """
    steps = [int(t) for t in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
    given = {"x_t": x_t, "noise": noise, "noise_pred": noise_pred, "pred_original": pred_original}
    if x0 is not None:
        given = {"x0": x0.expand(len(steps), *x0.shape[-3:]) if isinstance(x0, torch.Tensor) else x0, **given}
    for arg, value in given.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] != len(steps):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{arg} must be an (N, C, H, W) tensor with N = {len(steps)} "
                             f"(one per timestep); got {shape}")
    labels = {"x0": "clean x₀", "x_t": "noisy input x_t", "noise": "true noise ε", "noise_pred": "guessed noise ε̂",
              "pred_original": "implied x̂₀"}
    rows = {labels[arg]: value for arg, value in given.items()}
    noise_scale = positive_number(noise_scale, "noise_scale")
    n = len(steps)
    cell = min(1.4, (BOOK_WIDTH - 1.4) / n)
    fig, axes = _subplots(len(rows), n, figsize=(cell * n + 1.4, cell * len(rows) + 0.35))
    for row, (name, images) in zip(axes, rows.items()):
        scale = noise_scale if "noise" in name else 1.0
        for ax, image in zip(row, images):
            imshow(ax, (image.detach().float() / scale).clamp(-1, 1))
        row[0].set_axis_on()
        row[0].set(xticks=[], yticks=[])
        row[0].spines[:].set_visible(False)
        row[0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    for ax, t in zip(axes[0], steps):
        ax.set_title(f"t = {t}", fontsize=10)
    return fig


def show_captioned_images(
    images: Any, captions: Sequence[str], *, ncols: int = 4, size: float = 2.2, wrap: int | None = None
) -> Figure:
    """Show images in a grid with a caption under each, wrapped to lines of at most ``wrap`` characters.

    Args:
        images: as in :func:`show_images`, e.g. a (B, 3, H, W) tensor in [-1, 1].
        captions: one string per image, e.g. ``SceneBatch.captions``.
        ncols: images per row. size: width of each image in inches. wrap: characters per caption line
            (default: as many as fit under the image, about 12.7 per inch).

    Returns:
        The figure, with one Axes per image.
    """
    items = _image_list(images)
    labels = _check_titles(captions, len(items), name="captions")
    ncols = positive_int(ncols, "ncols")
    size = number_in_range(size, "size", 0, BOOK_WIDTH, low_open=True, what="a number of inches")
    wrap = positive_int(wrap, "wrap") if wrap is not None else max(6, round(size * 12.7))
    lines = max(len(textwrap.wrap(label, wrap)) for label in labels)
    fig = show_images(items, ncols=ncols, size=size)
    fig.set_size_inches(fig.get_size_inches() + np.array([0.0, 0.17 * lines * math.ceil(len(items) / ncols)]))
    for ax, label in zip(fig.axes, labels):
        ax.set_axis_on()
        ax.set(xticks=[], yticks=[])
        ax.spines[:].set_visible(False)
        ax.set_xlabel(textwrap.fill(label, wrap), fontsize=9)
    return fig


def show_image_rows(rows: dict[str, Any], *, size: float = 1.1, suptitle: str | None = None,
                    cmap: str = "gray") -> Figure:
    """Show rows of images, each row named at its left: ``{"original": x, "restored": y}``.

    Args:
        rows: row name → images, each as in :func:`show_images` (e.g. a (B, 3, H, W) tensor); the
            rows may differ in length (the grid is as wide as the longest).
        size: width and height of each image in inches. suptitle: a title over the whole grid.
        cmap: colour map for one-channel images (an error image, a latent channel).

    Returns:
        The figure, with one Axes per image.
    """
    if not isinstance(rows, dict) or not rows:
        raise ValueError(f"rows must be a non-empty dict of row name -> images; got {type(rows).__name__}")
    items = {str(name): _image_list(images) for name, images in rows.items()}
    size = number_in_range(size, "size", 0, BOOK_WIDTH, low_open=True, what="a number of inches")
    ncols = max(len(row) for row in items.values())
    fig, axes = _subplots(len(items), ncols, figsize=(ncols * size + 0.9, len(items) * size + (0.4 if suptitle else 0)))
    for r, (name, row) in enumerate(items.items()):
        for c, ax in enumerate(axes[r]):
            if c >= len(row):
                ax.set_axis_off()
                continue
            imshow(ax, row[c], cmap=cmap, name=f"rows[{name!r}][{c}]")
        axes[r, 0].set_axis_on()
        axes[r, 0].set(xticks=[], yticks=[])
        axes[r, 0].spines[:].set_visible(False)
        axes[r, 0].set_ylabel(name, fontsize=10, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig


def plot_wording_adherence(rows: dict[str, dict[str, float]], *, title: str | None = None,
                           held_out: Sequence[str] = ()) -> Figure:
    """Adherence per family of wordings (`sd.guidance.wording_adherence`) as a table of shaded numbers.

    Args:
        rows: ``{family: {attribute: share right, ..., "all": ...}}``; an attribute a family does not
            state is left blank (it is free).
        held_out: the families kept out of training, marked with an asterisk.
    """
    if not isinstance(rows, dict) or not rows:
        raise ValueError("rows must be a non-empty {family: {attribute: share}} dict, as wording_adherence returns")
    columns = [c for c in (*ATTRIBUTES, "all")
               if any(c in row for row in rows.values())]
    values = np.array([[rows[f].get(c, np.nan) for c in columns] for f in rows], dtype=float)
    fig, axes = _subplots(1, 1, figsize=(BOOK_WIDTH, 0.9 + 0.26 * len(rows)))
    ax = axes[0, 0]
    ax.imshow(np.nan_to_num(values, nan=1.0), cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto",
              alpha=np.where(np.isnan(values), 0.0, 0.85))
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), [f + (" *" if f in set(held_out) else "") for f in rows], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
