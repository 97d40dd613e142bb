"""Round trips between the five parameterizations, for random alpha, sigma and shapes.

``from_x0_eps`` followed by ``to_x0_eps`` must return ``(x0, eps)`` for every parameterization,
with ``x = alpha x0 + sigma eps`` and nothing assumed about ``alpha^2 + sigma^2``. The maps are
linear with condition number at most max(alpha, sigma, 1/alpha, 1/sigma)^2 <= 1e4 on the drawn
ranges, so float64 round trips hold to ~1e-16 * 1e4 * |x| (rtol 1e-10 leaves margin). For ``flow``
the derivatives are drawn with ``alpha' <= 0 <= sigma'`` (a decreasing log-SNR), so the
determinant ``alpha sigma' - sigma alpha' >= 1e-4`` and the same bound holds. At ``alpha = 0``
(zero terminal SNR) ``x0``, ``v`` and ``flow`` still round-trip; ``eps`` and ``score`` cannot.
"""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import scoresde as S
from scoresde.parameterization import Parameterization, from_x0_eps, to_x0_eps
from scoresde.utils import expand_to

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3)


def _round_trip(alpha, sigma, d_alpha, d_sigma, dims, batch, p, seed):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *dims), generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)

    def full(v):
        return expand_to(torch.full((batch,), v, dtype=torch.float64), x0)

    a, s, da, ds = full(alpha), full(sigma), full(d_alpha), full(d_sigma)
    x = a * x0 + s * eps
    out = from_x0_eps(x0, eps, a, s, p, da, ds)
    x0_back, eps_back = to_x0_eps(out, x, a, s, p, da, ds)
    torch.testing.assert_close(x0_back, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps_back, eps, rtol=1e-10, atol=1e-10)


@given(
    alpha=st.floats(1e-2, 1.0), sigma=st.floats(1e-2, 50.0), d_alpha=st.floats(-5.0, 0.0),
    d_sigma=st.floats(1e-2, 5.0), dims=shapes, batch=st.integers(1, 4),
    p=st.sampled_from(list(Parameterization)), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_round_trip_recovers_x0_and_eps(alpha, sigma, d_alpha, d_sigma, dims, batch, p, seed):
    _round_trip(alpha, sigma, d_alpha, d_sigma, dims, batch, p, seed)


@given(
    sigma=st.floats(1e-2, 50.0), d_alpha=st.floats(-5.0, -1e-2), d_sigma=st.floats(0.0, 5.0),
    dims=shapes, batch=st.integers(1, 4), seed=st.integers(0, 2**16),
    p=st.sampled_from([Parameterization.X0, Parameterization.V, Parameterization.FLOW]),
)  # fmt: skip
def test_round_trip_at_zero_terminal_snr(sigma, d_alpha, d_sigma, dims, batch, p, seed):
    """alpha = 0: the input is pure noise, yet x0-, v- and flow-predictions determine x0."""
    _round_trip(0.0, sigma, d_alpha, d_sigma, dims, batch, p, seed)


def test_flow_is_the_velocity_of_the_rectified_flow_path():
    """Under alpha = 1 - t, sigma = t the velocity is eps - x0 (Liu et al. 2023, eq. 1)."""
    sde = S.RectifiedFlow()
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    x0, eps = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    da, ds = sde.d_alpha(t)[:, None], sde.d_sigma(t)[:, None]
    u = from_x0_eps(x0, eps, a, s, Parameterization.FLOW, da, ds)
    torch.testing.assert_close(u, eps - x0, rtol=0, atol=0)
    x0_back, eps_back = to_x0_eps(u, a * x0 + s * eps, a, s, Parameterization.FLOW, da, ds)
    torch.testing.assert_close(x0_back, x0, rtol=1e-14, atol=1e-14)


def test_flow_without_derivatives_is_refused():
    x = torch.randn(2, 2, dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64)
    with pytest.raises(ValueError, match="d_alpha and d_sigma"):
        to_x0_eps(x, x, one, one, Parameterization.FLOW)


def test_score_and_v_match_their_definitions():
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    a, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    torch.testing.assert_close(from_x0_eps(x0, eps, a, s, Parameterization.SCORE), -eps / s)
    torch.testing.assert_close(from_x0_eps(x0, eps, a, s, Parameterization.V), a * eps - s * x0)


def test_peer_spellings_parse():
    assert Parameterization.parse("epsilon") is Parameterization.EPS
    assert Parameterization.parse("sample") is Parameterization.X0
    assert Parameterization.parse("v_prediction") is Parameterization.V
    assert Parameterization.parse("flow_prediction") is Parameterization.FLOW


@given(
    p=st.sampled_from(list(Parameterization)), t=st.floats(0.01, 0.99),
    sde=st.sampled_from([S.SubVPSDE(), S.RectifiedFlow(), S.VESDE()]),
)  # fmt: skip
def test_denoiser_gives_the_same_x0_and_eps_in_every_parameterization(p, t, sde):
    """An exact model wrapped in any parameterization predicts the same (x0, eps) (eps and score
    models are refused on rectified flow, whose alpha(T) = 0: tests/robustness)."""
    assume(not (sde.zero_terminal_snr and p in (Parameterization.EPS, Parameterization.SCORE)))
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), stds=0.4)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = data.denoiser(sde, "x0").predict(x, t)
    got = data.denoiser(sde, p).predict(x, t)
    torch.testing.assert_close(got.x0, ref.x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.eps, ref.eps, rtol=1e-9, atol=1e-9)
