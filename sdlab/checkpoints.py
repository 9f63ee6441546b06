"""Checkpoints as safetensors: written atomically, validated in full before anything is loaded.

A checkpoint is one ``.safetensors`` file. Tensors are stored under prefixes
(``model.``, ``ema.``, ``optimizer.``, ``rng.``); everything else (step,
config, loss history, optimizer hyper-parameters) is JSON in the file's
metadata. Nothing is ever unpickled, so a checkpoint cannot run code.

Loading never half-succeeds: every part of a file is checked against the
objects it is loaded into before any of them changes, and anything that does
not fit raises a `CheckpointError` that says what was found and what fits.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from sdlab.checkpoint_format import (  # noqa: F401
    _TRAINING_PREFIXES,
    CheckpointError,
    _check_generator,
    _check_meta,
    _check_optimizer,
    _flatten_optimizer,
    check_fits,
)

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_weights", "save_pretrained",
           "load_pretrained", "check_fits", "WEIGHTS_DIR"]

def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files that earlier, killed saves to ``path`` left in its folder.

    Only names `save_checkpoint` makes for this very target match (``.{name}.<random>.tmp``, the random
    part without dots), so temporary files of other targets, such as ``{name}.bak``, stay. A save to the
    same path running at this moment in another process would lose its temporary file: don't do that.

    Args:
        path: the checkpoint just written.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"[^.]+\.tmp")
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_file():
            try:
                entry.unlink()
            except OSError:  # gone already, or not ours to delete: the save itself succeeded
                pass


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write a safetensors file to a temporary file next to ``path``, then rename it over ``path``.

    Args:
        path: the file to write; it is left as it was if writing fails.
        tensors: CPU tensors that share no storage.
        meta: JSON-serialisable metadata, stored under ``"sdlab"``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"sdlab": json.dumps(meta)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made the file private; give it the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _remove_stale_temps(path)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    step: int = 0,
    info: dict | None = None,
) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, then a rename.

    A crash while writing leaves the previous checkpoint at ``path`` intact; the temporary file that a
    killed save leaves behind is removed by the next save to ``path`` that succeeds.

    Args:
        path: the ``.safetensors`` file to write.
        model, ema: modules whose state is saved under ``model.`` and ``ema.``.
        optimizer, generator: saved too when given, so that training can resume exactly.
        step: the number of steps done.
        info: any JSON-serialisable dict (config, loss history).

    Returns:
        ``path``, as a `Path`.
    """
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    meta: dict[str, Any] = {"step": step, "info": info or {}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    if generator is not None:
        tensors["rng.state"] = generator.get_state()
        meta["rng_device"] = str(generator.device)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}  # copies: no shared storage
    _write_atomically(path, tensors, meta)
    return path


def _read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint's tensors and its validated metadata in one pass.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``(tensors, meta)``: every tensor by name, and the sdlab metadata, which has an int ``step``, a dict
        ``info`` and, when present, well-formed ``optimizer`` and ``rng_device`` entries. A safetensors file
        without sdlab metadata reads as ``{"step": 0, "info": {}}``.

    Raises:
        CheckpointError: the file is missing, unreadable, or its metadata is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(path, framework="pt") as f:  # one read gives both the tensors and the metadata
            raw = (f.metadata() or {}).get("sdlab")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from error
    try:
        meta = json.loads(raw) if raw else {"step": 0, "info": {}}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} has unreadable sdlab metadata: {error}") from error
    _check_meta(meta, tensors, path)
    return tensors, meta


def _load_into(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    """Load ``prefix.*`` tensors into ``module`` after `check_fits` (so a misfit changes nothing).

    Args:
        module, tensors, prefix, path: as for `check_fits`.
    """
    module.load_state_dict(check_fits(module, tensors, prefix, path))


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> dict:
    """Restore what `save_checkpoint` wrote into the given objects, all or nothing.

    Everything is checked before anything is loaded, so after a `CheckpointError` the model, EMA,
    optimizer and generator are exactly as they were.

    Args:
        path: the checkpoint file.
        model, ema, optimizer, generator: the objects to restore; those left ``None`` are not read.

    Returns:
        ``{"step": int, "info": dict}`` as saved.

    Raises:
        CheckpointError: the file is missing, corrupt or malformed, or a part of it does not fit.
    """
    path = Path(path)
    tensors, meta = _read(path)
    model_state = check_fits(model, tensors, "model", path)
    ema_state = check_fits(ema, tensors, "ema", path) if ema is not None else None
    opt_state = _check_optimizer(optimizer, tensors, meta, path) if optimizer is not None else None
    rng_state = _check_generator(generator, tensors, meta, path) if generator is not None else None
    # Only now load. PyTorch checks the generator and optimizer states again, so those go first; the
    # generator's old state is restored should the optimizer still refuse.
    old_rng = generator.get_state() if rng_state is not None else None
    try:
        if rng_state is not None:
            generator.set_state(rng_state)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        if old_rng is not None:
            generator.set_state(old_rng)
        raise CheckpointError(f"{path}: PyTorch refused the saved optimizer or random-number state: {error}") from error
    if ema_state is not None:
        ema.load_state_dict(ema_state)
    model.load_state_dict(model_state)
    return {"step": meta["step"], "info": meta["info"]}


def load_weights(path: str | os.PathLike, model: nn.Module, *, prefer_ema: bool = True) -> nn.Module:
    """Load model weights (the EMA copy when present and ``prefer_ema``) into ``model``.

    Args:
        path: a checkpoint or shipped-weights file.
        model: the module to load into; unchanged if the weights do not fit.
        prefer_ema: take the ``ema.*`` tensors when the file has them.

    Returns:
        ``model``.

    Raises:
        CheckpointError: the file is missing, corrupt or malformed, or its weights do not fit.
    """
    path = Path(path)
    tensors, _ = _read(path)
    prefix = "ema" if prefer_ema and any(k.startswith("ema.") for k in tensors) else "model"
    _load_into(model, tensors, prefix, path)
    return model


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def save_pretrained(path: str | os.PathLike, model: nn.Module, **kwargs: Any) -> Path:
    """Deprecated: moved to :func:`sdlab.pretrained.save_pretrained`, the registry of shipped weights."""
    from sdlab import pretrained

    warnings.warn("sd.checkpoints.save_pretrained has moved: use sd.pretrained.save_pretrained",
                  DeprecationWarning, stacklevel=2)
    return pretrained.save_pretrained(path, model, **kwargs)


def load_pretrained(name_or_path: str | os.PathLike, *, device: torch.device | str | None = None
                    ) -> tuple[nn.Module, dict]:
    """Deprecated: moved to :func:`sdlab.pretrained.load_pretrained`, which loads every shipped model."""
    from sdlab import pretrained

    warnings.warn("sd.checkpoints.load_pretrained has moved: use sd.pretrained.load_pretrained",
                  DeprecationWarning, stacklevel=2)
    return pretrained.load_pretrained(name_or_path, device=device)
