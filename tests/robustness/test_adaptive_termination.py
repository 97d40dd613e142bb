"""Every adaptive sampler terminates: it finishes, or raises an error that names where it stopped.

Adaptive samplers are read from the registry (deterministic, ``nfe_per_step = None``): ours
(``dpm_solver_adaptive``) and the torchdiffeq and scipy backends. Problem: the 2-D mixture
``gmm_2d`` under the VP SDE, 32 prior draws, in float16, bfloat16, float32 and float64.

- ``rtol = atol = 1e-7`` is below what a half- or single-precision state can resolve: the error
  estimate is then rounding noise and the step size collapses (before the floor,
  ``dpm_solver_adaptive`` ran forever in float32). The tolerances are raised to ``16 eps`` of the
  dtype with a ``RuntimeWarning`` naming rtol/atol and the dtype, and the run finishes with a
  finite result. In float64 nothing is raised, no warning is given, and the result agrees with
  the scipy DOP853 reference (rtol = atol = 1e-10) to 1e-5: the local tolerance 1e-7 accumulated
  over the solve's 50-400 steps stays two orders of magnitude below that.
- ``max_nfe`` ends an over-long solve with ``RuntimeError``, and a step below ``h_min`` ends a
  collapsed one with ``FloatingPointError``; both messages name ``t``, the step size ``h`` and the
  NFE spent.

Each run is bounded by an alarm (10 s; the runs take well under 1 s), so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import signal
import warnings

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from tests.helpers import gmm_2d, reference_solution

ADAPTIVE = sorted(k for k, c in SAMPLERS.items() if not c.stochastic and c.nfe_per_step is None)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@contextlib.contextmanager
def deadline(seconds: int):
    def fail(signum, frame):
        raise TimeoutError(f"did not terminate within {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def problem():
    sde = S.VPSDE()
    data = gmm_2d()
    x_T = sde.prior_sample((32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return sde, data, x_T, reference_solution(data, sde, x_T).x


def test_the_registry_has_adaptive_samplers():
    assert {"dpm_solver_adaptive", "torchdiffeq", "scipy"} <= set(ADAPTIVE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("key", ADAPTIVE)
def test_unreachable_tolerance_is_raised_to_the_dtype_floor_and_the_run_finishes(
    key, dtype, problem
):
    sde, data, x_T, ref = problem
    sampler = S.get_sampler(key, rtol=1e-7, atol=1e-7)
    with warnings.catch_warnings(record=True) as caught, deadline(10):
        warnings.simplefilter("always")
        res = S.sample(sampler, data.denoiser(sde), x_T=x_T.to(dtype), n_steps=1, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert res.x.dtype == dtype and bool(torch.isfinite(res.x).all())
    assert res.nfe <= sampler.max_nfe
    if dtype == torch.float64:
        assert not messages, messages
        err = (res.x - ref).norm(dim=1).mean().item()
        assert err < 1e-5, f"{key}: error {err:.3e} against the reference at rtol = atol = 1e-7"
    else:
        assert len(messages) == 1, messages
        assert all(s in messages[0] for s in ("rtol=1e-07", "atol=1e-07", str(dtype))), messages


@pytest.mark.parametrize("key", ADAPTIVE)
def test_max_nfe_ends_a_long_solve_naming_t_step_and_nfe(key, problem):
    sde, data, x_T, _ = problem
    sampler = S.get_sampler(key, rtol=1e-9, atol=1e-9, max_nfe=40)
    with pytest.raises(RuntimeError, match="max_nfe=40") as info, deadline(10):
        S.sample(sampler, data.denoiser(sde), x_T=x_T, n_steps=4, progress=False)
    assert all(s in str(info.value) for s in ("t=", "h=", "NFE")), info.value


@pytest.mark.parametrize("key", ADAPTIVE)
def test_step_below_h_min_ends_a_collapsed_solve_naming_t_step_and_nfe(key, problem):
    sde, data, x_T, _ = problem
    sampler = S.get_sampler(key, rtol=1e-9, atol=1e-9, h_min=0.5)
    with pytest.raises(FloatingPointError, match="collapsed") as info, deadline(10):
        S.sample(sampler, data.denoiser(sde), x_T=x_T, n_steps=4, progress=False)
    assert all(s in str(info.value) for s in ("t=", "h=", "NFE")), info.value


@pytest.mark.parametrize(
    "key, options, expected",
    [(k, {"max_nfe": 0}, "max_nfe") for k in ADAPTIVE]
    + [(k, {"h_min": 0.0}, "h_min") for k in ADAPTIVE],
)
def test_guard_options_are_validated(key, options, expected):
    with pytest.raises(ValueError, match=expected):
        S.get_sampler(key, **options)
