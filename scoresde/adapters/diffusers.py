"""A diffusers UNet and its scheduler config as a ``(DiscreteVPSDE, Denoiser)`` pair.

The scheduler config gives the training schedule (``num_train_timesteps``, ``beta_start``,
``beta_end``, ``beta_schedule`` or ``trained_betas``, ``rescale_betas_zero_snr``) and what the UNet
predicts (``prediction_type``). The UNet is called as ``unet(x, timestep, **model_kwargs)`` with the
(fractional) train index ``t N - 1`` of this schedule's own ``N`` as ``timestep``, which covers
``UNet2DModel`` (``class_labels=``) and ``UNet2DConditionModel`` (``encoder_hidden_states=``, ...).

Flow-matching schedulers (``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler``:
SD3, Flux) give a ``(RectifiedFlow, Denoiser)`` pair instead: the transformer predicts the
velocity (``flow``) and is called with diffusers' ``timestep = sigma N`` (``sigma = t``);
:func:`flow_match_grid` turns the config's ``shift`` / dynamic shifting into the matching grid.
diffusers itself is never imported here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..corrections import ClipX0, DynamicThreshold, X0Correction
from ..denoiser import ContinuousTime, Denoiser, TrainIndex
from ..grids import FlowMatchShift
from ..parameterization import Parameterization
from ..sde import DiscreteVPSDE, RectifiedFlow
from ..utils import check_bool, check_int, check_real

__all__ = [  # noqa: F822 (ScoresdeScheduler is imported on first use, below)
    "from_diffusers",
    "discrete_sde_from_config",
    "x0_correction_from_config",
    "flow_match_grid",
    "is_flow_match",
    "DiffusersUNet",
    "ScoresdeScheduler",
]


def __getattr__(name):
    # the scheduler subclasses diffusers' classes: import diffusers only when it is asked for
    if name == "ScoresdeScheduler":
        from .scheduler import ScoresdeScheduler

        return ScoresdeScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _config(scheduler_or_config) -> dict:
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(config, Mapping):
        raise TypeError(
            "scheduler_or_config must be a diffusers scheduler or its config mapping; "
            f"got {type(scheduler_or_config).__name__}"
        )
    config = dict(config)
    if hasattr(scheduler_or_config, "config") and "_class_name" not in config:
        config["_class_name"] = type(scheduler_or_config).__name__
    return config


_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned",
                   "learned_range")  # fmt: skip
_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow_prediction")


def _read(config: dict, key: str, default, kind: str, *, optional: bool = False, **limits):
    """``config[key]`` (``default`` when absent, and when ``None`` for an ``optional`` key), checked
    as ``kind`` (``"bool"``, ``"int"``, ``"real"`` with ``check_real``'s limits, or ``"choice"``
    among ``limits["options"]``). The error names the key, the value and what was expected."""
    value = config.get(key, default)
    if value is None and optional:
        return None
    name = f"the scheduler config's {key}"
    if kind == "bool":
        return check_bool(name, value)
    if kind == "int":
        return check_int(name, value, **limits)
    if kind == "real":
        return check_real(name, value, **limits)
    options = limits["options"]
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}; got {value!r}")
    return value


def _config_error(keys: str, config: dict, error: Exception) -> ValueError:
    """A constructor's error on config values, restated with the config keys it came from."""
    values = ", ".join(f"{k}={config.get(k)!r}" for k in keys.split())
    return ValueError(f"the scheduler config's {values} is refused: {error}")


def is_flow_match(scheduler_or_config) -> bool:
    """Whether the scheduler (or config: by its ``_class_name``, or for a bare ``config`` mapping,
    by flow-matching keys and no betas) is a flow-matching one."""
    config = _config(scheduler_or_config)
    if _read(config, "use_flow_sigmas", False, "bool"):  # DPMSolverMultistep / UniPC in flow mode
        return True
    if "_class_name" in config:
        return str(config["_class_name"]).startswith("FlowMatch")
    has_betas = "beta_schedule" in config or "trained_betas" in config
    return "shift" in config and not has_betas


# the flow configs' sigma conversions that change the grid in ways FlowMatchShift does not mirror
_UNSUPPORTED_FLOW = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                     "invert_sigmas", "stochastic_sampling")  # fmt: skip


