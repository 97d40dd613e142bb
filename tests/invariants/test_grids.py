"""Time grids: n_steps + 1 float64 times, strictly decreasing, from t_start to t_end exactly."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as S

SDES = [S.VPSDE(), S.SubVPSDE(), S.VESDE(), S.DiscreteVPSDE.linear(), S.DiscreteVPSDE.cosine()]
GRIDS = [S.UniformTime(), S.UniformLambda(), S.Karras(), S.Karras(rho=3.0), S.Quadratic()]


@given(n=st.integers(1, 200), sde=st.sampled_from(SDES), grid=st.sampled_from(GRIDS))
def test_grid_endpoints_length_monotonicity_dtype(n, sde, grid):
    ts = grid.grid(sde, n)
    assert ts.dtype == torch.float64 and ts.shape == (n + 1,)
    assert ts[0].item() == sde.T and ts[-1].item() == sde.t_min
    assert (ts[1:] < ts[:-1]).all()


@given(t_end=st.floats(0.01, 0.4), t_start=st.floats(0.5, 1.0), grid=st.sampled_from(GRIDS))
def test_grid_honours_given_endpoints(t_end, t_start, grid):
    g = type(grid)(t_start=t_start, t_end=t_end)
    ts = g.grid(S.VPSDE(), 10)
    assert ts[0].item() == t_start and ts[-1].item() == t_end


def test_uniform_lambda_is_uniform_in_lambda():
    sde = S.VPSDE()
    lam = sde.lambda_(S.UniformLambda().grid(sde, 20))
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(20), rtol=1e-9, atol=0)


def test_karras_grid_is_edm_eq5_in_sigma_over_alpha():
    sde = S.VESDE(0.002, 80.0)
    ts = S.Karras(rho=7.0).grid(sde, 18)
    s = sde.sigma(ts)
    i = torch.arange(19, dtype=torch.float64)
    s_max, s_min = sde.sigma(sde.T).item(), sde.sigma(sde.t_min).item()
    expected = (s_max ** (1 / 7) + i / 18 * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
    torch.testing.assert_close(s, expected, rtol=1e-12, atol=0)


def test_explicit_grid_round_trips_through_a_file(tmp_path):
    g = S.Explicit([1.0, 0.5, 0.1, 0.001])
    g.save(tmp_path / "grid.pt")
    torch.testing.assert_close(
        S.Explicit.load(tmp_path / "grid.pt").grid(S.VPSDE()), g.grid(S.VPSDE())
    )


def test_explicit_grid_rejects_a_wrong_n_steps():
    with pytest.raises(ValueError, match="n_steps must be None or 3"):
        S.Explicit([1.0, 0.5, 0.1, 0.001]).grid(S.VPSDE(), 5)


FLOW_CASES = [
    ({}, S.FlowMatchShift(), None),
    ({"shift": 3.0}, S.FlowMatchShift(3.0), None),
    ({"use_dynamic_shifting": True}, S.FlowMatchShift(mu=0.8), 0.8),
    (
        {"use_dynamic_shifting": True, "time_shift_type": "linear"},
        S.FlowMatchShift(mu=1.5, time_shift_type="linear"),
        1.5,
    ),
    ({"shift": 3.0, "shift_terminal": 0.05}, S.FlowMatchShift(3.0, shift_terminal=0.05), None),
]


@pytest.mark.parametrize("config, grid, mu", FLOW_CASES, ids=repr)
@pytest.mark.parametrize("m", [2, 7, 28])
def test_flow_match_shift_is_diffusers_flow_match_sigmas(config, grid, mu, m):
    """The model sigmas of FlowMatchEulerDiscreteScheduler.set_timesteps(m, mu=mu), which diffusers
    keeps in float32: agreement to float32 rounding (atol 1e-7)."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    sched.set_timesteps(m, mu=mu)
    ts = grid.grid(S.RectifiedFlow(t_min=1e-5), m - 1)
    assert ts.dtype == torch.float64 and float(ts[0]) == 1.0
    torch.testing.assert_close(ts, sched.sigmas[:-1].double(), rtol=0, atol=1e-7)


def test_flow_match_shift_refuses_a_schedule_it_does_not_fit():
    with pytest.raises(ValueError, match=r"needs a flow schedule on \[t_min, 1\]"):
        S.FlowMatchShift().grid(S.RectifiedFlow(t_min=0.01), 10)


def test_grids_do_not_import_samplers_or_tuning():
    """Samplers import the grids; a grid that runs samplers (``Optimized``) lives in
    ``scoresde.tuning``, so ``grids.py`` imports neither (no import cycle)."""
    import ast
    import inspect

    import scoresde.grids

    tree = ast.parse(inspect.getsource(scoresde.grids))
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if "samplers" in m or "tuning" in m}, imported
    assert S.Optimized.__module__ == "scoresde.tuning"
