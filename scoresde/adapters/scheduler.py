"""A diffusers scheduler backed by any fixed-grid scoresde sampler.

A diffusers pipeline owns the loop: for each ``t`` in ``scheduler.timesteps`` it calls the
network once at its current ``sample`` and hands the output to ``scheduler.step``, whose
``prev_sample`` is where the network is called next. :class:`ScoresdeScheduler` drives an
ordinary :class:`~scoresde.Sampler` through that loop, one network evaluation per call:

- ``set_timesteps`` runs the sampler once on the grid with a recording stand-in for the network,
  which lists every evaluation time (two per step for Heun, four for RK4, the stages of
  DPM-Solver-2S/3S, the corrector calls of PC, ...). These are ``timesteps``, in the network's
  own convention (the train index ``t N - 1`` of the schedule), as diffusers' own Heun and KDPM2
  schedulers list their stages. The list depends only on the grid, never on the state, for every
  fixed-grid sampler; adaptive integrators choose their steps from the solution and are refused.
- ``step`` re-runs the sampler's current step (its ordinary ``step`` method, or the whole
  ``run`` of a fixed-grid backend) with the network outputs received so far, replaying every
  noise draw, until the step asks for an output it does not have yet. That request's input is
  returned as ``prev_sample``; a finished step moves on to the next. The sampler's state is
  copied before every replay, so a replay never sees its own partial updates. No thread, no
  change to any sampler; a step with ``k`` evaluations costs ``k`` replays of its arithmetic.

Where a step's first evaluation is at the state itself (every step-based sampler, except EDM's
churned steps), the pipeline's ``sample`` becomes the state, so a pipeline that edits its latents
between steps (inpainting) is honoured. A sampler whose first evaluation is not at ``x_T`` itself
(``torchdiffeq_fixed`` and ``torchsde`` evaluate a rescaled or reshaped copy) gets one leading
timestep whose output is discarded: the pipeline always evaluates its own ``x_T`` first.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, SchedulerMixin  # noqa: F401  (diffusers' loader reads both)
from diffusers.utils import BaseOutput
from torch import Tensor

from ..denoiser import Denoiser, TrainIndex
from ..grids import Explicit, TimeGrid, UniformTime, grid_from_config
from ..noise import GaussianNoise, NoiseSource
from ..parameterization import Parameterization
from ..samplers import Sampler, get_sampler
from ..utils import check_bool, check_int, expand_to
from .diffusers import check_unsupported, discrete_sde_from_config

__all__ = ["ScoresdeScheduler", "ScoresdeSchedulerOutput"]

# the training-schedule keys of a diffusers scheduler config this scheduler reads and keeps
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "trained_betas", "prediction_type", "variance_type")  # fmt: skip
FIXED_STEP_ALTERNATIVES = "'dpm_solver_pp_3m', 'unipc', 'pf_rk4' or 'torchdiffeq_fixed'"


@dataclass
class ScoresdeSchedulerOutput(BaseOutput):
    """``prev_sample``: where the network is evaluated next (after the last evaluation, the
    sample); ``pred_original_sample``: the ``x0`` of the output just given (``None`` for a
    discarded leading evaluation)."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


class _Pending(Exception):
    """Raised by the replay network at the first evaluation it has no output for."""

    def __init__(self, x: Tensor, t_in: Tensor):
        self.x, self.t_in = x, t_in


class _ReplayNet:
    """Answers a step's evaluations with the outputs received so far, in order."""

    def __init__(self):
        self.outputs: list[Tensor] = []
        self.pos = 0

    def __call__(self, x, t_in, **kwargs):
        if self.pos == len(self.outputs):
            raise _Pending(x, t_in)
        self.pos += 1
        return self.outputs[self.pos - 1]


class _RecordingNet:
    """Lists the evaluation times of a run (the outputs are placeholders)."""

    def __init__(self, x_start: Tensor):
        self.x_start, self.times, self.first_at_start = x_start, [], None

    def __call__(self, x, t_in, **kwargs):
        if self.first_at_start is None:
            self.first_at_start = x is self.x_start
        self.times.append(float(t_in[0]))
        return torch.ones_like(x)


