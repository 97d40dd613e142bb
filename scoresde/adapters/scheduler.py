"""A diffusers scheduler backed by any fixed-grid scoresde sampler.

A diffusers pipeline owns the loop: for each ``t`` in ``scheduler.timesteps`` it calls the
network once at its current ``sample`` and hands the output to ``scheduler.step``, whose
``prev_sample`` is where the network is called next. :class:`ScoresdeScheduler` drives an
ordinary :class:`~scoresde.Sampler` through that loop one network evaluation per call, with
:mod:`scoresde.adapters.stepwise`: ``timesteps`` lists every evaluation of the sampler on the
grid (several per step for Heun, RK4, DPM-Solver-2S/3S, PNDM's start, PC, EDM; as diffusers'
own Heun and KDPM2 schedulers list their stages), in the network's time input, the train index
``t N - 1`` of the schedule. Adaptive integrators choose their steps from the solution, so their
evaluations cannot be listed in advance, and are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# diffusers' pipeline loader looks both names up in this module to pick the load method
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.utils import BaseOutput
from torch import Tensor

from ..denoiser import TrainIndex
from ..grids import Explicit, TimeGrid, grid_from_config
from ..noise import GaussianNoise
from ..parameterization import Parameterization
from ..samplers import Sampler, get_sampler
from ..utils import check_bool, check_int, expand_to
from .diffusers import discrete_sde_from_config, x0_correction_from_config
from .stepwise import Plan, StepwiseRun, is_step_based, plan_evaluations

__all__ = ["ScoresdeScheduler", "ScoresdeSchedulerOutput"]

# the training-schedule keys of a diffusers scheduler config this scheduler reads and keeps
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "trained_betas", "prediction_type", "variance_type", "clip_sample",
                 "clip_sample_range", "thresholding", "dynamic_thresholding_ratio",
                 "sample_max_value", "rescale_betas_zero_snr")  # fmt: skip
FIXED_STEP_ALTERNATIVES = "'dpm_solver_pp_3m', 'unipc', 'pf_rk4' or 'torchdiffeq_fixed'"


@dataclass
class ScoresdeSchedulerOutput(BaseOutput):
    """``prev_sample``: where the network is evaluated next (after the last evaluation, the
    sample); ``pred_original_sample``: the ``x0`` of the output just given (``None`` for a
    discarded leading evaluation)."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


class ScoresdeScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that samples with any fixed-grid scoresde sampler.

    Swap it into a pipeline with ``pipe.scheduler = ScoresdeScheduler.from_config(
    pipe.scheduler.config, sampler="dpm_solver_pp_2m")``. The images are those of
    ``scoresde.sample(sampler, from_diffusers(unet, config)[1], x_T=..., grid=grid,
    n_steps=num_inference_steps)`` with the same noise (module docstring for how).

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the training
            schedule, as in diffusers' schedulers (read by
            :func:`~scoresde.adapters.discrete_sde_from_config`).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        variance_type: ``"learned"``/``"learned_range"`` keep the first half of the output
            channels (the mean), as diffusers does; anything else uses the output as it is.
        sampler: a registry key, a :class:`~scoresde.Sampler` or its config.
        sampler_options: keyword options of a sampler given by key.
        grid: a :class:`~scoresde.grids.TimeGrid`, its key in ``scoresde.GRIDS`` or its config;
            ``None`` is the sampler's ``default_grid``, as in ``scoresde.sample``.
        denoise_final: end with one more evaluation at the last time and return its ``x0``.

    After ``set_timesteps``: ``ts`` is the float64 grid, ``timesteps`` every network evaluation
    (NFE = ``len(timesteps)``), and ``plan`` the sampler step of each evaluation, with
    ``plan.warm_up`` when a leading evaluation at ``x_T`` is discarded (the sampler's first
    evaluation is elsewhere, as for ``torchdiffeq_fixed`` and ``torchsde``).
    """

    config_name = "scheduler_config.json"
    _compatibles: list = []
    order = 1

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list | None = None,
        prediction_type: str = "epsilon",
        variance_type: str | None = None,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        rescale_betas_zero_snr: bool = False,
        sampler: str | Sampler | Mapping = "dpm_solver_pp_2m",
        sampler_options: Mapping | None = None,
        grid: TimeGrid | str | Mapping | None = None,
        denoise_final: bool = False,
    ):
        if trained_betas is not None:
            trained_betas = [float(b) for b in torch.as_tensor(trained_betas).flatten().tolist()]
        schedule = {"num_train_timesteps": num_train_timesteps, "beta_start": beta_start,
                    "beta_end": beta_end, "beta_schedule": beta_schedule,
                    "trained_betas": trained_betas, "prediction_type": prediction_type,
                    "variance_type": variance_type, "clip_sample": clip_sample,
                    "clip_sample_range": clip_sample_range, "thresholding": thresholding,
                    "dynamic_thresholding_ratio": dynamic_thresholding_ratio,
                    "sample_max_value": sample_max_value,
                    "rescale_betas_zero_snr": rescale_betas_zero_snr}  # fmt: skip
        self.sde = discrete_sde_from_config(schedule)
        if self.sde.zero_terminal_snr:
            # the driver's lambda -> -inf first step (scoresde.sample) has no stepwise form yet
            raise ValueError(
                "ScoresdeScheduler does not run zero-terminal-SNR schedules "
                "(rescale_betas_zero_snr=True) yet; sample them with scoresde.sample on "
                "from_diffusers(unet, config), which starts at alpha(T) = 0 exactly"
            )
        self.parameterization = Parameterization.parse(prediction_type)
        self.sampler = _as_sampler(sampler, sampler_options)
        if self.sampler.nfe_per_step is None:
            raise ValueError(
                f"sampler {self.sampler.name!r} chooses its steps from the solution (adaptive), "
                "so its network evaluations cannot be listed in timesteps before sampling; "
                f"use a fixed-step sampler, e.g. {FIXED_STEP_ALTERNATIVES}"
                + ("; stochastic: 'sde_dpm_solver_pp_2m' or 'dpm_solver_pp_sde'"
                   if self.sampler.stochastic else "")
            )  # fmt: skip
        if isinstance(grid, (str, Mapping)):
            grid = grid_from_config(grid)
        if grid is not None and not isinstance(grid, TimeGrid):
            raise TypeError(
                f"grid must be a TimeGrid, its name or its config, or None; got {grid!r}"
            )
        self.grid = grid
        self.denoise_final = check_bool("denoise_final", denoise_final)
        # as from_diffusers: "learned_range" variance feeds the samplers that read it
        # (ancestral), "learned" channels are dropped; x0 clipping / thresholding as configured
        self.mean_channels_only = variance_type == "learned"
        self.denoiser_options = {
            "x0_correction": x0_correction_from_config(schedule),
            "learned_variance": variance_type == "learned_range",
        }
        sampler_config = self.sampler.to_config()
        self.register_to_config(
            **schedule, sampler=sampler_config["name"], sampler_options=sampler_config["options"],
            grid=None if grid is None else grid.to_config(), denoise_final=self.denoise_final,
        )  # fmt: skip
        self.num_inference_steps: int | None = None
        self.timesteps: Tensor | None = None
        self.plan: Plan | None = None
        self._begin_index: int | None = None

    @classmethod
    def from_config(cls, config=None, sampler=None, grid=None, return_unused_kwargs=False,
                    **options):  # fmt: skip
        """A scheduler with the training schedule and ``prediction_type`` of any diffusers
        scheduler config (or scheduler), sampling with ``sampler`` on ``grid``.

        Keyword ``options`` that are arguments of this class (``denoise_final``, the schedule's
        keys) set them; the others are options of the sampler (``lower_order_final=False``).
        A saved ``ScoresdeScheduler`` config brings back its sampler, options and grid, unless
        ``sampler`` or ``grid`` is given; without either, the sampler is ``dpm_solver_pp_2m``.
        """
        config = dict(getattr(config, "config", config) or {})
        discrete_sde_from_config(config)  # a schedule it cannot read is refused by name
        init = {k: config[k] for k in SCHEDULE_KEYS if k in config}
        if "sampler" in config and sampler is None:
            init["sampler"] = config["sampler"]
            init["sampler_options"] = config.get("sampler_options")
        if sampler is not None:
            init["sampler"] = sampler
        init["grid"] = config.get("grid") if grid is None else grid
        init["denoise_final"] = config.get("denoise_final", False)
        for key in [k for k in options if k in (*SCHEDULE_KEYS, "denoise_final")]:
            init[key] = options.pop(key)
        if options:
            init["sampler_options"] = {**(init.get("sampler_options") or {}), **options}
        scheduler = cls(**init)
        return (scheduler, {}) if return_unused_kwargs else scheduler

    # -- the scheduler protocol ---------------------------------------------------------------

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of ``x_T`` (the prior's)."""
        return self.sde.prior_std

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        """The network takes the state as it is (a VP schedule needs no input scaling)."""
        return sample

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None):
        """Make the grid of ``num_inference_steps`` sampler steps and list its evaluations."""
        n = check_int("num_inference_steps", num_inference_steps, low=1)
        grid = self.sampler.default_grid if self.grid is None else self.grid
        n_steps = None if isinstance(grid, Explicit) else n
        if n_steps is None and grid.ts.numel() - 1 != n:
            raise ValueError(
                f"num_inference_steps must be {grid.ts.numel() - 1} for this scheduler's "
                f"Explicit grid of {grid.ts.numel()} times; got {n}"
            )
        self.ts = grid.grid(self.sde, n_steps)
        self.plan = plan = self._plan_for(self.ts)
        times, warm_up = plan.times, plan.warm_up
        device = torch.device("cpu" if device is None else device)
        # the train index reaches the network at float64 (float32 where the device has no float64)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.timesteps = torch.tensor(times, dtype=dtype, device=device)
        self.num_inference_steps = n
        per_step = self.sampler.nfe_per_step
        self.order = per_step if len(times) == n * per_step + warm_up + self.denoise_final else 1
        self._begin_index, self._start_step, self._k, self._run = None, 0, 0, None

    def set_begin_index(self, begin_index: int = 0):
        """Start at ``timesteps[begin_index]`` (img2img): the first evaluation of a sampler step,
        from which the sampler runs on the rest of the grid, as ``scoresde.sample`` would on
        ``Explicit(ts[i:])``."""
        if self.timesteps is None:
            raise ValueError(
                "num_inference_steps is None: call set_timesteps() before set_begin_index()"
            )
        plan = self.plan
        starts = plan.step_starts()
        if plan.warm_up or not is_step_based(self.sampler):
            starts = {0: 0}
        if begin_index not in starts:
            raise ValueError(
                f"begin_index must be the first evaluation of a sampler step, one of "
                f"{sorted(starts)[:12]}; got {begin_index!r}"
            )
        i = starts[begin_index]
        if i > 0:
            rest = self._plan_for(self.ts[i:])
            if rest.warm_up or not _same_times(rest.times, self.timesteps[begin_index:].tolist()):
                raise ValueError(
                    f"sampler {self.sampler.name!r} does not evaluate the rest of the grid from "
                    f"begin_index={begin_index} at the times it lists there (its step orders "
                    "depend on the number of steps); start at a step of a sampler with a fixed "
                    "number of evaluations per step, e.g. 'dpm_solver_pp_2m'"
                )
        self._begin_index = begin_index
        self._start_step = i
        self._k = begin_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def step(self, model_output: Tensor, timestep, sample: Tensor, generator=None,
             return_dict: bool = True, eta: float = 0.0, use_clipped_model_output=None):  # fmt: skip
        """Take the network's output at ``timesteps[k]`` and return where it is called next.

        ``eta`` and ``use_clipped_model_output`` are the arguments ``DDIMPipeline`` passes; the
        sampler's own options decide instead (``sampler="ddim", eta=...``), so a non-zero
        ``eta`` here is refused rather than ignored."""
        if eta:
            raise ValueError(
                f"eta={eta!r} passed to step() would be ignored: give it to the sampler instead, "
                "ScoresdeScheduler.from_config(config, sampler='ddim', eta=...)"
            )
        k = self._check_call(timestep, sample)
        if self.mean_channels_only and model_output.shape[1] == 2 * sample.shape[1]:
            model_output = model_output[:, : sample.shape[1]]
        # learned-range channels, unless the pipeline split them off already (DiTPipeline does)
        learned = self.denoiser_options["learned_variance"] and (
            model_output.shape[1] == 2 * sample.shape[1]
        )
        expected = (sample.shape[0], 2 * sample.shape[1], *sample.shape[2:]) if learned else None
        expected = sample.shape if expected is None else expected
        if model_output.shape != expected:
            raise ValueError(
                f"model_output must have shape {tuple(expected)} for sample {tuple(sample.shape)}; got "
                f"{tuple(model_output.shape)}"
            )
        with torch.no_grad():
            if self._run is None:
                self._run = StepwiseRun(self.sampler, self.sde, self.parameterization,
                                        TrainIndex(), self.ts[self._start_step :], sample,
                                        denoise_final=self.denoise_final,
                                        **{**self.denoiser_options,
                                           "learned_variance": learned})  # fmt: skip
            self._run.noise.source = GaussianNoise(generator)
            if k == 0 and self.plan.warm_up:
                x_next, x0 = self._run.skip(), None  # the pipeline's own x_T: discarded
            else:
                x_next, x0 = self._run.feed(model_output, sample), self._run.x0
        self._k = k + 1
        if not return_dict:
            return (x_next, x0)
        return ScoresdeSchedulerOutput(prev_sample=x_next, pred_original_sample=x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``alpha(t) x0 + sigma(t) noise`` at train indices ``timesteps`` (img2img, training)."""
        timesteps = torch.as_tensor(timesteps, device=original_samples.device)
        n_train = self.config.num_train_timesteps
        if bool(((timesteps < 0) | (timesteps > n_train - 1)).any()):
            raise ValueError(
                f"timesteps must be train indices in [0, {n_train - 1}]; got {timesteps.tolist()}"
            )
        t = self.sde.index_to_t(timesteps)
        t = t.reshape(-1) if t.ndim else t
        alpha = expand_to(self.sde.alpha(t), original_samples)
        sigma = expand_to(self.sde.sigma(t), original_samples)
        return alpha * original_samples + sigma * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def _plan_for(self, ts: Tensor) -> Plan:
        return plan_evaluations(self.sampler, self.sde, self.parameterization, TrainIndex(), ts,
                                denoise_final=self.denoise_final)  # fmt: skip

    def _check_call(self, timestep, sample) -> int:
        if self.timesteps is None:
            raise ValueError(
                "num_inference_steps is None: call set_timesteps(num_inference_steps) before step()"
            )
        k = self._k
        if k >= len(self.timesteps):
            raise ValueError(
                f"step() was called {k + 1} times but timesteps holds {len(self.timesteps)} "
                "evaluations; call set_timesteps() to sample again"
            )
        if not isinstance(sample, Tensor) or not sample.is_floating_point():
            raise TypeError(f"sample must be a floating-point tensor; got {type(sample).__name__}")
        expected = float(self.timesteps[k])
        got = float(timestep)
        if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-6):
            where = [j for j, t in enumerate(self.timesteps.tolist()) if math.isclose(t, got)]
            found = f"timesteps[{where[0]}]" if where else "not in timesteps"
            raise ValueError(
                f"timestep must be timesteps[{k}] = {expected!r} (the evaluations run in order); "
                f"got {got!r}, which is {found}"
            )
        return k


def _as_sampler(sampler, options) -> Sampler:
    if isinstance(sampler, Sampler):
        if options:
            raise ValueError(
                f"sampler_options apply to a sampler given by name; got a Sampler ({sampler!r}) "
                f"and sampler_options={dict(options)!r}"
            )
        return sampler
    if isinstance(sampler, Mapping):
        return get_sampler(sampler, **(options or {}))
    if isinstance(sampler, str):
        # through the config path: saved options hold infinities as "inf"
        return get_sampler({"name": sampler, "options": dict(options or {})})
    raise TypeError(f"sampler must be a registry key, a Sampler or its config; got {sampler!r}")


def _same_times(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b, strict=True)
    )
