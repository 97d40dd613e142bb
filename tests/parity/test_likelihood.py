"""PF-ODE log-likelihood against closed forms.

Gaussian data ``N(mu, s^2 I)`` stays Gaussian under every SDE, so with its exact denoiser the PF-ODE
transports ``p_{t_min}`` exactly onto ``p_T`` and ``log p_{t_min}(x)`` is known in closed form
(``scoresde.exact.Gaussian.log_prob``). Giving the solve the exact ``log p_T`` as its prior leaves
the ODE solve as the only error: dopri5 at rtol = atol = 1e-8 keeps the local error of each
accepted step below ~1e-8 of the state (|y| <= ~400 here, since y = x / alpha and alpha_T = 6.6e-3
under VP), accumulated over <= ~200 steps: under 1e-4 nats in total, the tolerance used.

Hutchinson's estimator is unbiased: on an anisotropic 2-D mixture the mean of 1000 one-probe
estimates for the same point matches the exact divergence within 5 standard errors. The image
path (dequantisation, ``log2(127.5)`` offset) is checked against the closed form evaluated at the
same dequantised points; its only other error is the VP prior N(0, I) standing in for the exact
``p_T`` (a log-density difference ~alpha_T^2 ~ 4e-5 per dimension), hence the 1e-3 bits/dim.
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.data import images_to_float
from scoresde.likelihood import image_nll_bpd, log_prob
from tests.helpers import gmm_2d

SDES = {
    "vp": S.VPSDE(), "subvp": S.SubVPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear(),
    "ddpm_cosine": S.DiscreteVPSDE.cosine(),
}  # fmt: skip


CASES = [(key, "eps") for key in sorted(SDES)] + [("vp", "x0"), ("ve", "v")]


@pytest.mark.parametrize("sde_key, parameterization", CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_log_prob_matches_the_closed_form_for_gaussian_data(sde_key, parameterization):
    sde = SDES[sde_key]
    data = S.Gaussian(torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64), std=0.7)
    x = data.sample_marginal(sde, sde.t_min, 6, generator=torch.Generator().manual_seed(0))
    den = data.denoiser(sde, parameterization)
    res = log_prob(den, x, divergence="exact", rtol=1e-8, atol=1e-8,
                   prior_logp=lambda z: data.log_prob(z, sde.T, sde))  # fmt: skip
    exact = data.log_prob(x, sde.t_min, sde)
    err = (res.logp - exact).abs().max().item()
    assert err < 1e-4, f"max |log p - exact| = {err:.2e} ({res.nfe} NFE)"
    # the transported points are the closed-form flow of x
    torch.testing.assert_close(res.z, data.flow(x, sde.t_min, sde.T, sde), rtol=1e-5, atol=1e-5)


def test_hutchinson_estimate_is_unbiased_for_the_exact_divergence():
    sde, data = S.VPSDE(), gmm_2d()
    den = data.denoiser(sde, "eps")
    x = torch.tensor([[0.4, -0.3]], dtype=torch.float64)
    exact = log_prob(den, x, divergence="exact", rtol=1e-7, atol=1e-7).logp.item()
    many = log_prob(den, x.expand(1000, 2).clone(), divergence="hutchinson", rtol=1e-7, atol=1e-7,
                    generator=torch.Generator().manual_seed(0)).logp  # fmt: skip
    se = many.std().item() / math.sqrt(many.numel())
    assert many.std() > 0  # a real estimator, not the exact trace by accident
    assert abs(many.mean().item() - exact) < 5 * se, (many.mean().item(), exact, se)


def test_image_bits_per_dim_match_the_closed_form_at_the_dequantised_points():
    sde = S.VPSDE()
    data = S.Gaussian(torch.zeros(1, 2, 2, dtype=torch.float64), std=0.5)
    gen = torch.Generator().manual_seed(0)
    u = ((data.sample(8, generator=gen).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    res = image_nll_bpd(data.denoiser(sde, "eps"), u, batch_size=4, rtol=1e-7, atol=1e-7,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    replay = torch.Generator().manual_seed(1)
    expected = []
    for k in range(0, 8, 4):
        jitter = torch.rand(u[k : k + 4].shape, generator=replay) - 0.5
        torch.randint(0, 2, u[k : k + 4].shape, generator=replay)  # the batch's Hutchinson probe
        x = (images_to_float(u[k : k + 4]) + jitter / 127.5).double()
        expected.append(-data.log_prob(x, sde.t_min, sde) / (4 * math.log(2)) + math.log2(127.5))
    expected = torch.cat(expected)
    assert res.n == 8
    torch.testing.assert_close(res.per_image, expected, rtol=0, atol=1e-3)


def test_bad_arguments_are_named():
    den = gmm_2d().denoiser(S.VPSDE(), "eps")
    with pytest.raises(ValueError, match=r"divergence must be one of .*got 'trace'"):
        log_prob(den, torch.zeros(2, 2), divergence="trace")
    with pytest.raises(ValueError, match="rtol must be a finite real number in"):
        log_prob(den, torch.zeros(2, 2), rtol=0.0)
    with pytest.raises(ValueError, match=r"images must be a uint8 tensor of shape \(N, C, H, W\)"):
        image_nll_bpd(den, torch.zeros(2, 1, 2, 2))
