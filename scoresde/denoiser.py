"""The Denoiser: a network, the SDE it was trained under, and what it predicts.

``Denoiser(net, sde, parameterization, time_input=...)`` calls ``net(x, time_input(t))`` once per
:meth:`Denoiser.predict` and converts the output to ``x0`` and ``eps``, each when first read
(k-diffusion's ``external.py`` wrappers and DPM-Solver's ``model_wrapper`` play this role in
those libraries). :meth:`Denoiser.times` prepares the times of a whole grid at once, so that a
sampler's loop evaluates no schedule.
Every network call is counted in :attr:`Denoiser.nfe`, so the number of function evaluations is
measured, never inferred.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .corrections import X0Correction
from .parameterization import Parameterization, derivatives_for, from_x0_eps, to_eps, to_x0
from .sde import SDE
from .utils import as_time, check_bool, check_real, describe, expand_to

__all__ = [
    "Denoiser",
    "ClassifierFreeGuidance",
    "Prediction",
    "TimePoint",
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


class TimePoint:
    """The time of one network call, prepared: the batch times ``t`` (float64), the network's
    conditioning ``t_in``, and the schedule there (``alpha``, ``sigma`` and, for flow
    conversions, ``d_alpha``, ``d_sigma``) in the state's dtype, broadcastable to it.

    :meth:`Denoiser.times` builds one per grid time once per run, so a sampler's step passes
    ``times[i]`` to :meth:`Denoiser.predict` and no schedule is evaluated inside the loop; given
    a plain ``t``, :meth:`Denoiser.predict` builds one itself and evaluates the schedule only if
    a conversion needs it. Read-only once built (a deep copy is the object itself)."""

    __slots__ = ("t", "t_in", "noise_level", "_sde", "_like", "_alpha", "_sigma", "_d", "_values")

    def __init__(
        self, t, t_in, sde, like, *, noise_level=None, alpha=None, sigma=None, d=None, values=None
    ):
        self.t, self.t_in, self.noise_level = t, t_in, noise_level
        self._sde, self._like = sde, like
        self._alpha, self._sigma, self._d = alpha, sigma, d
        self._values = values  # float64 (alpha, sigma, d_alpha, d_sigma) as Python numbers

    def _schedule(self, name: str) -> Tensor:
        return expand_to(getattr(self._sde, name)(self.t), self._like)

    @property
    def alpha(self) -> Tensor:
        if self._alpha is None:
            self._alpha = self._schedule("alpha")
        return self._alpha

    @property
    def sigma(self) -> Tensor:
        if self._sigma is None:
            self._sigma = self._schedule("sigma")
        return self._sigma

    def derivatives(self, parameterization: Parameterization) -> tuple:
        """``(d_alpha, d_sigma)`` when ``parameterization`` needs them (``flow``), else
        ``(None, None)``: the extra arguments of the conversions."""
        if parameterization is not Parameterization.FLOW:
            return None, None
        if self._d is None:
            self._d = derivatives_for(parameterization, self._sde, self.t, self._like)
        return self._d

    def affine(self, parameterization: Parameterization):
        """``((x0_x, x0_out), (eps_x, eps_out))``: ``x0`` and ``eps`` as Python-float
        combinations of the state and the network output (every parameterization is affine in
        both), from the float64 schedule of a prepared time; ``None`` for a plain time or where
        a coefficient does not exist (``alpha = 0`` for an eps or score model)."""
        if self._values is None:
            return None
        a, s, da, ds = self._values
        p = parameterization
        try:
            if p is Parameterization.EPS:
                return (1.0 / a, -s / a), (0.0, 1.0)
            if p is Parameterization.X0:
                return (0.0, 1.0), (1.0 / s, -a / s)
            if p is Parameterization.SCORE:
                return (1.0 / a, s * s / a), (0.0, -s)
            if p is Parameterization.V:
                n = a * a + s * s
                return (a / n, -s / n), (s / n, a / n)
            if p is Parameterization.FLOW and da is not None:
                det = a * ds - s * da
                return (ds / det, -s / det), (-da / det, a / det)
        except ZeroDivisionError:
            pass
        return None

    def __deepcopy__(self, memo):
        return self


class Prediction:
    """One network evaluation at ``(x, t)`` in the forms a sampler reads: ``x0`` and ``eps``,
    each converted from the network's output on first access (an eps-network read as ``eps``
    costs no arithmetic), and ``var_interp``, the variance output of a learned-variance network
    (``None`` otherwise, see :class:`Denoiser`). With an ``x0_correction``, ``x0`` is corrected
    and ``eps`` derived from the corrected ``x0``, so the pair stays one consistent model.
    Unpacks as ``x0, eps, var_interp``."""

    __slots__ = ("_out", "_x", "_time", "_p", "_correction", "_x0", "_eps", "var_interp")

    def __init__(self, out, x, time, parameterization, correction=None, var_interp=None):
        self._out, self._x, self._time = out, x, time
        self._p, self._correction = parameterization, correction
        self._x0 = self._eps = None
        self.var_interp = var_interp

    @property
    def x0(self) -> Tensor:
        if self._x0 is None:
            tp, p = self._time, self._p
            x0 = to_x0(self._out, self._x, tp.alpha, tp.sigma, p, *tp.derivatives(p))
            self._x0 = x0 if self._correction is None else self._correction(x0)
        return self._x0

    @property
    def eps(self) -> Tensor:
        if self._eps is None:
            tp, p = self._time, self._p
            if self._correction is None:
                self._eps = to_eps(self._out, self._x, tp.alpha, tp.sigma, p, *tp.derivatives(p))
            else:
                self._eps = to_eps(self.x0, self._x, tp.alpha, tp.sigma, Parameterization.X0)
        return self._eps

    def combine(self, c_x0: float, c_eps: float, c_x: float = 0.0) -> Tensor:
        """``c_x x + c_x0 x0 + c_eps eps`` for Python-float weights. At a time prepared by
        :meth:`Denoiser.times`, without an ``x0_correction``, it is formed directly from the
        state and the network output (two passes over the state; neither ``x0`` nor ``eps``
        is materialised); otherwise from ``x0`` and ``eps``."""
        w = None if self._correction is not None else self._time.affine(self._p)
        if w is None:
            out = (self.x0 * c_x0).add_(self.eps, alpha=c_eps)
            return out if c_x == 0.0 else out.add_(self._x, alpha=c_x)
        (x0_x, x0_out), (eps_x, eps_out) = w
        a = c_x + c_x0 * x0_x + c_eps * eps_x
        return (self._x * a).add_(self._out, alpha=c_x0 * x0_out + c_eps * eps_out)

    def __iter__(self):
        return iter((self.x0, self.eps, self.var_interp))


# -------------------------------------------------------------------------------------------
# Classifier-free guidance


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

    Two options (both off by default):

    * ``guidance_rescale = phi`` (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
      Steps are Flawed", Sec. 3.4; diffusers' ``rescale_noise_cfg``): ``out_r = out *
      std(out_cond) / std(out)`` with the standard deviations over each sample's entries, then
      ``out <- phi out_r + (1 - phi) out``. It is not affine, so its output space matters: it acts
      on the network's native output (``eps`` for eps models, ``v`` for v models), as in
      diffusers' pipelines.
    * ``interval = (sigma_lo, sigma_hi)`` (Kynkäänniemi et al. 2024, "Applying Guidance in a
      Limited Interval Improves Sample and Distribution Quality in Diffusion Models"): guidance
      acts only where the noise level ``sigma / alpha = exp(-lambda_)`` (EDM's sigma, the paper's
      variable) lies in ``(sigma_lo, sigma_hi]``; elsewhere the output is the conditional one
      (``scale = 1``). Decided per sample on the device (no host sync); both halves of the batch
      are still evaluated, so the NFE count is unchanged.

    Args:
        scale: guidance scale ``w`` (1 = conditional model, 0 = unconditional).
        cond: keyword arguments of the conditional call (e.g. ``{"class_labels": y}``).
        uncond: keyword arguments of the unconditional call, same keys (e.g. the null class).
        guidance_rescale: ``phi`` in ``[0, 1]``; 0 is plain guidance.
        interval: ``(sigma_lo, sigma_hi)`` with ``0 <= sigma_lo < sigma_hi <= inf``, or ``None``
            (guidance at every noise level).
    """

    def __init__(
        self,
        scale: float,
        cond: dict,
        uncond: dict,
        *,
        guidance_rescale: float = 0.0,
        interval: tuple[float, float] | None = None,
    ):
        self.scale = check_real("scale", scale)
        for name, kwargs in (("cond", cond), ("uncond", uncond)):
            if not isinstance(kwargs, Mapping):
                raise TypeError(
                    f"{name} must be a dict of the network's keyword arguments "
                    f"(e.g. {{'class_labels': y}}); got {describe(kwargs)}"
                )
        self.cond, self.uncond = dict(cond), dict(uncond)
        self._both = _concat_kwargs(self.cond, self.uncond)
        self.guidance_rescale = check_real("guidance_rescale", guidance_rescale, low=0.0, high=1.0)
        self.interval = None if interval is None else _check_interval(interval)

    def __call__(
        self, net, x: Tensor, t_in: Tensor, *, noise_level: Tensor | None = None
    ) -> Tensor:
        """The guided output; ``noise_level`` (``sigma / alpha`` per sample) is passed by the
        :class:`Denoiser` and needed only with ``interval``."""
        out = net(torch.cat([x, x]), torch.cat([t_in, t_in]), **self._both)
        out_cond, out_uncond = out.chunk(2)
        # a learned-variance network's extra channels are not guided: they come from the
        # conditional call (as in ADM / DiT)
        c = x.shape[1] if x.ndim > 1 else None
        rest = out_cond[:, c:] if c is not None and out.shape[1] > c else None
        if rest is not None:
            out_cond, out_uncond = out_cond[:, :c], out_uncond[:, :c]
        scale = torch.as_tensor(self.scale, dtype=out.dtype, device=out.device)
        if self.interval is not None:
            if noise_level is None:
                raise ValueError(
                    "ClassifierFreeGuidance with interval needs the noise level of each sample; "
                    "call it through a Denoiser (got noise_level=None)"
                )
            lo, hi = self.interval
            inside = (noise_level > lo) & (noise_level <= hi)
            scale = expand_to(torch.where(inside, scale, torch.ones_like(scale)), out_cond)
        guided = out_uncond + scale * (out_cond - out_uncond)
        if self.guidance_rescale > 0:
            dims = list(range(1, guided.ndim))
            ratio = out_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
            rescaled = guided * ratio
            guided = self.guidance_rescale * rescaled + (1.0 - self.guidance_rescale) * guided
        return guided if rest is None else torch.cat([guided, rest], dim=1)

    def __repr__(self) -> str:
        extra = (
            "" if self.guidance_rescale == 0 else f", guidance_rescale={self.guidance_rescale!r}"
        )
        extra += "" if self.interval is None else f", interval={self.interval!r}"
        return f"ClassifierFreeGuidance(scale={self.scale!r}, keys={sorted(self.cond)}{extra})"


