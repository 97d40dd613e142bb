"""Inversion (a deterministic sampler on an increasing grid) converges at the sampler's order.

Problem: the 2-D Gaussian mixture ``gmm_2d`` under VP and VE (float64); the data are 32 draws of
its marginal at ``t_min``. Two properties, for every fixed-step deterministic registry sampler
that is not in ``NOT_INVERTIBLE`` (which must refuse instead):

* ``invert`` maps the data to ``T``; its error (relative to the size of the states at ``T``)
  against the exact PF-ODE solution from ``t_min`` to ``T`` (scipy DOP853, rtol = atol = 1e-10)
  falls at the declared order: least-squares slope
  within 0.25 of ``sampler.order``, on the step counts of ``tests/convergence/test_ode_order.py``
  (same window argument: errors between 1e-9 and 1).
* invert-then-sample on the same grid reconstructs the data with an error that falls at least at
  the declared order (slope >= order - 0.25). The round trip is often one order better: for a
  one-step method with local error ``C h^(p+1)`` the backward step's is ``C (-h)^(p+1)``, which
  cancels it at leading order when ``p`` is even (measured: slope 3 for the second-order
  methods, 5 for RK4, p for odd p), so only the lower bound is the method's property.
"""

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS, Sampler
from scoresde.samplers.inversion import NOT_INVERTIBLE
from tests.convergence.test_ode_order import STEP_COUNTS, STEP_COUNTS_BY_KEY
from tests.helpers import empirical_order, format_table, gmm_2d, reference_solution

SDES = {"vp": S.VPSDE(), "ve": S.VESDE()}
# The noise-prediction third-order multistep update (dpm_solver_3m, and deis_3 which is the same
# update in lambda) is pre-asymptotic longer when it starts at the data end: its error ratio per
# doubling is 10.6, 16.9, 13.1, 9.3, 7.5 from n = 12 to 384 (VP), reaching 2^3 = 8 from n ~ 200;
# there the eps prediction changes fastest in lambda_, and its warm-up steps land there.
INVERSION_STEP_COUNTS_BY_KEY = {**STEP_COUNTS_BY_KEY, "dpm_solver_3m": [96, 192, 384, 768],
                                "deis_3": [96, 192, 384, 768]}  # fmt: skip


def deterministic_keys():
    keys = []
    for key, cls in sorted(SAMPLERS.items()):
        if cls.stochastic or cls.nfe_per_step is None:
            continue
        if cls.run is not Sampler.run and not getattr(cls, "fixed_grid", False):
            continue
        keys.append(key)
    return keys


INVERTIBLE = [k for k in deterministic_keys() if k not in NOT_INVERTIBLE]


@pytest.fixture(scope="module")
def problems():
    data = gmm_2d()
    out = {}
    for name, sde in SDES.items():
        x0 = data.sample_marginal(sde, sde.t_min, 32, generator=torch.Generator().manual_seed(0))
        x0 = x0.to(torch.float64)
        ref = reference_solution(data, sde, x0, t_start=sde.t_min, t_end=sde.T).x
        out[name] = (data, x0, ref)
    return out


# lms: its lower-order start adds a term that is not of order 4 (tests/convergence/
# test_ode_order.py); inverted, the error falls faster than h^4 over this window (4.2-4.4)
BAND_BY_KEY = {"lms": 0.35}


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("key", INVERTIBLE)
def test_inversion_converges_at_the_declared_order(key, sde_key, problems):
    sde = SDES[sde_key]
    data, x0, ref = problems[sde_key]
    sampler = S.get_sampler(key)
    counts = INVERSION_STEP_COUNTS_BY_KEY.get(key, STEP_COUNTS[int(round(sampler.order))])
    den = data.denoiser(sde)
    scale = ref.norm(dim=1).mean()  # relative: the states at T are ~sigma(T) (50 under VE)
    errors, round_trip = [], []
    for n in counts:
        res = S.invert(sampler, den, x0, grid=S.UniformLambda(), n_steps=n, progress=False)
        assert res.nfe == sampler.nfe(n) and bool((res.ts[1:] > res.ts[:-1]).all())
        errors.append(((res.x - ref).norm(dim=1).mean() / scale).item())
        back = S.sample(sampler, den, x_T=res.x, grid=S.Explicit(res.ts.flip(0)), progress=False)
        round_trip.append((back.x - x0).norm(dim=1).mean().item())
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1.0 for e in errors), f"{key}: errors left the fit window\n{table}"
    p = empirical_order(counts, errors)
    assert abs(p - sampler.order) <= BAND_BY_KEY.get(key, 0.25), (
        f"{key} on {sde_key}: inversion order {p:.3f}, declared {sampler.order}\n{table}"
    )
    p_rt = empirical_order(counts, round_trip)
    assert p_rt >= sampler.order - 0.25, (
        f"{key} on {sde_key}: round-trip order {p_rt:.3f} < declared {sampler.order}\n"
        f"{format_table(counts, round_trip)}"
    )


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize(
    "key, method", [("torchdiffeq", "dopri5"), ("scipy", "RK45"), ("scipy", "DOP853")]
)
def test_adaptive_backends_invert_within_their_tolerance(key, method, sde_key, problems):
    """The adaptive backends integrate in either direction: the error at ``T`` is within the
    bound of ``tests/parity/test_backends.py``, ``alpha(T) N_accepted (atol + rtol max|y_T|)``
    with ``y = x / alpha`` (tolerance 1e-7)."""
    sde = SDES[sde_key]
    data, x0, ref = problems[sde_key]
    tol = 1e-7
    sampler = S.get_sampler(key, method=method, rtol=tol, atol=tol)
    res = S.invert(sampler, data.denoiser(sde), x0, grid=S.UniformTime(), n_steps=1,
                   progress=False)  # fmt: skip
    accepted = res.stats["accepted_steps"]
    alpha_T = float(sde.alpha(sde.T))
    bound = alpha_T * accepted * (tol + tol * (res.x / alpha_T).abs().max().item())
    err = (res.x - ref).abs().max().item()
    assert 0 < err <= bound, f"{key}/{method}: max error {err:.3e} > bound {bound:.3e}"
