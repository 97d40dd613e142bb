"""Restart sampling: its weak order, its ODE limit, and where the restart happens.

* Weak order: the forward jump of a restart cycle is the process's exact transition, so only the
  ODE segments err. With the restart segments refined with the grid (the default
  ``restart_steps = (n + 3) // 6``, and ``n/16``) the exact discrete-time bias ``|mean_n - mean| + |var_n - var|`` on Gaussian data (probe
  method of ``test_sde_weak_order.py``) falls at the solver's order (Heun: 2) on VP, VE and
  DDPM-linear; band 0.25 over an 8x range of ``n`` with biases in (1e-9, 1), as there. With a
  fixed ``restart_steps = 3`` (the paper's at 18 steps) the bias instead levels off (at ~1.7e-3 here): the
  restart segments' own error does not shrink with ``n``.
* ``K = 0`` is the solver alone (float64 rounding: identical operations).
* The restart happens at the grid point nearest the interval's lower end in ``log(sigma/alpha)``,
  and its NFE is ``solver.nfe(n) + K solver.nfe(restart_steps)`` (the contract test checks the
  count on every SDE).
"""

import pytest
import torch

import scoresde as S
from tests.convergence.test_sde_weak_order import discrete_moments, exact_moments
from tests.helpers import NoHostSync, empirical_order, format_table, gmm_2d

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


def bias(sampler, n, sde):
    m, v = exact_moments(sde, sde.t_min)
    m_n, v_n = discrete_moments(sampler, n, sde)
    return abs(m_n - m) + abs(v_n - v)


@pytest.mark.parametrize("per_cycle", ["default", "n/16"])
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_restart_with_refined_segments_has_the_solvers_weak_order(sde_key, per_cycle):
    sde = SDES[sde_key]
    counts = [64, 128, 256, 512]
    options = (lambda n: {}) if per_cycle == "default" else (lambda n: {"restart_steps": n // 16})
    errors = [bias(S.get_sampler("restart", **options(n)), n, sde) for n in counts]
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1 for e in errors), table
    p = empirical_order(counts, errors)
    assert abs(p - S.get_sampler("restart").weak_order) <= 0.25, f"slope {p:.3f}\n{table}"


def test_restart_with_fixed_segments_levels_off():
    """A fixed ``restart_steps``: from 128 to 512 steps the bias changes by < 20 %, while the
    refined variant's falls 16-fold (above)."""
    sde = SDES["vp"]
    b = [bias(S.get_sampler("restart", restart_steps=3), n, sde) for n in (128, 512)]
    assert abs(b[1] / b[0] - 1) < 0.2, b


@pytest.mark.parametrize("solver", ["edm_heun", "dpm_solver_pp_2m", "deis_3"])
def test_restart_without_cycles_is_its_solver(solver):
    sde = SDES["vp"]
    den = gmm_2d().denoiser(sde)
    x_T = sde.prior_sample((8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = S.get_sampler("restart", solver=solver, K=0)
    assert not r.stochastic and r.order == S.get_sampler(solver).order
    ours = S.sample(r, den, x_T=x_T, n_steps=10, progress=False)
    ref = S.sample(solver, den, x_T=x_T, n_steps=10, progress=False)
    # K = 0 still splits a multistep solver's grid at the restart point, so compare one-step
    # solvers exactly and multistep ones only through the NFE
    assert ours.nfe == ref.nfe
    if solver == "edm_heun":
        torch.testing.assert_close(ours.x, ref.x, rtol=1e-12, atol=1e-12)


def test_restart_happens_at_the_grid_point_nearest_the_lower_end():
    sde = SDES["ve"]
    ts = S.Karras().grid(sde, 18)
    r = S.get_sampler("restart", restart_interval=(0.06, 0.30), K=2, restart_steps=3)
    j, ts_r = r.restart_grid(sde, ts)
    level = torch.exp(-sde.lambda_(ts))
    below = [k for k in range(1, 19) if level[k] < 0.30]
    nearest = min(below, key=lambda k: abs(float(level[k].log()) - torch.tensor(0.06).log()))
    assert j == nearest
    assert ts_r[-1] == ts[j] and len(ts_r) == 4
    torch.testing.assert_close(torch.exp(-sde.lambda_(ts_r[0])), torch.tensor(0.30).double())
    assert r.nfe(18) == 2 * 18 + 2 * 2 * 3


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_a_restart_interval_in_t_is_the_same_interval_in_sigma(sde_key):
    sde = SDES[sde_key]
    ts = S.UniformLambda().grid(sde, 20)
    t_lo, t_hi = 0.05, 0.2
    s_lo, s_hi = (float(torch.exp(-sde.lambda_(torch.tensor(t, dtype=torch.float64))))
                  for t in (t_lo, t_hi))  # fmt: skip
    j_t, ts_t = S.get_sampler(
        "restart", restart_interval=(t_lo, t_hi), interval_variable="t"
    ).restart_grid(sde, ts)
    j_s, ts_s = S.get_sampler("restart", restart_interval=(s_lo, s_hi)).restart_grid(sde, ts)
    assert j_t == j_s
    torch.testing.assert_close(ts_t, ts_s, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["unipc", "deis_3", "dpm_solver_pp_3m", "ipndm", "lms"])
def test_restart_with_a_multistep_solver_counts_nfe_and_makes_no_host_sync(solver):
    """The contract test checks the default solver; multistep solvers keep per-segment history,
    restarted for each segment and cycle, still without a host sync."""
    sde = SDES["vp"]
    den = gmm_2d().denoiser(sde)
    sampler = S.get_sampler("restart", solver=solver)
    ts = S.UniformLambda().grid(sde, 12)
    x = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(0))
    noise = S.GaussianNoise(torch.Generator().manual_seed(1))
    noise.bind(ts, x)
    with torch.inference_mode():
        state = sampler.init(den, sde, ts, x)
        grid = ts.tolist()
        with NoHostSync():
            for i in range(12):
                x, state = sampler.step(den, sde, grid, i, x, state, noise)
    assert torch.isfinite(x).all()
    res = S.sample(sampler, den, shape=(4, 2), n_steps=12, progress=False)
    assert res.nfe == sampler.nfe(12) == 12 + 2 * 2  # 2 steps per cycle at 12 main steps


def test_restart_scales_its_cycles_with_the_main_grid_by_default():
    """The paper's 3 restart steps at its 18 main steps, in proportion elsewhere (at least 1), so
    a 20-NFE budget keeps 7 Heun steps for the main grid instead of 3."""
    r = S.get_sampler("restart")
    assert [r.steps_per_cycle(n) for n in (1, 2, 8, 9, 18, 60)] == [1, 1, 1, 2, 3, 10]
    assert r.nfe(18) == 2 * 18 + 2 * 2 * 3 and r.nfe(7) == 18
    _, ts_r = r.restart_grid(SDES["vp"], S.Karras().grid(SDES["vp"], 36))
    assert len(ts_r) == 6 + 1
