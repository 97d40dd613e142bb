"""The Denoiser: a network, the SDE it was trained under, and what it predicts.

``Denoiser(net, sde, parameterization, time_input=...)`` calls ``net(x, time_input(t))`` once per
:meth:`Denoiser.predict` and converts the output to both ``x0`` and ``eps`` (k-diffusion's
``external.py`` wrappers and DPM-Solver's ``model_wrapper`` play this role in those libraries).
Every network call is counted in :attr:`Denoiser.nfe`, so the number of function evaluations is
measured, never inferred.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .parameterization import Parameterization, from_x0_eps, to_x0_eps
from .sde import SDE
from .utils import as_time, check_real, expand_to

__all__ = [
    "Denoiser",
    "ClassifierFreeGuidance",
    "Prediction",
    "TimeInput",
    "ContinuousTime",
    "TrainIndex",
    "SigmaInput",
    "LogSigmaInput",
]


# -------------------------------------------------------------------------------------------
# What the network receives as its time argument


class TimeInput:
    """Maps continuous ``t`` (float64) to the conditioning the network was trained on."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    @staticmethod
    def parse(value: TimeInput | str) -> TimeInput:
        if isinstance(value, TimeInput):
            return value
        choices = {
            "t": ContinuousTime, "index": TrainIndex, "sigma": SigmaInput, "log_sigma": LogSigmaInput,
        }  # fmt: skip
        if value not in choices:
            raise ValueError(
                f"time_input must be a TimeInput or one of {sorted(choices)}; got {value!r}"
            )
        return choices[value]()


class ContinuousTime(TimeInput):
    """``scale * t``: score_sde's continuous models (``scale=1``), or ``999 t``-style scalings."""

    def __init__(self, scale: float = 1.0):
        self.scale = check_real("scale", scale, low=0.0, low_open=True)

    def __call__(self, sde, t):
        return self.scale * t

    def __repr__(self):
        return f"ContinuousTime(scale={self.scale!r})"


class TrainIndex(TimeInput):
    """The (fractional) DDPM train step ``n = t N - 1`` from the schedule's own ``N``.

    Needs a schedule with ``t_to_index`` (:class:`~scoresde.sde.DiscreteVPSDE`); never a
    literal 1000 (cf. dpm-solver issue #60).
    """

    def __call__(self, sde, t):
        if not hasattr(sde, "t_to_index"):
            raise TypeError(
                f"time_input=TrainIndex() needs a discrete schedule with t_to_index "
                f"(DiscreteVPSDE); got {sde!r}"
            )
        return sde.t_to_index(t)


class SigmaInput(TimeInput):
    """``sigma(t) / alpha(t)``: the VE-equivalent noise level (EDM's and k-diffusion's sigma)."""

    def __call__(self, sde, t):
        return torch.exp(-sde.lambda_(t))


class LogSigmaInput(TimeInput):
    """``log(sigma / alpha) / 4``: EDM's ``c_noise`` (Karras et al. 2022, Table 1)."""

    def __call__(self, sde, t):
        return -0.25 * sde.lambda_(t)


# -------------------------------------------------------------------------------------------


class Prediction:
    """Both forms, ``x0`` and ``eps``, of one network evaluation at ``(x, t)``.

    ``Prediction(x0, eps)`` holds the two tensors (and unpacks as ``x0, eps = prediction``). The
    Denoiser builds it from the network's output and converts the form the network does not
    output on first access only: a sampler that reads ``eps`` of an eps-network pays no
    conversion (no ``alpha``, ``sigma``, no extra pass over the state).
    """

    __slots__ = ("_x0", "_eps", "_convert")

    def __init__(self, x0: Tensor | None = None, eps: Tensor | None = None, *, convert=None):
        if convert is None and (x0 is None or eps is None):
            raise ValueError("Prediction needs both x0 and eps (or a convert function)")
        self._x0, self._eps, self._convert = x0, eps, convert

    def _fill(self) -> None:
        self._x0, self._eps = self._convert()
        self._convert = None

    @property
    def x0(self) -> Tensor:
        if self._x0 is None:
            self._fill()
        return self._x0

    @property
    def eps(self) -> Tensor:
        if self._eps is None:
            self._fill()
        return self._eps

    def __iter__(self):
        return iter((self.x0, self.eps))

    def __repr__(self) -> str:
        return f"Prediction(x0={self.x0!r}, eps={self.eps!r})"


def _concat_kwargs(a: dict, b: dict) -> dict:
    if a.keys() != b.keys():
        raise ValueError(
            f"cond and uncond must have the same keys; got {sorted(a)} and {sorted(b)}"
        )
    return {k: torch.cat([a[k], b[k]]) if isinstance(a[k], Tensor) else a[k] for k in a}