def flow_match_grid(scheduler_or_config, *, mu: float | None = None) -> FlowMatchShift:
    """The :class:`~scoresde.FlowMatchShift` grid of a ``FlowMatch*DiscreteScheduler`` config:
    its ``shift``, or with ``use_dynamic_shifting=True`` the given ``mu`` and the config's
    ``time_shift_type``, and ``shift_terminal``. Sample with ``denoise_final=True`` for
    diffusers' last step to ``sigma = 0``."""
    config = _config(scheduler_or_config)
    bad = [k for k in _UNSUPPORTED_FLOW if _read(config, k, False, "bool", optional=True)]
    if bad:
        raise ValueError(
            f"flow_match_grid mirrors shift, dynamic shifting and shift_terminal only; the config "
            f"sets {bad} = True, expected False"
        )
    kind = _read(config, "time_shift_type", "exponential", "choice",
                 options=FlowMatchShift.TIME_SHIFT_TYPES)  # fmt: skip
    n = _read(config, "num_train_timesteps", 1000, "int", low=1)
    terminal = _read(config, "shift_terminal", None, "real", optional=True, low=0.0, high=1.0,
                     low_open=True, high_open=True)  # fmt: skip
    if _read(config, "use_dynamic_shifting", False, "bool"):
        if mu is None:
            raise ValueError(
                "mu must be given for a config with use_dynamic_shifting=True (diffusers' "
                "set_timesteps(mu=...), e.g. from the image resolution); got None"
            )
        return FlowMatchShift(mu=mu, time_shift_type=kind, num_train_timesteps=n,
                              shift_terminal=terminal)  # fmt: skip
    if mu is not None:
        raise ValueError(f"mu is for use_dynamic_shifting=True configs; got mu={mu!r}")
    shift = _read(config, "shift", 1.0, "real", low=0.0, low_open=True)
    return FlowMatchShift(shift, num_train_timesteps=n, shift_terminal=terminal)


def discrete_sde_from_config(scheduler_or_config) -> DiscreteVPSDE:
    """The training schedule of a diffusers scheduler config as a :class:`DiscreteVPSDE`."""
    config = _config(scheduler_or_config)
    zero = _read(config, "rescale_betas_zero_snr", False, "bool")
    n = _read(config, "num_train_timesteps", 1000, "int", low=2)
    trained = config.get("trained_betas")
    if trained is not None:
        try:
            betas = torch.as_tensor(trained, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                "the scheduler config's trained_betas must be a sequence of real numbers in "
                f"(0, 1), one per train step; got {trained!r}"
            ) from None
        try:
            if "num_train_timesteps" in config and betas.numel() != n:
                raise ValueError(
                    f"{betas.numel()} trained betas but num_train_timesteps={n}; expected one "
                    "beta per train step"
                )
            return DiscreteVPSDE(betas, name="trained", rescale_betas_zero_snr=zero)
        except (TypeError, ValueError, RuntimeError) as e:
            raise _config_error("trained_betas", config, e) from None
    if config.get("beta_schedule") is None:
        raise ValueError(
            "the scheduler config has neither trained_betas nor beta_schedule; expected "
            f"beta_schedule in {list(_SCHEDULES)} or trained_betas (one beta per train step)"
        )
    schedule = _read(config, "beta_schedule", None, "choice", options=_SCHEDULES)
    if schedule == "squaredcos_cap_v2":
        return DiscreteVPSDE.cosine(n, rescale_betas_zero_snr=zero)
    defaults = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}[schedule]
    unit = dict(low=0.0, high=1.0, low_open=True, high_open=True)
    beta_start = _read(config, "beta_start", defaults[0], "real", **unit)
    beta_end = _read(config, "beta_end", defaults[1], "real", **unit)
    if beta_end < beta_start:
        raise ValueError(
            f"the scheduler config's beta_end must be >= beta_start ({beta_start!r}); "
            f"got {beta_end!r}"
        )
    make = DiscreteVPSDE.linear if schedule == "linear" else DiscreteVPSDE.scaled_linear
    try:
        return make(n, beta_start, beta_end, rescale_betas_zero_snr=zero)
    except ValueError as e:
        raise _config_error(
            "beta_schedule num_train_timesteps beta_start beta_end", config, e
        ) from None


class DiffusersUNet:
    """``unet(x, timestep, **kwargs)`` as a ``net(x, t_in, **kwargs)``: unpacks diffusers' output
    objects and, with ``learned_variance`` (``variance_type="learned"``, whose variance channels
    no scoresde sampler reads), keeps the mean channels only."""

    def __init__(self, unet, *, learned_variance: bool = False):
        if not callable(unet):
            raise TypeError(
                f"unet must be callable as unet(x, timestep, ...); got {type(unet).__name__}"
            )
        self.unet = unet
        self.learned_variance = learned_variance

    def __call__(self, x: Tensor, t_in: Tensor, **kwargs) -> Tensor:
        out = self.unet(x, t_in, **kwargs)
        out = getattr(out, "sample", out)
        if isinstance(out, tuple):
            out = out[0]
        if self.learned_variance:
            out = out[:, : x.shape[1]]
        return out

    def __repr__(self) -> str:
        return f"DiffusersUNet({type(self.unet).__name__})"


