"""Run a fixed-grid sampler one network evaluation at a time, the caller making each call.

A loop that owns the network (a diffusers pipeline) calls it at a point and hands the output
back. :func:`plan_evaluations` runs the sampler once with a recording stand-in for the network
and lists every evaluation time (two per step for Heun, four for RK4, the stages of
DPM-Solver-2S/3S, the corrector calls of PC, ...); for a fixed grid this list depends only on the
grid, never on the state. :class:`StepwiseRun` then takes the outputs one by one: it re-runs the
sampler's current step (its ordinary ``step``, or the whole ``run`` of a backend that integrates
the grid itself) with the outputs received so far, replaying every noise draw, until the step
asks for an output it does not have yet, and returns that request's input, where the network is
called next. A finished step moves on to the next. The sampler's state is copied before every
replay, so a replay never sees its own partial updates. No thread and no change to any sampler;
a step with ``k`` evaluations replays its own arithmetic ``k`` times.

Where a step's first evaluation is at the state itself (every step-based sampler, except EDM's
churned steps), the caller's point becomes the state, so a loop that edits the state between
steps (inpainting) is honoured. A sampler whose first evaluation is not at ``x_T`` itself
(``torchdiffeq_fixed`` and ``torchsde`` evaluate a rescaled or reshaped copy) is planned with one
leading evaluation at ``x_T`` whose output is discarded: such a loop evaluates its ``x_T`` first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from ..denoiser import Denoiser, TimeInput
from ..noise import GaussianNoise, NoiseSource
from ..parameterization import Parameterization
from ..samplers import Sampler
from ..sde import SDE

__all__ = ["Plan", "plan_evaluations", "StepwiseRun"]


@dataclass(frozen=True)
class Plan:
    """The evaluations of a run: ``times`` in the network's time input, the unit (sampler step;
    -1 for a discarded leading evaluation) of each, and whether that leading one is there."""

    times: list[float]
    units: list[int]
    warm_up: bool

    def step_starts(self) -> dict[int, int]:
        """``{evaluation index: unit}`` of each unit's first evaluation."""
        u = self.units
        return {k: u[k] for k in range(len(u)) if u[k] >= 0 and (k == 0 or u[k - 1] != u[k])}


class _Pending(Exception):
    """Raised by the replay network at the first evaluation it has no output for."""

    def __init__(self, x: Tensor):
        self.x = x


class _ReplayNet:
    """Answers a step's evaluations with the outputs received so far, in order."""

    def __init__(self):
        self.outputs: list[Tensor] = []
        self.pos = 0

    def __call__(self, x, t_in, **kwargs):
        if self.pos == len(self.outputs):
            raise _Pending(x)
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
    """The run as replayable units ``fn(denoiser, noise, x, state) -> (x, state)``: the sampler's
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


def is_step_based(sampler: Sampler) -> bool:
    return type(sampler).run is Sampler.run


def plan_evaluations(
    sampler: Sampler,
    sde: SDE,
    parameterization: Parameterization,
    time_input: TimeInput,
    ts: Tensor,
    *,
    denoise_final: bool = False,
) -> Plan:
    """Every network evaluation of ``sampler`` on the grid ``ts``, from one recorded run."""
    x = torch.zeros(1, 1, dtype=torch.float64)
    net = _RecordingNet(x)
    den = Denoiser(net, sde, parameterization, time_input=time_input)
    noise = GaussianNoise(torch.Generator().manual_seed(0))
    units: list[int] = []
    with torch.no_grad():
        state = sampler.init(den, sde, ts, x)
        for u, unit in enumerate(_units(sampler, ts, denoise_final)):
            x, state = unit(den, noise, x, state)
            units += [u] * (len(net.times) - len(units))
    if not net.first_at_start:
        return Plan([net.times[0], *net.times], [-1, *units], True)
    return Plan(net.times, units, False)


class StepwiseRun:
    """One run of ``sampler`` on ``ts`` from ``x_T``, fed one network output at a time.

    Args:
        sampler, sde, parameterization, time_input: the sampler and how to read the network's
            outputs (as :class:`~scoresde.Denoiser` does).
        ts: the grid.
        x_T: the starting state (the point of the first evaluation, unless ``warm_up``).
        denoise_final: end with one more evaluation at ``ts[-1]`` and return its ``x0``.
        denoiser_options: further :class:`~scoresde.Denoiser` options (``x0_correction``,
            ``learned_variance``).
    """

    def __init__(self, sampler, sde, parameterization, time_input, ts, x_T, *, denoise_final,
                 **denoiser_options):  # fmt: skip
        self.sampler = sampler
        self._net = _ReplayNet()
        self.denoiser = Denoiser(
            self._net, sde, parameterization, time_input=time_input, **denoiser_options
        )
        self.noise = _ReplayNoise()
        self._units = _units(sampler, ts, denoise_final)
        self._u, self._x = 0, x_T
        self._state = sampler.init(self.denoiser, sde, ts, x_T)
        self._at_state = True

    @property
    def x0(self) -> Tensor | None:
        """The ``x0`` of the last output fed."""
        last = self.denoiser.last
        return None if last is None else last.x0

    def skip(self) -> Tensor:
        """Run up to the first evaluation without an output (after a discarded one)."""
        return self._advance()

    def feed(self, output: Tensor, x: Tensor) -> Tensor:
        """The network's ``output`` at ``x``; returns where it is called next, or the sample."""
        if self._at_state and not self._net.outputs:
            self._x = x  # the network was evaluated here: the caller's state
        self._net.outputs.append(output)
        return self._advance()

    def _advance(self) -> Tensor:
        while self._u < len(self._units):
            self._net.pos, self.noise.pos = 0, 0
            state = copy.deepcopy(self._state)
            try:
                x_next, state = self._units[self._u](self.denoiser, self.noise, self._x, state)
            except _Pending as request:
                self._at_state = request.x is self._x
                return request.x
            self._x, self._state, self._u = x_next, state, self._u + 1
            self._net.outputs, self.noise.draws = [], []
        if not bool(torch.isfinite(self._x).all()):
            raise FloatingPointError(f"non-finite sample at the end of {self.sampler.name!r}")
        return self._x
