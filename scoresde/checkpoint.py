"""Checkpoints: atomic writes, and rebuilding a :class:`~scoresde.Denoiser` from the file alone.

A checkpoint is a ``torch.save`` dict. Every one records how to rebuild the sampler-side object:
``"sde"`` and ``"time_input"`` (as ``{"name", "args"}``), ``"parameterization"``, ``"model_config"``
and the EMA weights ``"ema"``. A *training* checkpoint also holds ``"model"``, ``"optimizer"``,
``"step"`` and ``"rng"`` (every random state), which :func:`scoresde.train.train` resumes from;
:func:`export` strips those for a small sampling checkpoint.

:func:`atomic_save` writes to a temporary file in the target's directory, ``fsync``s it,
``os.replace``s it over the target (atomic on POSIX) and ``fsync``s the directory, so a process
killed at any moment leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .denoiser import ContinuousTime, Denoiser, LogSigmaInput, SigmaInput, TimeInput, TrainIndex
from .models import build_model
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE, RectifiedFlow, SubVPSDE
from .utils import check_device, first_sentence

__all__ = [
    "FORMAT",
    "atomic_save",
    "load",
    "sde_to_dict",
    "sde_from_dict",
    "time_input_to_dict",
    "time_input_from_dict",
    "load_denoiser",
    "export",
]

FORMAT = "scoresde-checkpoint-v1"
# what every checkpoint, training or exported, holds (module docstring)
_SAMPLING_KEYS = ("sde", "time_input", "parameterization", "model_config", "ema")
_SDES = {"VPSDE": VPSDE, "SubVPSDE": SubVPSDE, "VESDE": VESDE, "RectifiedFlow": RectifiedFlow}
_TIME_INPUTS = {
    "ContinuousTime": ContinuousTime, "TrainIndex": TrainIndex,
    "SigmaInput": SigmaInput, "LogSigmaInput": LogSigmaInput,
}  # fmt: skip


def sde_to_dict(sde: SDE) -> dict[str, Any]:
    if isinstance(sde, DiscreteVPSDE):
        return {"name": "DiscreteVPSDE", "args": {"betas": sde.betas.tolist(), "name": sde.name}}
    name = type(sde).__name__
    if name not in _SDES:
        raise ValueError(
            f"cannot serialise SDE {sde!r}; supported: {sorted(_SDES) + ['DiscreteVPSDE']}"
        )
    return {"name": name, "args": sde._repr_args()}


def sde_from_dict(d: dict[str, Any]) -> SDE:
    if d.get("name") == "DiscreteVPSDE":
        return DiscreteVPSDE(
            torch.tensor(d["args"]["betas"], dtype=torch.float64), name=d["args"]["name"]
        )
    if d.get("name") not in _SDES:
        raise ValueError(
            f"unknown SDE {d.get('name')!r} in checkpoint; expected one of {sorted(_SDES)}"
        )
    return _SDES[d["name"]](**d["args"])


def time_input_to_dict(ti: TimeInput) -> dict[str, Any]:
    name = type(ti).__name__
    if name not in _TIME_INPUTS:
        raise ValueError(f"cannot serialise time input {ti!r}; supported: {sorted(_TIME_INPUTS)}")
    return {"name": name, "args": dict(vars(ti))}


def time_input_from_dict(d: dict[str, Any]) -> TimeInput:
    if d.get("name") not in _TIME_INPUTS:
        raise ValueError(
            f"unknown time input {d.get('name')!r}; expected one of {sorted(_TIME_INPUTS)}"
        )
    return _TIME_INPUTS[d["name"]](**d["args"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically: temp file + fsync + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        # an exception (not a kill) can still tidy up; a killed process leaves only the temp file
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :mod:`scoresde.train` or :func:`export`; checks the format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    if not callable(map_location) and not isinstance(map_location, dict):
        check_device("map_location", map_location)
    try:
        # weights_only: plain tensors, dicts, lists and numbers only (no pickled code)
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load raises a zoo of types on a damaged file
        raise ValueError(
            f"{str(path)!r} is not a readable scoresde checkpoint (empty, truncated or not "
            f"written by torch.save: {first_sentence(err)})"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a scoresde checkpoint (expected format {FORMAT!r})")
    missing = sorted(set(_SAMPLING_KEYS) - set(ckpt))
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks the keys {missing}; it is incomplete")
    return ckpt


def load_denoiser(
    path_or_ckpt: str | os.PathLike | dict[str, Any],
    *,
    ema: bool = True,
    map_location: str | torch.device = "cpu",
) -> Denoiser:
    """The :class:`~scoresde.Denoiser` a checkpoint describes, with its EMA weights (or the raw
    training weights with ``ema=False``), in eval mode."""
    ckpt = (
        path_or_ckpt
        if isinstance(path_or_ckpt, dict)
        else load(path_or_ckpt, map_location=map_location)
    )
    key = "ema" if ema else "model"
    if key not in ckpt:
        raise ValueError(f"checkpoint holds no {key!r} weights (keys: {sorted(ckpt)})")
    net = build_model(ckpt["model_config"])
    try:
        net.load_state_dict(ckpt[key])
    except (RuntimeError, TypeError, AttributeError) as err:
        where = "the checkpoint" if isinstance(path_or_ckpt, dict) else repr(str(path_or_ckpt))
        raise ValueError(
            f"{where} holds {key!r} weights that do not fit its model_config "
            f"({first_sentence(err)})"
        ) from err
    net.eval().requires_grad_(False)
    return Denoiser(
        net,
        sde_from_dict(ckpt["sde"]),
        ckpt["parameterization"],
        time_input=time_input_from_dict(ckpt["time_input"]),
    )


def export(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a sampling checkpoint (EMA weights and how to rebuild the Denoiser, no optimizer or
    RNG state) of the training checkpoint ``src`` to ``dst``, atomically."""
    ckpt = load(src)
    keep = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng")}
    atomic_save(keep, dst)