class _ReplayNoise(NoiseSource):
    """Gives a replayed step the draws it made before, and draws new ones from ``source``."""

    def __init__(self):
        self.source: NoiseSource = GaussianNoise()
        self.draws: list[Tensor] = []
        self.pos = 0

    def _next(self, draw) -> Tensor:
        if self.pos == len(self.draws):
            self.draws.append(draw())
        self.pos += 1
        return self.draws[self.pos - 1]

    def __call__(self, t, t_next, like):
        return self._next(lambda: self.source(t, t_next, like))

    def extra(self, like):
        return self._next(lambda: self.source.extra(like))


def _units(sampler: Sampler, ts: Tensor, denoise_final: bool) -> list:
    """The sampler's run as a list of replayable units ``fn(denoiser, noise, x, state)``: its
    steps, or one unit for a backend that integrates the grid in ``run``; then the final
    denoising evaluation."""
    grid = ts.tolist()
    if type(sampler).run is Sampler.run:
        units = [
            (lambda den, noise, x, state, i=i: sampler.step(den, den.sde, grid, i, x, state, noise))
            for i in range(len(grid) - 1)
        ]
    else:

        def whole_run(den, noise, x, state):
            return sampler.run(den, den.sde, ts, x, noise=noise, progress=False)[0], state

        units = [whole_run]
    if denoise_final:
        units.append(lambda den, noise, x, state: (den.predict(x, ts[-1].to(x.device)).x0, state))
    return units


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
            ``None`` is ``scoresde.sample``'s default (``UniformTime()``).
        denoise_final: end with one more evaluation at the last time and return its ``x0``.
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
                    "variance_type": variance_type}  # fmt: skip
        self.sde = discrete_sde_from_config(schedule)
        self.parameterization = Parameterization.parse(prediction_type)
        self.sampler = _as_sampler(sampler, sampler_options)
        if self.sampler.nfe_per_step is None:
            raise ValueError(
                f"sampler {self.sampler.name!r} chooses its steps from the solution (adaptive), "
                "so its network evaluations cannot be listed in timesteps before sampling; "
                f"use a fixed-step sampler, e.g. {FIXED_STEP_ALTERNATIVES}"
            )
        if isinstance(grid, (str, Mapping)):
            grid = grid_from_config(grid)
        if grid is not None and not isinstance(grid, TimeGrid):
            raise TypeError(
                f"grid must be a TimeGrid, its name or its config, or None; got {grid!r}"
            )
        self.grid = grid
        self.denoise_final = check_bool("denoise_final", denoise_final)
        self.learned_variance = variance_type in ("learned", "learned_range")
        sampler_config = self.sampler.to_config()
        self.register_to_config(
            **schedule, sampler=sampler_config["name"], sampler_options=sampler_config["options"],
            grid=None if grid is None else grid.to_config(), denoise_final=self.denoise_final,
        )  # fmt: skip
        self.num_inference_steps: int | None = None
        self.timesteps: Tensor | None = None
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
        check_unsupported(config)
        discrete_sde_from_config(config)  # refuse zero-terminal-SNR schedules by name
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
        grid = UniformTime() if self.grid is None else self.grid
        n_steps = None if isinstance(grid, Explicit) else n
        if n_steps is None and grid.ts.numel() - 1 != n:
            raise ValueError(
                f"num_inference_steps must be {grid.ts.numel() - 1} for this scheduler's "
                f"Explicit grid of {grid.ts.numel()} times; got {n}"
            )
        self.ts = grid.grid(self.sde, n_steps)
        times, self._eval_units, warm_up = self._plan(self.ts)
        device = torch.device("cpu" if device is None else device)
        # the train index reaches the network at float64 (float32 where the device has no float64)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.timesteps = torch.tensor(times, dtype=dtype, device=device)
        self._warm_up = warm_up
        self.num_inference_steps = n
        per_step = self.sampler.nfe_per_step
        self.order = per_step if len(times) == n * per_step + warm_up + self.denoise_final else 1
        self._begin_index = None
        self._k = 0

    def set_begin_index(self, begin_index: int = 0):
        """Start at ``timesteps[begin_index]`` (img2img): the first evaluation of a sampler step,
        from which the sampler runs on the rest of the grid, as ``scoresde.sample`` would on
        ``Explicit(ts[i:])``."""
        if self.timesteps is None:
            raise ValueError(
                "num_inference_steps is None: call set_timesteps() before set_begin_index()"
            )
        units = self._eval_units
        starts = {k: u for k, u in enumerate(units) if u >= 0 and (k == 0 or units[k - 1] != u)}
        if self._warm_up or type(self.sampler).run is not Sampler.run:
            starts = {0: 0}
        if begin_index not in starts:
            raise ValueError(
                f"begin_index must be the first evaluation of a sampler step, one of "
                f"{sorted(starts)[:12]}; got {begin_index!r}"
            )
        i = starts[begin_index]
        if i > 0:
            times, _, warm_up = self._plan(self.ts[i:])
            if warm_up or not _same_times(times, self.timesteps[begin_index:].tolist()):
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
             return_dict: bool = True):  # fmt: skip
        """Take the network's output at ``timesteps[k]`` and return where it is called next."""
        k = self._check_call(timestep, sample)
        if self.learned_variance and model_output.shape[1] == 2 * sample.shape[1]:
            model_output = model_output[:, : sample.shape[1]]
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output must have the shape of sample {tuple(sample.shape)}; got "
                f"{tuple(model_output.shape)}"
            )
        x0 = None
        with torch.no_grad():
            if k == self._first_k():
                self._start(sample)
            self._noise.source = GaussianNoise(generator)
            if k == 0 and self._warm_up:
                x_next = self._advance()
            else:
                if self._at_state and not self._net.outputs:
                    self._x = sample  # the network was evaluated here: the pipeline's state
                self._net.outputs.append(model_output)
                x_next = self._advance()
                x0 = self._den.last.x0
        self._k = k + 1
        if not return_dict:
            return (x_next, x0)
        return ScoresdeSchedulerOutput(prev_sample=x_next, pred_original_sample=x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``alpha(t) x0 + sigma(t) noise`` at train indices ``timesteps`` (img2img, training)."""
        t = self.sde.index_to_t(torch.as_tensor(timesteps, device=original_samples.device))
        t = t.reshape(-1) if t.ndim else t
        alpha = expand_to(self.sde.alpha(t), original_samples)
        sigma = expand_to(self.sde.sigma(t), original_samples)
        return alpha * original_samples + sigma * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # -- the replay engine --------------------------------------------------------------------

    def _plan(self, ts: Tensor) -> tuple[list[float], list[int], bool]:
        """The evaluation times of a run on ``ts``, the unit (sampler step) of each, and whether
        a discarded evaluation at ``x_T`` leads (the first evaluation is elsewhere)."""
        x = torch.zeros(1, 1, dtype=torch.float64)
        net = _RecordingNet(x)
        den = Denoiser(net, self.sde, self.parameterization, time_input=TrainIndex())
        noise = GaussianNoise(torch.Generator().manual_seed(0))
        units = []
        with torch.no_grad():
            state = self.sampler.init(den, self.sde, ts, x)
            for u, unit in enumerate(_units(self.sampler, ts, self.denoise_final)):
                x, state = unit(den, noise, x, state)
                units += [u] * (len(net.times) - len(units))
        warm_up = not net.first_at_start
        if warm_up:
            return [net.times[0], *net.times], [-1, *units], True
        return net.times, units, False

    def _first_k(self) -> int:
        return self._begin_index or 0

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

    def _start(self, sample: Tensor) -> None:
        ts = self.ts[self._start_step :] if self._begin_index else self.ts
        self._net = _ReplayNet()
        self._den = Denoiser(self._net, self.sde, self.parameterization, time_input=TrainIndex())
        self._noise = _ReplayNoise()
        self._units = _units(self.sampler, ts, self.denoise_final)
        self._u, self._x = 0, sample
        self._state = self.sampler.init(self._den, self.sde, ts, sample)
        self._at_state = True

    def _advance(self) -> Tensor:
        """Replay the current unit with the outputs so far; finished units move on. Returns the
        next evaluation's input, or the final sample."""
        while self._u < len(self._units):
            self._net.pos, self._noise.pos = 0, 0
            state = copy.deepcopy(self._state)
            try:
                x_next, state = self._units[self._u](self._den, self._noise, self._x, state)
            except _Pending as request:
                self._at_state = request.x is self._x
                return request.x
            self._x, self._state, self._u = x_next, state, self._u + 1
            self._net.outputs, self._noise.draws = [], []
        if not bool(torch.isfinite(self._x).all()):
            raise FloatingPointError(f"non-finite sample at the end of {self.sampler.name!r}")
        return self._x


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
