"""Bad options of the stochastic samplers fail early and say what was wrong.

Every invalid option raises ``ValueError`` at construction, naming the argument and the value
(and, for choices, the valid ones); options are keyword-only. Failures that can only show at run
time (a noise source without auxiliary draws, a model returning NaN inside torchsde's loop) raise
with the sampler, step and remedy named.
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.noise import NoiseSource
from scoresde.samplers import (
    AnnealedLangevin,
    DPM2Ancestral,
    DPMSolverPP2SAncestral,
    DPMSolverPPSDE,
    EDMStochastic,
    LangevinCorrector,
    PredictorCorrector,
    SDEDPMSolverPP2M,
    SDEDPMSolverPP3M,
    TorchsdeSampler,
)
from tests.helpers import gmm_2d

BAD_OPTIONS = [
    (LangevinCorrector, {"snr": 0.0}, "snr"),
    (LangevinCorrector, {"snr": -0.16}, "snr"),
    (LangevinCorrector, {"snr": math.nan}, "snr"),
    (LangevinCorrector, {"snr": "0.16"}, "snr"),
    (LangevinCorrector, {"n_steps": -1}, "n_steps"),
    (LangevinCorrector, {"n_steps": 1.5}, "n_steps"),
    (LangevinCorrector, {"n_steps": True}, "n_steps"),
    (PredictorCorrector, {"predictor": "euler_maruyma"}, "valid names"),
    (PredictorCorrector, {"predictor": "torchsde"}, "step-based"),
    (PredictorCorrector, {"predictor": 42}, "predictor"),
    (PredictorCorrector, {"corrector": "ald"}, "corrector"),
    (AnnealedLangevin, {"n_steps_each": 0}, "n_steps_each"),
    (AnnealedLangevin, {"step_lr": -2e-5}, "step_lr"),
    (AnnealedLangevin, {"snr": 0.0}, "snr"),
    (AnnealedLangevin, {"snr": 0.16, "step_lr": 2e-5}, "at most one"),
    (EDMStochastic, {"S_churn": -1.0}, "S_churn"),
    (EDMStochastic, {"S_tmin": -0.05}, "S_tmin"),
    (EDMStochastic, {"S_tmin": 1.0, "S_tmax": 0.5}, "S_tmax"),
    (EDMStochastic, {"S_tmax": math.nan}, "S_tmax"),
    (EDMStochastic, {"S_noise": 0.0}, "S_noise"),
    (SDEDPMSolverPP2M, {"lower_order_final": "yes"}, "lower_order_final"),
    (SDEDPMSolverPP2M, {"eta": -0.5}, "eta"),
    (SDEDPMSolverPP2M, {"s_noise": -1.0}, "s_noise"),
    (SDEDPMSolverPP2M, {"solver_type": "rk4"}, "solver_type"),
    (SDEDPMSolverPP2M, {"solver_type": "Heun"}, "solver_type"),
    (SDEDPMSolverPP3M, {"eta": math.inf}, "eta"),
    (SDEDPMSolverPP3M, {"s_noise": -0.1}, "s_noise"),
    (SDEDPMSolverPP3M, {"lower_order_final": 1}, "lower_order_final"),
    (DPMSolverPPSDE, {"eta": -1.0}, "eta"),
    (DPMSolverPPSDE, {"s_noise": math.nan}, "s_noise"),
    (DPMSolverPPSDE, {"r": 0.0}, "r"),
    (DPMSolverPPSDE, {"r": 1.0}, "r"),
    (DPMSolverPP2SAncestral, {"eta": -0.1}, "eta"),
    (DPMSolverPP2SAncestral, {"eta": 1.5}, "eta"),
    (DPMSolverPP2SAncestral, {"s_noise": -2.0}, "s_noise"),
    (DPM2Ancestral, {"eta": 1.01}, "eta"),
    (DPM2Ancestral, {"s_noise": "1"}, "s_noise"),
    (TorchsdeSampler, {"method": "heun"}, "euler"),
]


@pytest.mark.parametrize(
    "cls, options, match",
    BAD_OPTIONS,
    ids=[f"{c.__name__}-{'-'.join(o)}" for c, o, _ in BAD_OPTIONS],
)
def test_bad_option_raises_value_error_naming_it(cls, options, match):
    with pytest.raises(ValueError, match=match) as err:
        cls(**options)
    if match in options:
        assert repr(options[match]) in str(err.value)


@pytest.mark.parametrize(
    "cls",
    [EDMStochastic, AnnealedLangevin, SDEDPMSolverPP2M, SDEDPMSolverPP3M, DPMSolverPPSDE,
     DPMSolverPP2SAncestral, DPM2Ancestral, TorchsdeSampler],
)  # fmt: skip
def test_options_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(1.0)


def test_infinite_s_tmax_is_allowed():
    assert EDMStochastic(S_tmax=math.inf).S_tmax == math.inf


def test_bad_n_steps_is_rejected_for_stochastic_samplers():
    den = gmm_2d().denoiser(S.VPSDE())
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n_steps"):
            S.sample("pc", den, shape=(2, 2), n_steps=n, progress=False)


class PathOnly(NoiseSource):
    """A noise source with path increments but no auxiliary draws."""

    def __call__(self, t, t_next, like):
        return torch.zeros_like(like)


@pytest.mark.parametrize("key", ["pc", "annealed_langevin"])
def test_langevin_noise_needs_auxiliary_draws(key):
    den = gmm_2d().denoiser(S.VESDE())
    with pytest.raises(NotImplementedError, match="no auxiliary draws"):
        S.sample(key, den, shape=(2, 2), n_steps=2, noise=PathOnly(), progress=False)


def test_torchsde_reports_the_step_of_a_non_finite_sample():
    sde = S.VPSDE()
    calls = []

    def net(x, t):
        calls.append(1)
        return torch.full_like(x, math.nan) if len(calls) > 3 else torch.zeros_like(x)

    den = S.Denoiser(net, sde, "eps")
    with pytest.raises(FloatingPointError, match=r"step 3 .*'torchsde'"):
        S.sample("torchsde", den, shape=(2, 2), n_steps=6, noise=S.BrownianNoise(seed=0),
                 progress=False)  # fmt: skip


def test_brownian_noise_rejects_a_non_bool_levy_area():
    with pytest.raises(ValueError, match="levy_area"):
        S.BrownianNoise(seed=0, levy_area="space-time")
