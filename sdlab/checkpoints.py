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

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_weights", "save_pretrained",
           "load_pretrained", "check_fits", "WEIGHTS_DIR"]

_OPTIMIZER_TENSOR = re.compile(r"optimizer\.(\d+)\.(.+)")  # optimizer.<parameter id>.<state key>
_OPTIMIZER_SCALAR = re.compile(r"(\d+)\.(.+)")
_TRAINING_PREFIXES = ("ema.", "optimizer.", "rng.")  # save_pretrained writes none of these


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state into tensors (``optimizer.<id>.<key>``) and JSON metadata.

    Args:
        optimizer: the optimizer to save.

    Returns:
        ``(tensors, meta)``; ``meta`` holds the param groups and the non-tensor state values.
    """
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild an optimizer ``state_dict`` from what `_flatten_optimizer` made (validated by `_read`).

    Args:
        tensors: the file's tensors; only the ``optimizer.*`` ones are used.
        meta: the file's ``optimizer`` metadata.

    Returns:
        A dict for ``optimizer.load_state_dict``.
    """
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        match = _OPTIMIZER_TENSOR.fullmatch(name)
        if match:
            state.setdefault(int(match[1]), {})[match[2]] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


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


def _malformed(path: Path, what: str) -> CheckpointError:
    """The error for metadata of the wrong structure: ``what`` says which part and what it holds."""
    return CheckpointError(f"{path} has malformed sdlab metadata: {what}")


def _is_int(value: Any) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_optimizer_meta(opt: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Check the structure of the ``optimizer`` metadata and the names of the ``optimizer.*`` tensors.

    Args:
        opt: the metadata's ``optimizer`` value.
        tensors: the file's tensors.
        path: the file, for messages.

    Raises:
        CheckpointError: something is not as `save_checkpoint` writes it.
    """
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list) \
            or not isinstance(opt.get("scalars"), dict):
        raise _malformed(path, f"'optimizer' must be an object with a 'param_groups' list and a 'scalars' object; "
                               f"got {json.dumps(opt)[:200]}")
    for i, group in enumerate(opt["param_groups"]):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(_is_int(p) for p in params):
            raise _malformed(path, f"optimizer param group {i} must be an object whose 'params' is a list of "
                                   f"ints; got {json.dumps(group)[:200]}")
    bad = [key for key in opt["scalars"] if not _OPTIMIZER_SCALAR.fullmatch(key)]
    bad += [name for name in tensors if name.startswith("optimizer.") and not _OPTIMIZER_TENSOR.fullmatch(name)]
    if bad:
        raise _malformed(path, f"optimizer state names must read '<parameter id>.<key>'; got {bad[:5]}")


def _check_meta(meta: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Check that the sdlab metadata has the structure `save_checkpoint` writes.

    Args:
        meta: the decoded JSON.
        tensors: the file's tensors.
        path: the file, for messages.

    Raises:
        CheckpointError: naming the first part that is of the wrong kind.
    """
    if not isinstance(meta, dict):
        raise _malformed(path, f"expected an object with 'step' and 'info'; got {type(meta).__name__} "
                               f"{json.dumps(meta)[:100]}")
    if not _is_int(meta.get("step")) or meta["step"] < 0:
        raise _malformed(path, f"'step' must be an int >= 0; got {meta['step']!r}" if "step" in meta
                         else "'step' (an int >= 0) is missing")
    if not isinstance(meta.get("info"), dict):
        raise _malformed(path, f"'info' must be an object; got {type(meta['info']).__name__}" if "info" in meta
                         else "'info' (an object) is missing")
    if "optimizer" in meta or any(name.startswith("optimizer.") for name in tensors):
        _check_optimizer_meta(meta.get("optimizer"), tensors, path)
    if "rng_device" in meta:
        try:
            torch.device(meta["rng_device"])
        except (RuntimeError, TypeError) as error:
            raise _malformed(path, f"'rng_device' must name a device; got {meta['rng_device']!r}") from error


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


def _listed(names: list[str]) -> str:
    """``names`` for a message: the first five, and an ellipsis if there are more."""
    return f"{names[:5]}{'…' if len(names) > 5 else ''}"


def check_fits(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: str | os.PathLike
               ) -> dict[str, torch.Tensor]:
    """Check, without loading anything, that the file's ``prefix.*`` tensors fit ``module`` exactly.

    Args:
        module: the module the tensors are meant for.
        tensors: a file's tensors, as `_read` returns them.
        prefix: ``"model"`` or ``"ema"``.
        path: the file, for messages.

    Returns:
        The module's tensors from the file, keyed as in ``module.state_dict()``, ready for ``load_state_dict``.

    Raises:
        CheckpointError: no such tensors, missing or unexpected keys, or a shape that differs.
    """
    own = module.state_dict()
    found = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not found and own:
        held = sorted({k.split(".", 1)[0] + ".*" for k in tensors})
        raise CheckpointError(f"{path} holds no {prefix}.* tensors to load into {type(module).__name__}; "
                              f"it holds {held or 'no tensors'}")
    missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit this model ({prefix}): {len(missing)} missing keys "
                              f"{_listed(missing)}, {len(unexpected)} unexpected keys {_listed(unexpected)}")
    wrong = [f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
             if found[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} has {len(wrong)} tensors of the wrong shape for this model ({prefix}): "
                              f"{_listed(wrong)}")
    return found


