"""Round trips between the four parameterizations, for random alpha, sigma and shapes.

``from_x0_eps`` followed by ``to_x0_eps`` must return ``(x0, eps)`` for every parameterization,
with ``x = alpha x0 + sigma eps`` and nothing assumed about ``alpha^2 + sigma^2``. The maps are
linear with condition number at most max(alpha, sigma, 1/alpha, 1/sigma)^2 <= 1e4 on the drawn
ranges, so float64 round trips hold to ~1e-16 * 1e4 * |x| (rtol 1e-10 leaves margin).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as S
from scoresde.parameterization import Parameterization, from_x0_eps, to_x0_eps
from scoresde.utils import expand_to

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3)


@given(
    alpha=st.floats(1e-2, 1.0), sigma=st.floats(1e-2, 50.0), dims=shapes,
    batch=st.integers(1, 4), p=st.sampled_from(list(Parameterization)), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_round_trip_recovers_x0_and_eps(alpha, sigma, dims, batch, p, seed):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, *dims), generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    a = expand_to(torch.full((batch,), alpha, dtype=torch.float64), x0)
    s = expand_to(torch.full((batch,), sigma, dtype=torch.float64), x0)
    x = a * x0 + s * eps
    out = from_x0_eps(x0, eps, a, s, p)
    x0_back, eps_back = to_x0_eps(out, x, a, s, p)
    torch.testing.assert_close(x0_back, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps_back, eps, rtol=1e-10, atol=1e-10)


def test_score_and_v_match_their_definitions():
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    a, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    torch.testing.assert_close(from_x0_eps(x0, eps, a, s, Parameterization.SCORE), -eps / s)
    torch.testing.assert_close(from_x0_eps(x0, eps, a, s, Parameterization.V), a * eps - s * x0)


def test_peer_spellings_parse():
    assert Parameterization.parse("epsilon") is Parameterization.EPS
    assert Parameterization.parse("sample") is Parameterization.X0
    assert Parameterization.parse("v_prediction") is Parameterization.V


@given(p=st.sampled_from(list(Parameterization)), t=st.floats(0.01, 0.99))
def test_denoiser_gives_the_same_x0_and_eps_in_every_parameterization(p, t):
    """An exact model wrapped in any parameterization predicts the same (x0, eps)."""
    sde = S.SubVPSDE()
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), stds=0.4)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = data.denoiser(sde, "x0").predict(x, t)
    got = data.denoiser(sde, p).predict(x, t)
    torch.testing.assert_close(got.x0, ref.x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.eps, ref.eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("p", ["eps", "x0", "v", "score"])
def test_prediction_converts_on_first_read_to_the_same_values(p):
    """``Denoiser.predict`` returns the network's own form untouched and converts the other form
    when it is read: the values equal the eager conversion ``to_x0_eps``."""
    sde = S.VPSDE()
    gen = torch.Generator().manual_seed(0)
    out, x = torch.randn(3, 2, generator=gen), torch.randn(3, 2, generator=gen)
    den = S.Denoiser(lambda x_, t_: out, sde, p)
    pred = den.predict(x, 0.3)
    t = torch.full((3,), 0.3, dtype=torch.float64)
    alpha, sigma = (sde.alpha(t)[:, None].float(), sde.sigma(t)[:, None].float())
    x0, eps = to_x0_eps(out, x, alpha, sigma, Parameterization(p))
    torch.testing.assert_close(pred.eps, eps)
    torch.testing.assert_close(pred.x0, x0)
    if p == "eps":
        assert pred.eps is out
    a, b = pred  # unpacks as (x0, eps)
    assert a is pred.x0 and b is pred.eps
