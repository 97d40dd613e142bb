"""Bad options of ``sa_solver`` and ``adaptive_sde`` raise at construction with an error that
names the option, the value and what was expected."""

import re
import warnings

import pytest
import torch

import scoresde as S
from tests.helpers import gmm_2d


@pytest.mark.parametrize("name", ["predictor_order", "corrector_order"])
@pytest.mark.parametrize("value", [0, 5, 2.0, True])
def test_sa_solver_rejects_orders_outside_1_to_4(name, value):
    with pytest.raises(ValueError, match=f"{name} must be an int"):
        S.get_sampler("sa_solver", **{name: value})


@pytest.mark.parametrize("tau", [-0.5, float("nan"), float("inf")])
def test_sa_solver_rejects_a_negative_or_non_finite_tau(tau):
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        S.get_sampler("sa_solver", tau=tau)


def test_sa_solver_rejects_a_tau_function_with_negative_values():
    with pytest.raises(
        ValueError, match=r"tau must return a finite number >= 0.*tau\(0\.51\) = -0\.01"
    ):
        S.get_sampler("sa_solver", tau=lambda t: 0.5 - t)


def test_sa_solver_names_tau_when_its_function_returns_several_values():
    """A batch of values is not one noise amount: the error names tau and what it returned
    (it was torch's "only one element tensors can be converted to Python scalars")."""
    with pytest.raises(ValueError, match=r"tau must return a finite number >= 0.*tau\(0\) = "):
        S.get_sampler("sa_solver", tau=lambda t: torch.ones(3))
    assert S.get_sampler("sa_solver", tau=lambda t: torch.tensor([0.5])).tau is not None


def test_sa_solver_rejects_a_tau_that_is_neither_a_number_nor_callable():
    with pytest.raises(TypeError, match="tau must be a number >= 0 or a callable"):
        S.get_sampler("sa_solver", tau="1")
    with pytest.raises(ValueError, match="lower_order_final must be a bool"):
        S.get_sampler("sa_solver", lower_order_final=1)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(rel_tol=0.0), r"rel_tol must be a finite real number in \(0.0, inf\]; got 0.0"),
        (dict(rel_tol=-1e-3), "rel_tol must be"),
        (dict(abs_tol=0.0), r"abs_tol must be a finite real number in \(0.0, inf\]"),
        (dict(abs_tol=float("nan")), "abs_tol must be"),
        (dict(h_init=0.0), "h_init must be"),
        (dict(theta=1.5), r"theta must be a finite real number in \(0.0, 1.0\]"),
        (dict(r=0.0), r"r must be a finite real number in \(0.0, 1.0\]"),
        (dict(h_min=-1.0), "h_min must be"),
        (dict(max_nfe=1), "max_nfe must be an int >= 2"),
    ],
)
def test_adaptive_sde_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        S.get_sampler("adaptive_sde", **options)


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def gmm_run(sampler, dtype, sde=None):
    sde = sde or S.VPSDE()
    den = gmm_2d().denoiser(sde)
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=dtype)
    return S.sample(sampler, den, x_T=x_T, n_steps=1, generator=torch.Generator().manual_seed(1),
                    progress=False)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adaptive_sde_terminates_at_its_defaults_in_every_dtype(dtype):
    """The defaults (rel_tol 0.05, abs_tol 0.0078) are met in every dtype; in bfloat16
    (``4 eps = 0.031``) abs_tol is raised to the floor with a warning naming it and the dtype."""
    sampler = S.get_sampler("adaptive_sde")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = gmm_run(sampler, dtype)
    raised = [str(w.message) for w in caught if "can resolve" in str(w.message)]
    if dtype == torch.bfloat16:
        assert raised and "abs_tol=0.0078" in raised[0] and "bfloat16" in raised[0], raised
        assert res.stats["abs_tol"] == S.samplers.adaptive_sde.tolerance_floor(dtype)
    else:
        assert not raised, raised
    assert res.x.dtype == dtype and torch.isfinite(res.x).all()
    assert res.stats["accepted_steps"] >= 1 and res.nfe <= sampler.max_nfe