class ClassifierFreeGuidance:
    r"""Classifier-free guidance (Ho & Salimans 2022, eq. 6):
    ``out = out_uncond + scale (out_cond - out_uncond)``.

    The conditional and unconditional inputs go through the network as one batch of twice the
    size (one network call, counted as one NFE, as in diffusers' pipelines). Combining the
    network's native output is the same as combining ``eps`` or ``x0``: the conversions are affine
    in the output with coefficients that depend on ``(x, t)`` only.

    Args:
        scale: guidance scale ``w`` (1 = conditional model, 0 = unconditional).
        cond: keyword arguments of the conditional call (e.g. ``{"class_labels": y}``).
        uncond: keyword arguments of the unconditional call, same keys (e.g. the null class).
    """

    def __init__(self, scale: float, cond: dict, uncond: dict):
        self.scale = check_real("scale", scale)
        self.cond, self.uncond = dict(cond), dict(uncond)
        self._both = _concat_kwargs(self.cond, self.uncond)

    def __call__(self, net, x: Tensor, t_in: Tensor) -> Tensor:
        out = net(torch.cat([x, x]), torch.cat([t_in, t_in]), **self._both)
        out_cond, out_uncond = out.chunk(2)
        return out_uncond + self.scale * (out_cond - out_uncond)

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(scale={self.scale!r}, keys={sorted(self.cond)})"


class Denoiser:
    """A network wrapped with its SDE, parameterization and time conditioning.

    Args:
        net: callable ``net(x, t_in)`` with ``x`` of shape ``(batch, *dims)`` and ``t_in`` of shape
            ``(batch,)``, returning a tensor shaped like ``x``.
        sde: the forward process the network was trained under.
        parameterization: what ``net`` outputs (:class:`Parameterization` or its name).
        time_input: how continuous ``t`` maps to ``t_in``; a :class:`TimeInput` or one of
            ``"t"``, ``"index"``, ``"sigma"``, ``"log_sigma"``.
        model_kwargs: extra keyword arguments for every network call (class labels, text
            embeddings, ...).
        guidance: a :class:`ClassifierFreeGuidance` (or any callable ``(net, x, t_in) -> out``)
            that replaces the plain call; every sampler then samples the guided model.
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor], Tensor],
        sde: SDE,
        parameterization: Parameterization | str = Parameterization.EPS,
        *,
        time_input: TimeInput | str = "t",
        model_kwargs: dict | None = None,
        guidance: Callable[..., Tensor] | None = None,
    ):
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t); got {type(net).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoresde.SDE; got {type(sde).__name__}")
        self.net = net
        self.sde = sde
        self.parameterization = Parameterization.parse(parameterization)
        self.time_input = TimeInput.parse(time_input)
        self.model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
        if guidance is not None and not callable(guidance):
            raise TypeError(
                f"guidance must be callable as guidance(net, x, t_in); got {guidance!r}"
            )
        if guidance is not None and self.model_kwargs:
            raise ValueError(
                "give conditioning either as model_kwargs or inside guidance (cond/uncond), not both; "
                f"got model_kwargs keys {sorted(self.model_kwargs)}"
            )
        self.guidance = guidance
        self.nfe = 0
        self.last: Prediction | None = None

    def __repr__(self) -> str:
        net = type(self.net).__name__
        extra = "" if self.guidance is None else f", guidance={self.guidance!r}"
        return (
            f"Denoiser(net={net}, sde={self.sde!r}, parameterization={self.parameterization.value!r}, "
            f"time_input={self.time_input!r}{extra})"
        )

    def reset_nfe(self) -> None:
        self.nfe = 0

    def _batch_time(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time(t).to(x.device)
        if t.ndim == 0:
            return t.expand(x.shape[0])
        if t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t of shape {tuple(t.shape)} does not match the batch of x {tuple(x.shape)}"
            )
        return t

    def raw(self, x: Tensor, t: Tensor | float) -> Tensor:
        """One network call at ``(x, t)``, in the network's own parameterization."""
        return self._call(x, self._batch_time(x, t))

    def _call(self, x: Tensor, t: Tensor) -> Tensor:
        """:meth:`raw` for ``t`` already batched by :meth:`_batch_time`."""
        t_in = self.time_input(self.sde, t).to(x.dtype)
        if self.guidance is None:
            out = self.net(x, t_in, **self.model_kwargs)
        else:
            out = self.guidance(self.net, x, t_in)
        self.nfe += 1
        if out.shape != x.shape:
            raise ValueError(
                f"the network returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; "
                "a denoiser's output must have the shape of its input"
            )
        return out

    def _alpha_sigma(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.sde.alpha_sigma(t)
        return expand_to(alpha, x), expand_to(sigma, x)

    def predict(self, x: Tensor, t: Tensor | float) -> Prediction:
        """``(x0, eps)`` from one network call; the form the network does not output is
        converted when first read (see :class:`Prediction`)."""
        t = self._batch_time(x, t)
        out = self._call(x, t)
        p = self.parameterization

        def convert() -> tuple[Tensor, Tensor]:
            return to_x0_eps(out, x, *self._alpha_sigma(x, t), p)

        known = {Parameterization.EPS: (None, out), Parameterization.X0: (out, None)}
        self.last = Prediction(*known.get(p, (None, None)), convert=convert)
        return self.last

    def _as(self, x: Tensor, t: Tensor | float, parameterization: Parameterization) -> Tensor:
        pred = self.predict(x, t)
        alpha, sigma = self._alpha_sigma(x, self._batch_time(x, t))
        return from_x0_eps(pred.x0, pred.eps, alpha, sigma, parameterization)

    def x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.predict(x, t).x0

    def eps(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.predict(x, t).eps

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self._as(x, t, Parameterization.SCORE)

    def v(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self._as(x, t, Parameterization.V)
