"""The DSM loss: one objective in five parameterizations, and unbiased under importance sampling.

- With the ideal denoiser of an exact problem and the same ``(x0, t, eps)``, the ``"snr"`` (eps
  MSE) and ``"likelihood"`` losses are the same number whatever the network outputs (eps, x0, v,
  score or flow): the weights convert each native error into the same eps / score error. An algebraic
  identity, so the tolerance is float64 rounding (rtol 1e-9; ``x0 -> eps`` divides by ``sigma``
  down to 0.01, which costs two digits).
- ``LambdaTimeSampler``'s density integrates to 1 on ``[t_min, T]`` for every SDE (trapezoid rule
  on 2*10^5 points in log t: error < 1e-4) and its draws have the mean that density implies
  (within 5 standard errors of 20 000 draws).
- The likelihood-weighted loss has the same expectation under uniform and importance-sampled t
  (within 5 combined standard errors of 20 000 draws each). (Whether importance sampling lowers
  the variance depends on the model's errors, so that is not asserted.)
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.losses import LambdaTimeSampler, dsm_loss
from tests.helpers import ring_mixture

SDES = {"vp": S.VPSDE(), "subvp": S.SubVPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


@pytest.mark.parametrize("weighting", ["snr", "likelihood"])
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_snr_and_likelihood_losses_do_not_depend_on_the_parameterization(sde_key, weighting):
    sde, data = SDES[sde_key], ring_mixture()
    gen = torch.Generator().manual_seed(0)
    x0 = data.sample(64, generator=gen)
    t = sde.t_min + (sde.T - sde.t_min) * torch.rand(64, generator=gen, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    # a slightly wrong model, so that the losses are not all zero
    wrong = S.GaussianMixture(data.means * 1.1, stds=0.35)
    losses = {
        p: dsm_loss(
            wrong.denoiser(sde, p), x0, weighting=weighting, t=t, noise=noise, reduce="none"
        )
        for p in ("eps", "x0", "v", "score", "flow")
    }
    assert losses["eps"].min() > 0
    for p, value in losses.items():
        torch.testing.assert_close(value, losses["eps"], rtol=1e-9, atol=0, msg=f"{p} vs eps")
    plain = dsm_loss(
        wrong.denoiser(sde, "eps"), x0, weighting="none", t=t, noise=noise, reduce="none"
    )
    if weighting == "snr":  # eps MSE is the plain loss of an eps network
        torch.testing.assert_close(plain, losses["eps"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_lambda_time_sampler_is_a_normalised_density_it_samples_from(sde_key):
    sde, sampler = SDES[sde_key], LambdaTimeSampler()
    t = torch.exp(
        torch.linspace(math.log(sde.t_min), math.log(sde.T), 200_001, dtype=torch.float64)
    )
    p = sampler.density(sde, t)
    assert abs(torch.trapezoid(p, t).item() - 1.0) < 1e-4
    mean = torch.trapezoid(p * t, t).item()
    draws = sampler.sample(sde, 20_000, generator=torch.Generator().manual_seed(1))
    assert draws.min() >= sde.t_min and draws.max() <= sde.T
    se = draws.std().item() / math.sqrt(draws.numel())
    assert abs(draws.mean().item() - mean) < 5 * se


@pytest.mark.parametrize("sde_key", ["vp", "ve"])
def test_importance_sampling_keeps_the_likelihood_loss_unbiased(sde_key):
    sde, data = SDES[sde_key], ring_mixture()
    den = S.GaussianMixture(data.means * 1.1, stds=0.35).denoiser(sde, "eps")
    gen = torch.Generator().manual_seed(2)
    x0 = data.sample(20_000, generator=gen)
    runs = {
        s: dsm_loss(den, x0, weighting="likelihood", t_sampler=s, generator=gen, reduce="none")
        for s in ("uniform", "lambda")
    }
    m = {s: v.mean().item() for s, v in runs.items()}
    se = math.sqrt(sum(v.var().item() / v.numel() for v in runs.values()))
    assert abs(m["uniform"] - m["lambda"]) < 5 * se, (m, se)


def test_bad_arguments_are_named():
    den = ring_mixture().denoiser(S.VPSDE(), "eps")
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"weighting must be one of \['none', 'snr', 'likelihood'\]; got 'elbo'"
    ):
        dsm_loss(den, x0, weighting="elbo")
    with pytest.raises(ValueError, match=r"t_sampler must be a TimeSampler or one of .*got 'beta'"):
        dsm_loss(den, x0, t_sampler="beta")
    with pytest.raises(ValueError, match=r"t must have shape \(4,\) to match x0; got \(3,\)"):
        dsm_loss(den, x0, t=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'none'; got 'sum'"):
        dsm_loss(den, x0, reduce="sum")
