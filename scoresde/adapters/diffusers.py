"""A diffusers UNet and its scheduler config as a ``(DiscreteVPSDE, Denoiser)`` pair.

The scheduler config gives the training schedule (``num_train_timesteps``, ``beta_start``,
``beta_end``, ``beta_schedule`` or ``trained_betas``) and what the UNet predicts
(``prediction_type``). The UNet is called as ``unet(x, timestep, **model_kwargs)`` with the
(fractional) train index ``t N - 1`` of this schedule's own ``N`` as ``timestep``, which covers
``UNet2DModel`` (``class_labels=``) and ``UNet2DConditionModel`` (``encoder_hidden_states=``, ...).
diffusers itself is never imported here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..corrections import ClipX0, DynamicThreshold, X0Correction
from ..denoiser import Denoiser, TrainIndex
from ..parameterization import Parameterization
from ..sde import DiscreteVPSDE

__all__ = [  # noqa: F822 (ScoresdeScheduler is imported on first use, below)
    "from_diffusers",
    "discrete_sde_from_config",
    "x0_correction_from_config",
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
    return dict(config)


def discrete_sde_from_config(scheduler_or_config) -> DiscreteVPSDE:
    """The training schedule of a diffusers scheduler config as a :class:`DiscreteVPSDE`."""
    config = _config(scheduler_or_config)
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "rescale_betas_zero_snr=True gives alpha(T) = 0 (infinite -lambda at T), which no "
            "continuous-time sampler here can start from; got rescale_betas_zero_snr=True"
        )
    n = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        return DiscreteVPSDE(torch.as_tensor(trained, dtype=torch.float64), name="trained")
    schedule = config.get("beta_schedule")
    if schedule is None:
        raise ValueError(
            "the scheduler config has neither trained_betas nor beta_schedule; expected one of "
            f"{list(_SCHEDULES)} or explicit betas"
        )
    if schedule == "linear":
        return DiscreteVPSDE.linear(n, config.get("beta_start", 1e-4), config.get("beta_end", 0.02))
    if schedule == "scaled_linear":
        return DiscreteVPSDE.scaled_linear(
            n, config.get("beta_start", 0.00085), config.get("beta_end", 0.012)
        )
    if schedule == "squaredcos_cap_v2":
        return DiscreteVPSDE.cosine(n)
    raise ValueError(f"beta_schedule must be one of {list(_SCHEDULES)}; got {schedule!r}")


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
) -> tuple[DiscreteVPSDE, Denoiser]:
    """Wrap a diffusers UNet and its scheduler (or scheduler config) for any scoresde sampler.

    Args:
        unet: e.g. ``UNet2DModel`` or ``UNet2DConditionModel`` (any callable with that signature).
        scheduler_or_config: a diffusers scheduler, or its ``config`` mapping.
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
    sde = discrete_sde_from_config(config)
    parameterization = Parameterization.parse(config.get("prediction_type", "epsilon"))
    variance_type = config.get("variance_type")
    net = DiffusersUNet(unet, learned_variance=variance_type == "learned")
    den = Denoiser(net, sde, parameterization, time_input=TrainIndex(),
                   model_kwargs=model_kwargs, guidance=guidance,
                   x0_correction=x0_correction_from_config(config),
                   learned_variance=variance_type == "learned_range")  # fmt: skip
    return sde, den


def x0_correction_from_config(scheduler_or_config) -> X0Correction | None:
    """The x0 correction a diffusers scheduler config asks for (``None`` if none)."""
    config = _config(scheduler_or_config)
    if config.get("thresholding", False):
        return DynamicThreshold(
            ratio=config.get("dynamic_thresholding_ratio", 0.995),
            max_value=config.get("sample_max_value", 1.0),
        )
    if config.get("clip_sample", False):
        return ClipX0(config.get("clip_sample_range", 1.0))
    return None
