"""Checkpoints as safetensors: written atomically, loaded with key and shape checks.

A checkpoint is one ``.safetensors`` file. Tensors are stored under prefixes
(``model.``, ``ema.``, ``optimizer.``, ``rng.``); everything else (step,
config, loss history, optimizer hyper-parameters) is JSON in the file's
metadata. Nothing is ever unpickled, so a checkpoint cannot run code.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_weights", "save_pretrained", "load_pretrained"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
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
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


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

    A crash while writing leaves the previous checkpoint at ``path`` intact.
    ``info`` is any JSON-serialisable dict (config, loss history).
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
    return path


def _read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
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
    return tensors, meta


def _load_into(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    """Load ``prefix.*`` tensors into ``module``, refusing missing, unexpected or misshapen keys."""
    own = module.state_dict()
    found = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing, unexpected = sorted(set(own) - set(found)), sorted(set(found) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this model ({prefix}): missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    wrong = [f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
             if found[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} has tensors of the wrong shape for this model: {wrong[:5]}")
    module.load_state_dict(found)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> dict:
    """Restore what ``save_checkpoint`` wrote into the given objects; return ``{"step", "info"}``.

    Raises:
        CheckpointError: the file is missing or corrupt, or its keys or shapes do not match.
    """
    path = Path(path)
    tensors, meta = _read(path)
    _load_into(model, tensors, "model", path)
    if ema is not None:
        _load_into(ema, tensors, "ema", path)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{path} holds no optimizer state; it cannot resume training")
        opt = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        optimizer.load_state_dict(_unflatten_optimizer(opt, meta["optimizer"]))
    if generator is not None:
        if "rng.state" not in tensors:
            raise CheckpointError(f"{path} holds no random-number state; it cannot resume identically")
        generator.set_state(tensors["rng.state"])
    return {"step": meta["step"], "info": meta["info"]}


def load_weights(path: str | os.PathLike, model: nn.Module, *, prefer_ema: bool = True) -> nn.Module:
    """Load model weights (the EMA copy when present and ``prefer_ema``) and return the model."""
    path = Path(path)
    tensors, _ = _read(path)
    prefix = "ema" if prefer_ema and any(k.startswith("ema.") for k in tensors) else "model"
    _load_into(model, tensors, prefix, path)
    return model


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def save_pretrained(path: str | os.PathLike, model: nn.Module, *, info: dict | None = None,
                    dtype: torch.dtype = torch.float16) -> Path:
    """Ship a trained sdlab UNet: its weights in ``dtype`` and its config, atomically, in one file."""
    from dataclasses import asdict

    shipped = copy.deepcopy(model).to(dtype=dtype)
    return save_checkpoint(path, model=shipped, info={"config": asdict(model.config), **(info or {})})


def load_pretrained(name_or_path: str | os.PathLike, *, device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """Load shipped weights by name (e.g. ``"scenes32"``) or path; return ``(model in eval mode, info)``.

    The file's config rebuilds the right UNet, so no settings need to be repeated.
    """
    from sdlab.unet import UNet, UNetConfig

    path = Path(name_or_path)
    if not path.suffix:
        path = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    tensors, meta = _read(path)
    config = UNetConfig.from_dict(meta["info"]["config"])
    model = UNet(config)
    _load_into(model, tensors, "model", path)
    return model.to(device or "cpu").eval(), meta["info"]