def from_diffusers(
    unet, scheduler_or_config, *, model_kwargs: dict | None = None, guidance=None
) -> tuple[DiscreteVPSDE | RectifiedFlow, Denoiser]:
    """Wrap a diffusers UNet and its scheduler (or scheduler config) for any scoresde sampler.

    A ``FlowMatch*`` scheduler gives ``(RectifiedFlow, Denoiser)`` with the ``flow``
    parameterization and ``timestep = sigma * num_train_timesteps``; any other gives
    ``(DiscreteVPSDE, Denoiser)``. With ``rescale_betas_zero_snr=True`` the schedule has
    ``alpha(T) = 0``, defined for ``v_prediction`` and ``sample`` models only (an ``epsilon``
    model carries no information about ``x0`` at pure noise).

    Args:
        unet: e.g. ``UNet2DModel``, ``UNet2DConditionModel`` or ``SD3Transformer2DModel`` (any
            callable with that signature).
        scheduler_or_config: a diffusers scheduler, or its ``config`` mapping (for flow configs
            with their ``_class_name``).
        model_kwargs: passed to every UNet call (``class_labels``, ``encoder_hidden_states``, ...).
        guidance: e.g. :class:`scoresde.ClassifierFreeGuidance` with cond/uncond kwargs.

    The config's x0 corrections become the Denoiser's ``x0_correction``: ``thresholding=True``
    is :class:`~scoresde.DynamicThreshold` (``dynamic_thresholding_ratio``, ``sample_max_value``),
    else ``clip_sample=True`` is :class:`~scoresde.ClipX0` (``clip_sample_range``), the precedence
    of diffusers' schedulers. The corrected ``x0`` then defines ``eps`` for every sampler (see
    ``docs/bring-your-own-model.md`` for where this differs from ``DDIMScheduler.step``'s
    default). ``variance_type="learned_range"`` gives a ``learned_variance`` Denoiser whose
    variance channels ``ancestral`` uses; ``"learned"`` keeps the mean channels only.
    """
    config = _config(scheduler_or_config)
    if is_flow_match(config):
        n = _read(config, "num_train_timesteps", 1000, "int", low=1)
        # t_min: below the last sigma of any shift >= 0.01 (diffusers' grids end near shift/N)
        flow = RectifiedFlow(t_min=0.01 / n)
        den = Denoiser(DiffusersUNet(unet), flow, Parameterization.FLOW,
                       time_input=ContinuousTime(scale=float(n)), model_kwargs=model_kwargs,
                       guidance=guidance)  # fmt: skip
        return flow, den
    sde = discrete_sde_from_config(config)
    prediction_type = _read(config, "prediction_type", "epsilon", "choice",
                            options=_PREDICTION_TYPES)  # fmt: skip
    parameterization = Parameterization.parse(prediction_type)
    if parameterization is Parameterization.FLOW:
        raise ValueError(
            "prediction_type='flow_prediction' means the rectified-flow path, which a beta "
            "schedule does not give; expected a FlowMatch* scheduler or use_flow_sigmas=True, got "
            f"beta_schedule={config.get('beta_schedule')!r}"
        )
    if sde.zero_terminal_snr and parameterization in (Parameterization.EPS, Parameterization.SCORE):
        raise ValueError(
            f"rescale_betas_zero_snr=True needs prediction_type 'v_prediction' or 'sample': at "
            f"the zero-SNR start the input is pure noise and an epsilon prediction cannot give "
            f"x0 (Lin et al. 2024 train v-prediction for this reason); got prediction_type="
            f"{prediction_type!r}"
        )
    variance_type = _read(config, "variance_type", None, "choice", optional=True,
                          options=_VARIANCE_TYPES)  # fmt: skip
    net = DiffusersUNet(unet, learned_variance=variance_type == "learned")
    den = Denoiser(net, sde, parameterization, time_input=TrainIndex(),
                   model_kwargs=model_kwargs, guidance=guidance,
                   x0_correction=x0_correction_from_config(config),
                   learned_variance=variance_type == "learned_range")  # fmt: skip
    return sde, den


def x0_correction_from_config(scheduler_or_config) -> X0Correction | None:
    """The x0 correction a diffusers scheduler config asks for (``None`` if none)."""
    config = _config(scheduler_or_config)
    if _read(config, "thresholding", False, "bool"):
        return DynamicThreshold(
            ratio=_read(config, "dynamic_thresholding_ratio", 0.995, "real", low=0.0, high=1.0,
                        low_open=True),
            max_value=_read(config, "sample_max_value", 1.0, "real", low=0.0, low_open=True),
        )  # fmt: skip
    if _read(config, "clip_sample", False, "bool"):
        return ClipX0(_read(config, "clip_sample_range", 1.0, "real", low=0.0, low_open=True))
    return None
