"""Invariants of the forward SDEs, over random schedule parameters (hypothesis).

- VP and discrete VP: alpha^2 + sigma^2 = 1 (to float64 rounding; the identity defines sigma).
- lambda_ is strictly decreasing on [t_min, T], and inverse_lambda(lambda_(t)) = t. Tolerance:
  the inverse maps are closed-form (VP, sub-VP, VE) or piecewise-linear (discrete), so the
  round trip is exact up to rounding amplified by the condition number |dlambda/dt|^-1 ... at
  most ~1e-9 relative on these schedules.
- f and g^2 agree with the marginals: f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2
  (checked by autograd, which is exact for the closed forms; discrete VP by central differences
  inside a train interval, exact for its piecewise-linear log alpha).
- alpha' and sigma' (``d_alpha``, ``d_sigma``, which the flow parameterization needs) match autograd
  of alpha and sigma, and the velocity ``alpha' x0 + sigma' eps`` equals the probability-flow
  drift ``f x + g^2/(2 sigma) eps`` (to float64 rounding amplified by |f| <= 1e3).
- Rectified flow and zero-terminal-SNR schedules: alpha(T) = 0 exactly, lambda(T) = -inf,
  inverse_lambda(-inf) = T, and alpha' stays finite at T.
- A simulated forward SDE (Euler–Maruyama, fine grid, 20000 paths) from the marginal at t_a
  lands on the marginal at t_b: mean and std within 5 standard errors plus the scheme's O(h)
  bias bound.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as S

beta_pairs = st.tuples(st.floats(0.01, 1.0), st.floats(1.0, 30.0))
sigma_pairs = st.tuples(st.floats(1e-3, 0.5), st.floats(1.0, 100.0))


def vp_family(draw_pair, cls):
    return cls(beta_min=draw_pair[0], beta_max=draw_pair[1])


@st.composite
def any_sde(draw):
    kinds = ["vp", "subvp", "ve", "ddpm_linear", "ddpm_cosine", "rf", "ddpm_zero_snr"]
    kind = draw(st.sampled_from(kinds))
    if kind == "rf":
        return S.RectifiedFlow(t_min=draw(st.floats(1e-5, 1e-2)))
    if kind == "ddpm_zero_snr":
        return S.DiscreteVPSDE.scaled_linear(
            draw(st.integers(10, 2000)), rescale_betas_zero_snr=True
        )
    if kind == "vp":
        return S.VPSDE(*draw(beta_pairs))
    if kind == "subvp":
        return S.SubVPSDE(*draw(beta_pairs))
    if kind == "ve":
        return S.VESDE(*draw(sigma_pairs))
    n = draw(st.integers(10, 2000))
    if kind == "ddpm_linear":
        return S.DiscreteVPSDE.linear(n, 1e-4, draw(st.floats(0.005, 0.05)))
    return S.DiscreteVPSDE.cosine(n)


def times(sde, k=64):
    return torch.linspace(sde.t_min, sde.T, k, dtype=torch.float64)


@given(pair=beta_pairs, n=st.integers(10, 2000))
def test_vp_alpha_sigma_lie_on_the_unit_circle(pair, n):
    for sde in (S.VPSDE(*pair), S.DiscreteVPSDE.linear(n)):
        t = times(sde)
        torch.testing.assert_close(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t),
                                   rtol=0, atol=1e-14)  # fmt: skip


@given(pair=beta_pairs)
def test_subvp_variance_lies_below_vp(pair):
    vp, sub = S.VPSDE(*pair), S.SubVPSDE(*pair)
    t = times(vp)
    torch.testing.assert_close(sub.alpha(t), vp.alpha(t), rtol=1e-15, atol=0)
    assert (sub.sigma(t) <= vp.sigma(t)).all()


@given(sde=any_sde())
def test_lambda_is_strictly_decreasing_and_inverse_lambda_inverts_it(sde):
    t = times(sde, 257)
    lam = sde.lambda_(t)
    assert (lam[1:] < lam[:-1]).all()
    torch.testing.assert_close(sde.inverse_lambda(lam), t, rtol=1e-9, atol=1e-12)


@given(sde=any_sde())
def test_log_snr_is_twice_lambda(sde):
    t = times(sde)
    torch.testing.assert_close(sde.log_snr(t), 2 * sde.lambda_(t), rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "sde", [S.VPSDE(), S.SubVPSDE(), S.VESDE(), S.VPSDE(1.0, 1.0), S.RectifiedFlow()], ids=repr
)
def test_drift_and_diffusion_are_consistent_with_the_marginals(sde):
    t = torch.linspace(sde.t_min, sde.T - 1e-3 * sde.zero_terminal_snr, 33, dtype=torch.float64)
    t = t.requires_grad_(True)
    log_alpha = sde.log_alpha(t)
    var = sde.sigma(t) ** 2
    (dlog_alpha,) = torch.autograd.grad(log_alpha.sum(), t)
    (dvar,) = torch.autograd.grad(var.sum(), t)
    t = t.detach()
    torch.testing.assert_close(sde.f(t), dlog_alpha, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        sde.g2(t), dvar - 2 * sde.f(t) * var.detach(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("sde", [S.DiscreteVPSDE.linear(), S.DiscreteVPSDE.cosine(100)], ids=repr)
def test_discrete_schedule_drift_matches_its_piecewise_linear_log_alpha(sde):
    n = torch.arange(0, sde.N - 1, dtype=torch.float64)
    mid = sde.index_to_t(n + 0.5)  # inside train interval [n, n+1]: log alpha is linear there
    h = 0.25 / sde.N
    dlog = (sde.log_alpha(mid + h) - sde.log_alpha(mid - h)) / (2 * h)
    torch.testing.assert_close(sde.f(mid), dlog, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(sde.g2(mid), -2 * sde.f(mid), rtol=0, atol=0)
    # the schedule's own alphas_cumprod sit at the train steps
    torch.testing.assert_close(
        sde.alpha(sde.index_to_t(n)) ** 2, sde.alphas_cumprod[:-1], rtol=1e-12, atol=0
    )


FLOWS = [S.VPSDE(), S.SubVPSDE(), S.VESDE(), S.RectifiedFlow()]


@pytest.mark.parametrize("sde", FLOWS, ids=repr)
def test_alpha_and_sigma_derivatives_match_autograd(sde):
    t = torch.linspace(sde.t_min, sde.T - 1e-3, 33, dtype=torch.float64).requires_grad_(True)
    (d_alpha,) = torch.autograd.grad(sde.alpha(t).sum(), t)
    (d_sigma,) = torch.autograd.grad(sde.sigma(t).sum(), t)
    t = t.detach()
    torch.testing.assert_close(sde.d_alpha(t), d_alpha, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sde.d_sigma(t), d_sigma, rtol=1e-10, atol=1e-12)


ZERO_SNR = S.DiscreteVPSDE.scaled_linear(rescale_betas_zero_snr=True)


@pytest.mark.parametrize("sde", [*FLOWS, S.DiscreteVPSDE.linear(100), ZERO_SNR], ids=repr)
def test_velocity_is_the_probability_flow_drift(sde):
    t = torch.linspace(sde.t_min, sde.T - 2e-3, 17, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(17, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(17, 3, generator=gen, dtype=torch.float64)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    x = a * x0 + s * eps
    drift = sde.f(t)[:, None] * x + (sde.g2(t) / (2 * sde.sigma(t)))[:, None] * eps
    torch.testing.assert_close(sde.velocity(x0, eps, t), drift, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", [S.RectifiedFlow(), ZERO_SNR], ids=repr)
def test_zero_terminal_snr_endpoint_is_exact(sde):
    T = torch.tensor(sde.T, dtype=torch.float64)
    assert sde.zero_terminal_snr
    assert float(sde.alpha(T)) == 0.0 and float(sde.sigma(T)) == 1.0
    assert float(sde.lambda_(T)) == -math.inf
    assert float(sde.inverse_lambda(torch.tensor(-math.inf, dtype=torch.float64))) == 1.0
    assert math.isfinite(float(sde.d_alpha(T))) and float(sde.d_alpha(T)) < 0
    assert math.isfinite(float(sde.d_sigma(T)))
    assert not S.VPSDE().zero_terminal_snr and not S.DiscreteVPSDE.linear().zero_terminal_snr


def test_zero_snr_rescale_matches_lin_et_al_and_diffusers():
    """Lin et al. 2024, Alg. 1 as diffusers implements it (its function run on float64 betas:
    the same arithmetic, so agreement to float64 rounding, amplified by 1/beta <= 1e4)."""
    ddpm = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ref = ddpm.rescale_zero_terminal_snr(betas.clone())
    sde = S.DiscreteVPSDE(betas, rescale_betas_zero_snr=True)
    torch.testing.assert_close(sde.betas, ref, rtol=1e-11, atol=1e-14)
    assert float(sde.betas[-1]) == 1.0
    torch.testing.assert_close(sde.alphas_cumprod[0], 1 - betas[0], rtol=1e-12, atol=0)
    n = torch.arange(0, 999, dtype=torch.float64)
    torch.testing.assert_close(
        sde.alpha(sde.index_to_t(n)) ** 2, sde.alphas_cumprod[:-1], rtol=1e-10, atol=1e-300
    )


def test_discrete_time_index_round_trip_uses_the_schedules_own_n():
    sde = S.DiscreteVPSDE.linear(n=250)
    torch.testing.assert_close(sde.t_to_index(sde.t_min), torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(sde.t_to_index(sde.T), torch.tensor(249.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "sde", [S.VPSDE(), S.SubVPSDE(), S.VESDE(0.05, 5.0), S.DiscreteVPSDE.cosine(200)], ids=repr
)
def test_simulated_forward_sde_matches_the_marginal(sde):
    """x0 = 1.5 (a point mass) evolved from t_a to t_b by Euler–Maruyama on 2000 steps."""
    gen = torch.Generator().manual_seed(0)
    n_paths, n_steps = 20000, 2000
    t_a, t_b = 0.2, 0.8
    x0 = torch.full((n_paths, 1), 1.5, dtype=torch.float64)
    x = sde.perturb(x0, t_a, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    ts = torch.linspace(t_a, t_b, n_steps + 1, dtype=torch.float64)
    for i in range(n_steps):
        h = ts[i + 1] - ts[i]
        x = (
            x
            + h * sde.drift(x, ts[i])
            + (h * sde.g2(ts[i])).sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        )
    mean, std = sde.marginal(x0[:1], t_b)
    se_mean = std.item() / math.sqrt(n_paths)
    se_std = std.item() / math.sqrt(2 * (n_paths - 1))
    # EM's weak error is O(h): bounded by h * (|f| + g^2) over the interval, relative
    bias = (t_b - t_a) / n_steps * float((sde.f(ts).abs() + sde.g2(ts) / std.item() ** 2).max())
    assert abs(x.mean().item() - mean.item()) < 5 * se_mean + bias * abs(mean.item())
    assert abs(x.std().item() - std.item()) < 5 * se_std + bias * std.item()


def test_prior_logp_is_the_gaussian_density():
    sde = S.VESDE(0.01, 10.0)
    z = sde.prior_sample((4, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 10.0).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expected)