def _check_interval(interval) -> tuple[float, float]:
    expect = "a pair (sigma_lo, sigma_hi) of noise levels with 0 <= sigma_lo < sigma_hi <= inf"
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval must be {expect}; got {interval!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not (0.0 <= lo < hi):
        raise ValueError(f"interval must be {expect}; got {interval!r}")
    return lo, hi


def _first_parameter(net) -> Tensor | None:
    """The first parameter of ``net``, or of an ``nn.Module`` it holds as an attribute (adapter
    wrappers such as ``DiffusersUNet``); ``None`` for a plain function."""
    modules = [net] if isinstance(net, torch.nn.Module) else [
        v for v in getattr(net, "__dict__", {}).values() if isinstance(v, torch.nn.Module)
    ]  # fmt: skip
    for module in modules:
        param = next(module.parameters(), None)
        if param is not None:
            return param
    return None


class Denoiser:
    """A network wrapped with its SDE, parameterization and time conditioning.

    Args:
        net: callable ``net(x, t_in)`` with ``x`` of shape ``(batch, *dims)`` and ``t_in`` of shape
            ``(batch,)``, returning a tensor shaped like ``x``. ``t_in`` has ``x``'s dtype, or
            float32 when ``x`` is float16 or bfloat16 (the conditioning is never rounded to a
            half-precision state; cast it inside the network if a layer needs the state's dtype).
        sde: the forward process the network was trained under.
        parameterization: what ``net`` outputs (:class:`Parameterization` or its name).
        time_input: how continuous ``t`` maps to ``t_in``; a :class:`TimeInput` or one of
            ``"t"``, ``"index"``, ``"sigma"``, ``"log_sigma"``.
        model_kwargs: extra keyword arguments for every network call (class labels, text
            embeddings, ...).
        guidance: a :class:`ClassifierFreeGuidance` (or any callable ``(net, x, t_in) -> out``)
            that replaces the plain call; every sampler then samples the guided model.
        x0_correction: an :class:`X0Correction` (:class:`ClipX0`, :class:`DynamicThreshold`)
            applied to every ``x0`` prediction; ``eps`` is then derived from the corrected ``x0``.
        learned_variance: the network outputs ``2C`` channels along dim 1 (for ``x`` with ``C``):
            the ``C`` channels of ``parameterization``, then ``C`` channels of the variance
            interpolation ``v`` of Nichol & Dhariwal 2021 (eq. 15, ``variance_type=
            "learned_range"``), returned as ``Prediction.var_interp``. Only ``ancestral`` uses it;
            every other sampler uses the mean channels.
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
        x0_correction: X0Correction | None = None,
        learned_variance: bool = False,
    ):
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t); got {describe(net)}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoresde.SDE; got {describe(sde)}")
        self.net = net
        self.sde = sde
        self.parameterization = Parameterization.parse(parameterization)
        _check_defined_at_T(sde, self.parameterization)
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
        if x0_correction is not None and not isinstance(x0_correction, X0Correction):
            raise TypeError(
                "x0_correction must be None or an X0Correction (ClipX0(range), "
                f"DynamicThreshold(ratio, max_value)); got {x0_correction!r}"
            )
        self.x0_correction = x0_correction
        self.learned_variance = check_bool("learned_variance", learned_variance)
        self.nfe = 0
        self.last: Prediction | None = None

    def __repr__(self) -> str:
        net = type(self.net).__name__
        extra = "" if self.guidance is None else f", guidance={self.guidance!r}"
        extra += "" if self.x0_correction is None else f", x0_correction={self.x0_correction!r}"
        extra += ", learned_variance=True" if self.learned_variance else ""
        return (
            f"Denoiser(net={net}, sde={self.sde!r}, parameterization={self.parameterization.value!r}, "
            f"time_input={self.time_input!r}{extra})"
        )

    @property
    def _net_name(self) -> str:
        return getattr(self.net, "__name__", type(self.net).__name__)

    def process(self, sde: SDE | None = None) -> SDE:
        """The process to run this denoiser under: its own, or ``sde`` if that is the same
        process (``alpha`` and ``sigma`` agree; ``T`` and ``t_min`` may differ). Sampling a
        network under another schedule gives samples of the wrong spread, silently, so a
        different process raises ``ValueError``."""
        own = self.sde
        if sde is None or sde is own:
            return own
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoresde.SDE; got {describe(sde)}")
        lo, hi = max(sde.t_min, own.t_min), min(sde.T, own.T)
        if lo >= hi:
            raise ValueError(
                f"sde={sde!r} does not overlap the time range of the denoiser's process {own!r}"
            )
        t = torch.linspace(lo, hi, 33, dtype=torch.float64)
        for name in ("alpha", "sigma"):
            a, b = getattr(sde, name)(t), getattr(own, name)(t)
            if not torch.allclose(a, b, rtol=1e-9, atol=1e-12):
                k = int((a - b).abs().argmax())
                raise ValueError(
                    f"sde={sde!r} is not the process the denoiser was built with ({own!r}): "
                    f"{name}(t={float(t[k]):.4g}) is {float(a[k]):.6g} vs {float(b[k]):.6g}; "
                    "leave sde out (the denoiser knows its process) or build the Denoiser with it"
                )
        return sde

    def reset_nfe(self) -> None:
        self.nfe = 0

    def check_placement(self, x: Tensor, name: str = "x_T") -> None:
        """Raise if ``x`` and the network's parameters differ in dtype or device (when the network
        is an ``nn.Module``, or wraps one, with parameters): caught before the first call."""
        param = _first_parameter(self.net)
        if param is None:
            return
        if param.device != x.device:
            raise ValueError(
                f"{name} is on {x.device} but the network's parameters are on {param.device}; "
                f"move one to the other (e.g. x_T.to({str(param.device)!r}) or net.to(...))"
            )
        if param.dtype != x.dtype:
            raise ValueError(
                f"{name} is {x.dtype} but the network's parameters are {param.dtype}; sample in "
                f"the network's dtype (dtype={param.dtype} or x_T.to({param.dtype})) or cast the "
                "network"
            )

    def _batch_time(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time(t).to(x.device)
        if t.ndim == 0:
            return t.expand(x.shape[0])
        if t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t of shape {tuple(t.shape)} does not match the batch of x {tuple(x.shape)}"
            )
        return t

    def _conditioning_dtype(self, x: Tensor) -> torch.dtype:
        # float32 or better, never the state's float16/bfloat16: those round t, sigma or the
        # train index (bfloat16 keeps 8 bits: index 997 becomes 996)
        return torch.promote_types(x.dtype, torch.float32)

    def _noise_level(self, t: Tensor) -> Tensor | None:
        """``sigma / alpha`` at ``t``, what guidance limited to an interval reads."""
        if not isinstance(self.guidance, ClassifierFreeGuidance):
            return None
        return torch.exp(-self.sde.lambda_(t))

    def at(self, x: Tensor, t: Tensor | float) -> TimePoint:
        """The :class:`TimePoint` of a call at ``t`` (a scalar or a ``(batch,)`` tensor) with
        state ``x``; the schedule is evaluated when a conversion first needs it."""
        t = self._batch_time(x, t)
        t_in = self.time_input(self.sde, t).to(self._conditioning_dtype(x))
        return TimePoint(t, t_in, self.sde, x, noise_level=self._noise_level(t))

    def times(self, ts: Tensor, like: Tensor) -> list[TimePoint]:
        """One :class:`TimePoint` per entry of the 1-d grid ``ts``, for states shaped like
        ``like``: the conditioning and the schedule evaluated once for the whole grid (the
        values a call at each time would compute), so that no step evaluates them."""
        t_host = as_time(ts)
        t = t_host.to(like.device)
        if t.ndim != 1:
            raise ValueError(f"ts must be a 1-d grid of times; got shape {tuple(t.shape)}")
        batch = like.shape[0]
        t_in = self.time_input(self.sde, t).to(self._conditioning_dtype(like))
        t_in = t_in[:, None].expand(-1, batch).contiguous()  # one (batch,) row per time
        level = self._noise_level(t)
        names = ["alpha", "sigma"]
        if self.parameterization is Parameterization.FLOW:
            names += ["d_alpha", "d_sigma"]
        # float64 on the state's device (what a plain call computes), cast to the state's dtype,
        # and as Python numbers from the CPU (no device sync) for Prediction.combine
        schedule = torch.stack([getattr(self.sde, k)(t) for k in names])
        if t.device.type != "cpu":
            t_host = t_host.cpu()  # a no-op for a grid made on the CPU, as every TimeGrid's is
            on_cpu = torch.stack([getattr(self.sde, k)(t_host) for k in names])
        else:
            on_cpu = schedule
        values = [(*row, None, None)[:4] for row in on_cpu.T.tolist()]
        schedule = schedule.to(like.dtype)
        return [
            TimePoint(
                t[k],
                t_in[k],
                self.sde,
                like,
                noise_level=None if level is None else level[k].expand(batch),
                alpha=schedule[0, k],
                sigma=schedule[1, k],
                d=(schedule[2, k], schedule[3, k]) if len(names) == 4 else None,
                values=values[k],
            )
            for k in range(t.shape[0])
        ]

    def raw(self, x: Tensor, t: Tensor | float | TimePoint) -> Tensor:
        """One network call at ``(x, t)``, in the network's own parameterization (with the
        variance channels of a ``learned_variance`` network)."""
        return self._call(x, t if isinstance(t, TimePoint) else self.at(x, t))

    def _call(self, x: Tensor, time: TimePoint) -> Tensor:
        t_in = time.t_in
        if t_in.shape[0] != x.shape[0]:
            raise ValueError(
                f"the time point was prepared for a batch of {t_in.shape[0]}; x has shape "
                f"{tuple(x.shape)}"
            )
        if self.guidance is None:
            out = self.net(x, t_in, **self.model_kwargs)
        elif isinstance(self.guidance, ClassifierFreeGuidance):
            out = self.guidance(self.net, x, t_in, noise_level=time.noise_level)
        else:
            out = self.guidance(self.net, x, t_in)
        self.nfe += 1
        if not isinstance(out, Tensor):
            raise TypeError(
                f"the network {self._net_name} returned {type(out).__name__}; a denoiser's "
                f"network must return one tensor shaped like its input {tuple(x.shape)} (unwrap "
                "tuples or output objects, e.g. `lambda x, t: unet(x, t).sample`)"
            )
        if out.is_floating_point() and out.dtype != x.dtype:
            # the state keeps its dtype: a float64 score function must not turn the sample into
            # float64, nor an autocast network's float16 output a float32 sample into float16
            out = out.to(x.dtype)
        expected = x.shape
        if self.learned_variance:
            expected = (x.shape[0], 2 * x.shape[1], *x.shape[2:]) if x.ndim > 1 else None
        if out.shape != expected or out.dtype != x.dtype:
            what = (
                "(batch, 2C, ...) for input (batch, C, ...) (learned_variance=True)"
                if self.learned_variance
                else "the shape and dtype of its input (sample in the network's dtype)"
            )
            raise ValueError(
                f"the network {self._net_name} returned {out.dtype} of shape "
                f"{tuple(out.shape)} for a {x.dtype} input of shape {tuple(x.shape)}; a denoiser's "
                f"output must have {what}"
            )
        return out

    def predict(self, x: Tensor, t: Tensor | float | TimePoint) -> Prediction:
        """``(x0, eps)`` from one network call, each converted when first read. ``t`` is a
        time (scalar or ``(batch,)``) or a :class:`TimePoint` from :meth:`times`."""
        if not isinstance(t, (Tensor, TimePoint)):
            # a number from the user: checked here, tensors stay sync-free
            check_real("t", t, low=0.0, high=self.sde.T)
        time = t if isinstance(t, TimePoint) else self.at(x, t)
        out = self._call(x, time)
        var_interp = None
        if self.learned_variance:
            out, var_interp = out.split(x.shape[1], dim=1)
        self.last = Prediction(out, x, time, self.parameterization, self.x0_correction, var_interp)
        return self.last

    def _as(self, x: Tensor, t: Tensor | float, parameterization: Parameterization) -> Tensor:
        time = t if isinstance(t, TimePoint) else self.at(x, t)
        pred = self.predict(x, time)
        d = time.derivatives(parameterization)
        return from_x0_eps(pred.x0, pred.eps, time.alpha, time.sigma, parameterization, *d)

    def x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.predict(x, t).x0

    def eps(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.predict(x, t).eps

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self._as(x, t, Parameterization.SCORE)

    def v(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self._as(x, t, Parameterization.V)

    def flow(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The velocity ``dx_t/dt = alpha' x0 + sigma' eps`` (the probability-flow ODE's RHS)."""
        return self._as(x, t, Parameterization.FLOW)


def _check_defined_at_T(sde: SDE, parameterization: Parameterization) -> None:
    """Zero terminal SNR: at ``T`` the input is pure noise (``alpha = 0``), so an ``eps`` or
    ``score`` prediction carries no information about ``x0`` (``x0 = (x - sigma eps) / alpha``
    is 0/0) and every sampler's first step needs ``x0``."""
    if parameterization in (Parameterization.EPS, Parameterization.SCORE) and sde.zero_terminal_snr:
        raise ValueError(
            f"parameterization={parameterization.value!r} is undefined on a zero-terminal-SNR "
            f"schedule ({sde!r} has alpha(T) = 0): at T the input is pure noise, its "
            f"{parameterization.value} prediction cannot give x0 (0/0), and the first step needs "
            "x0; expected a 'x0', 'v' or 'flow' (velocity) prediction model"
        )
