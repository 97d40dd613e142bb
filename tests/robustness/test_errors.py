"""Bad input raises a clear error naming the argument, the value and what was expected."""

import math

import pytest
import torch

import scoresde as S
from scoresde.utils import expand_to

VP = S.VPSDE()


def den():
    return S.Gaussian(torch.zeros(2)).denoiser(VP)


CASES = [
    ("negative beta_min", lambda: S.VPSDE(beta_min=-0.1), r"beta_min must be .*got -0.1"),
    ("beta_max below beta_min", lambda: S.VPSDE(1.0, 0.5), r"beta_max must be .*\[1.0, inf\].*got 0.5"),
    ("nan beta_max", lambda: S.SubVPSDE(0.1, math.nan), r"beta_max must be a finite real.*got nan"),
    ("sigma_min >= sigma_max", lambda: S.VESDE(1.0, 0.5), r"sigma_max must be .*got 0.5"),
    ("zero sigma_min", lambda: S.VESDE(0.0, 1.0), r"sigma_min must be .*\(0.0, inf\].*got 0.0"),
    ("t_min zero", lambda: S.VPSDE(t_min=0.0), r"t_min must be .*got 0.0"),
    ("t_min above T", lambda: S.VPSDE(t_min=2.0), r"t_min must be .*\(0.0, 1.0\).*got 2.0"),
    ("beta >= 1", lambda: S.DiscreteVPSDE([0.1, 1.5]), r"betas must all lie in the open interval \(0, 1\), the last one in \(0, 1\]; found 1.5"),
    ("too few betas", lambda: S.DiscreteVPSDE([0.1]), r"betas must hold at least 2 values; got 1"),
    ("n = 1", lambda: S.DiscreteVPSDE.linear(n=1), r"n must be an int >= 2; got 1"),
    ("non-monotone grid", lambda: S.Explicit([1.0, 0.2, 0.5, 0.01]), r"ts must be strictly decreasing.*ts\[1\]=0.2 is followed by ts\[2\]=0.5"),
    ("nan in grid", lambda: S.Explicit([1.0, math.nan, 0.01]), r"ts must be finite"),
    ("grid outside [t_min, T]", lambda: S.Explicit([1.5, 0.5, 0.01]).grid(VP), r"ts must lie in \[t_min, T\]"),
    ("karras rho 0", lambda: S.Karras(rho=0), r"rho must be .*got 0"),
    ("t_end >= t_start", lambda: S.UniformTime(t_start=0.3, t_end=0.5), r"t_end must be < t_start=0.3; got t_end=0.5"),
    ("n_steps 0", lambda: S.sample("pf_euler", den(), shape=(2, 2), n_steps=0), r"n_steps must be an int >= 1; got 0"),
    ("n_steps float", lambda: S.sample("pf_euler", den(), shape=(2, 2), n_steps=2.5), r"n_steps must be an int >= 1; got 2.5"),
    ("n_steps missing", lambda: S.sample("pf_euler", den(), shape=(2, 2)), r"n_steps must be an int >= 1 for grid UniformTime\(\); got None"),
    ("x_T shape mismatch", lambda: S.sample("pf_euler", den(), shape=(2, 2), x_T=torch.zeros(3, 2), n_steps=2), r"x_T has shape \(3, 2\) but shape=\(2, 2\)"),
    ("x_T with nan", lambda: S.sample("pf_euler", den(), x_T=torch.full((2, 2), math.nan), n_steps=2), r"x_T must be finite"),
    ("neither shape nor x_T", lambda: S.sample("pf_euler", den(), n_steps=2), r"give either shape=.* or x_T"),
    ("bad shape", lambda: S.sample("pf_euler", den(), shape=(2, 0), n_steps=2), r"shape must be a tuple of positive ints .*got \(2, 0\)"),
    ("unknown sampler", lambda: S.get_sampler("dpm_solver_9000"), r"unknown sampler 'dpm_solver_9000'; valid names are \["),
    ("unknown parameterization", lambda: S.Denoiser(lambda x, t: x, VP, "noise_pred"), r"parameterization must be one of .*got 'noise_pred'"),
    ("unknown time_input", lambda: S.Denoiser(lambda x, t: x, VP, time_input="steps"), r"time_input must be a TimeInput or one of .*got 'steps'"),
    ("negative seed", lambda: S.BrownianNoise(seed=-1), r"seed must be an int >= 0; got -1"),
    ("non-positive mixture std", lambda: S.GaussianMixture(torch.zeros(2, 2), stds=[0.5, -1.0]), r"stds must be a positive float or a \(2,\) tensor"),
    ("coefficient batch mismatch", lambda: expand_to(torch.ones(3), torch.ones(2, 4)), r"coefficient of shape \(3,\) does not match the batch of x with shape \(2, 4\)"),
    ("eps model on zero SNR", lambda: S.Denoiser(lambda x, t: x, S.DiscreteVPSDE.linear(rescale_betas_zero_snr=True), "eps"), r"parameterization='eps' is undefined on a zero-terminal-SNR schedule .*alpha\(T\) = 0.*expected a 'x0', 'v' or 'flow'"),
    ("score model on rectified flow", lambda: S.Denoiser(lambda x, t: x, S.RectifiedFlow(), "score"), r"parameterization='score' is undefined on a zero-terminal-SNR schedule \(RectifiedFlow"),
    ("unknown flow shift mode", lambda: S.FlowMatchShift(mu=0.5, time_shift_type="cubic"), r"time_shift_type must be one of \['exponential', 'linear'\]; got 'cubic'"),
    ("non-positive flow shift", lambda: S.FlowMatchShift(shift=0.0), r"shift must be .*got 0.0"),
    ("rectified flow t_min", lambda: S.RectifiedFlow(t_min=1.0), r"t_min must be .*\(0.0, 1.0\).*got 1.0"),
    ("lambda grid from alpha = 0", lambda: S.UniformLambda().grid(S.RectifiedFlow(), 4), r"UniformLambda\(\) spaces times in lambda .*-inf at t_start=1.0.*expected t_start < T"),
    ("non-bool zero-SNR flag", lambda: S.DiscreteVPSDE.linear(rescale_betas_zero_snr="yes"), r"rescale_betas_zero_snr must be a bool; got 'yes'"),
]  # fmt: skip


@pytest.mark.parametrize("make, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_value_error_that_says_what_is_wrong(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_there_are_at_least_fifteen_checked_inputs():
    assert len(CASES) >= 15


def test_non_callable_net_and_wrong_types_raise_type_errors():
    with pytest.raises(TypeError, match="net must be callable"):
        S.Denoiser(42, VP)
    with pytest.raises(TypeError, match="sde must be a scoresde.SDE"):
        S.Denoiser(lambda x, t: x, "vp")
    with pytest.raises(TypeError, match="grid must be a TimeGrid"):
        S.sample("pf_euler", den(), shape=(2, 2), n_steps=2, grid="karras")


def test_network_output_of_the_wrong_shape_is_reported():
    d = S.Denoiser(lambda x, t: x[:, :1], VP)
    with pytest.raises(
        ValueError, match=r"of shape \(2, 1\) for a torch.float\d+ input of shape \(2, 2\)"
    ):
        S.sample("pf_euler", d, shape=(2, 2), n_steps=2, progress=False)


def test_train_index_needs_a_discrete_schedule():
    d = S.Denoiser(lambda x, t: x, VP, time_input="index")
    with pytest.raises(TypeError, match=r"TrainIndex\(\) needs a discrete schedule"):
        d.predict(torch.zeros(2, 2), 0.5)