def _load_into(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    """Load ``prefix.*`` tensors into ``module`` after `check_fits` (so a misfit changes nothing).

    Args:
        module, tensors, prefix, path: as for `check_fits`.
    """
    module.load_state_dict(check_fits(module, tensors, prefix, path))


def _check_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, path: Path
                     ) -> dict:
    """Check that the file's optimizer state fits ``optimizer``: groups, parameters per group, state shapes.

    A state tensor must have its parameter's shape, except for 0-d ones (such as Adam's ``step``).

    Args:
        optimizer: the optimizer to resume.
        tensors, meta: the file's, as `_read` returns them.
        path: the file, for messages.

    Returns:
        The ``state_dict`` to pass to ``optimizer.load_state_dict``.

    Raises:
        CheckpointError: naming the group, parameter or state entry that does not fit.
    """
    if "optimizer" not in meta:
        raise CheckpointError(f"{path} holds no optimizer state; it cannot resume training")
    saved = _unflatten_optimizer(tensors, meta["optimizer"])
    groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    if len(saved_groups) != len(groups):
        raise CheckpointError(f"{path} holds optimizer state for {len(saved_groups)} param groups; "
                              f"this optimizer has {len(groups)}")
    for i, (group, saved_group) in enumerate(zip(groups, saved_groups)):
        if len(saved_group["params"]) != len(group["params"]):
            raise CheckpointError(f"{path}: optimizer param group {i} holds {len(saved_group['params'])} parameters "
                                  f"in the checkpoint, {len(group['params'])} in this optimizer "
                                  f"(an optimizer over other parameters?)")
    params = {pid: p for g, sg in zip(groups, saved_groups) for pid, p in zip(sg["params"], g["params"])}
    unlisted = sorted(set(saved["state"]) - set(params))
    if unlisted:
        raise CheckpointError(f"{path} holds optimizer state for parameter ids {unlisted[:5]} that no param group "
                              f"lists (the groups list {sorted(params)[:5]}…)")
    wrong = [f"parameter {pid} '{key}': checkpoint {tuple(value.shape)} vs parameter {tuple(params[pid].shape)}"
             for pid, values in saved["state"].items() for key, value in values.items()
             if isinstance(value, torch.Tensor) and value.dim() and value.shape != params[pid].shape]
    if wrong:
        raise CheckpointError(f"{path} has {len(wrong)} optimizer state tensors of the wrong shape for this "
                              f"optimizer's parameters: {_listed(wrong)}")
    return saved


def _check_generator(generator: torch.Generator, tensors: dict[str, torch.Tensor], meta: dict, path: Path
                     ) -> torch.Tensor:
    """Check that the file's random-number state fits ``generator``: same device type, same size.

    Args:
        generator: the generator to resume.
        tensors, meta: the file's, as `_read` returns them.
        path: the file, for messages.

    Returns:
        The state to pass to ``generator.set_state``.

    Raises:
        CheckpointError: no state in the file, or one of another device type or size.
    """
    if "rng.state" not in tensors:
        raise CheckpointError(f"{path} holds no random-number state; it cannot resume identically")
    state, own = tensors["rng.state"], generator.get_state()
    saved_type = torch.device(meta["rng_device"]).type if "rng_device" in meta else None
    if saved_type is not None and saved_type != generator.device.type:
        raise CheckpointError(f"{path} holds the random-number state of a {saved_type} generator; "
                              f"it does not fit this {generator.device.type} generator")
    if state.dtype != own.dtype or state.shape != own.shape:
        raise CheckpointError(f"{path} holds a random-number state of {tuple(state.shape)} {state.dtype}; "
                              f"this {generator.device.type} generator's is {tuple(own.shape)} {own.dtype}")
    return state


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
