"""Small helpers shared by every module: broadcasting, time conversion, argument checks."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

__all__ = [
    "expand_to",
    "as_time",
    "first_sentence",
    "check_bool",
    "check_real",
    "check_int",
    "check_device",
    "check_writable",
    "interp",
]


def expand_to(c: Tensor | float, x: Tensor) -> Tensor:
    """Reshape a scalar or ``(batch,)`` coefficient so it broadcasts against ``x``.

    ``x`` has shape ``(batch, *dims)`` with any number of trailing dims (k-diffusion's
    ``append_dims``). The coefficient is cast to ``x``'s dtype and device.
    """
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    if c.ndim == 0:
        return c
    if c.ndim != 1:
        raise ValueError(
            f"coefficient must be a scalar or a (batch,) tensor; got shape {tuple(c.shape)}"
        )
    if x.ndim == 0 or c.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"coefficient of shape {tuple(c.shape)} does not match the batch of x with shape "
            f"{tuple(x.shape)}; expected (1,) or ({x.shape[0] if x.ndim else '?'},)"
        )
    return c.reshape(c.shape[0], *([1] * (x.ndim - 1)))


def as_time(t: Tensor | float) -> Tensor:
    """A time as a float64 tensor (0-d or ``(batch,)``), on the device it came from.

    Schedules are evaluated in float64: near ``t_min`` the differences of ``lambda_`` that the
    solvers need lose about six digits in float32.
    """
    if isinstance(t, Tensor):
        if t.ndim > 1:
            raise ValueError(f"t must be a scalar or a (batch,) tensor; got shape {tuple(t.shape)}")
        return t.to(torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


def check_real(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """Validate a finite real number in a range; the error names argument, value and range."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    expect = f"a finite real number in {lo}{low if low is not None else '-inf'}, "
    expect += f"{high if high is not None else 'inf'}{hi}"
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be {expect}; got {value!r}")
    v = float(value)
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        raise ValueError(f"{name} must be {expect}; got {value!r}")
    return v


def first_sentence(err: BaseException, limit: int = 100) -> str:
    """The first sentence of an exception's message (a library's advice stripped), for errors
    that name a file and say what is wrong with it in one line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0][:limit]


def describe(value, limit: int = 60) -> str:
    """``value``'s repr (cut at ``limit`` characters) and its type, for error messages."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (True or False); got {value!r}")
    return value


def check_int(name: str, value, *, low: int | None = None) -> int:
    """Validate an integer (not a bool; numpy integers count) with an optional lower bound."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(
            f"{name} must be an int{f' >= {low}' if low is not None else ''}; got {value!r}"
        )
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def check_device(name: str, value) -> torch.device:
    """Validate a device string or ``torch.device`` that this machine can use."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name} must be a torch device such as 'cpu' or 'cuda'; got {value!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={value!r} but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"{name}={value!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={value!r} but MPS is not available on this machine")
    return device


def check_writable(name: str, path, suffixes: tuple[str, ...]):
    """Validate an output file before any work is spent on it: its suffix is one of
    ``suffixes`` (lower case, with the dot), it is not a folder, and its folder exists (it is
    created) and is writable. Returns the path as a ``pathlib.Path``."""
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{name} must end in one of {list(suffixes)}; got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{name} must be a file; {str(path)!r} is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name}: cannot create the folder of {str(path)!r} ({err})") from None
    existed = path.exists()
    try:  # the one reliable test of writability is to open the file for writing
        with open(path, "ab"):
            pass
    except OSError as err:
        raise ValueError(f"{name}: cannot write {str(path)!r} ({err.strerror})") from None
    if not existed:
        path.unlink()
    return path


def interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``fp(xp)`` at ``x``, extrapolating linearly at both ends.

    ``xp`` must be strictly increasing. Differentiable and free of host syncs, unlike
    ``numpy.interp`` (DPM-Solver's ``interpolate_fn`` plays the same role).
    """
    k = torch.searchsorted(xp, x.contiguous()).clamp(1, xp.numel() - 1)
    x0, x1 = xp[k - 1], xp[k]
    f0, f1 = fp[k - 1], fp[k]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)