SCHEDULES = {
    "cosine": S.DiscreteVPSDE.cosine(1000),
    "cosine_zero_snr": S.DiscreteVPSDE.cosine(1000, rescale_betas_zero_snr=True),
    "ddpm_linear": S.DiscreteVPSDE.linear(1000, 1e-4, 0.02),
    "scaled_linear_zero_snr": S.DiscreteVPSDE.scaled_linear(rescale_betas_zero_snr=True),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_adaptive_sde_meets_its_defaults_across_the_jumps_of_discrete_schedules(schedule, dtype):
    """A DDPM schedule's ``g`` is constant per train step and jumps between them. A step across
    a jump leaves ``x' - x''`` a noise term ``sqrt(h) (g(t) - g(t - h)) z / 2``, which falls
    like ``sqrt(h)``, not ``h``: across the cosine schedule's last train step (``g`` from 83 to
    37 at ``t = 0.999``) it meets the default abs_tol only below ``h ~ 1e-7``, so the old
    ``h_min = 1e-6`` ended every run there with a FloatingPointError. The run must finish, with
    the data's spread (per-coordinate std of 256 samples within 10% of the ring's 1.45)."""
    sde = SCHEDULES[schedule]
    den = S.ring_mixture().denoiser(sde, "x0")
    x_T = sde.prior_sample((256, 2), generator=torch.Generator().manual_seed(0), dtype=dtype)
    res = S.sample("adaptive_sde", den, x_T=x_T, generator=torch.Generator().manual_seed(1),
                   progress=False)  # fmt: skip
    assert torch.isfinite(res.x).all()
    assert ((res.x.float().std(0) - 1.45).abs() < 0.145).all(), res.x.float().std(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adaptive_sde_ends_an_unreachable_tolerance_in_every_dtype(dtype):
    """rel_tol = abs_tol = 1e-12: below the floor of every dtype but float64, where it is
    raised with a warning; the run then either meets the floor (float16, bfloat16: 4 eps is
    reachable) or ends with a FloatingPointError naming t, the step size and the NFE spent,
    within ``max_nfe`` calls."""
    sampler = S.get_sampler("adaptive_sde", rel_tol=1e-12, abs_tol=1e-12, max_nfe=3000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = gmm_run(sampler, dtype)
        except FloatingPointError as err:
            assert re.search(r"at t=[\d.e+-]+ with step size h=[\d.e+-]+ after \d+ NFE", str(err))
            assert "could not reach its tolerance" in str(err)
        else:
            assert torch.isfinite(res.x).all() and res.nfe <= 3000
    raised = [str(w.message) for w in caught if "can resolve" in str(w.message)]
    if dtype == torch.float64:
        assert not raised
    else:
        assert any("rel_tol=1e-12" in m and str(dtype) in m for m in raised), raised


def test_adaptive_sde_max_nfe_ends_the_run_with_t_h_and_nfe():
    with pytest.raises(FloatingPointError, match=r"exceed max_nfe=20, at t=.* after 2\d NFE"):
        gmm_run(S.get_sampler("adaptive_sde", max_nfe=20), torch.float64)


def test_adaptive_sde_a_rough_model_ends_at_the_minimum_step():
    """A model whose output jumps at every call (fresh noise) has no step size that meets a
    tight tolerance: the run ends when a step of size ``h_min`` is rejected."""
    sde = S.VPSDE()
    gen = torch.Generator().manual_seed(0)

    def net(x, t):
        return torch.randn(x.shape, generator=gen, dtype=x.dtype)

    den = S.Denoiser(net, sde, "eps")
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = S.get_sampler("adaptive_sde", rel_tol=1e-4, abs_tol=1e-4, h_min=1e-5)
    with pytest.raises(FloatingPointError, match=r"minimum size h_min=1e-05 was rejected.*NFE"):
        S.sample(sampler, den, x_T=x_T, n_steps=1, progress=False)
