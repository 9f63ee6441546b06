"""The checkpoint file format of `sdlab.checkpoints`: how optimizer state is laid out, and its checks.

Everything a file holds is checked here against the objects it is loaded into before any of
them changes; `sdlab.checkpoints` reads, writes and loads. What does not fit is a
`CheckpointError` that says what was found and what fits.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CheckpointError", "check_fits"]

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
