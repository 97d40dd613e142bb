"""Configs round-trip: ``to_config`` -> strict JSON -> ``get_sampler`` / ``grid_from_config``
rebuilds the same sampler (same class, same options, same config) and the same grid (the same
float64 times, bit for bit), for every registry key and every grid class.

JSON is dumped with ``allow_nan=False`` (strict JSON: infinite options travel as ``"inf"``).
"""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as S
from scoresde.grids import GRIDS

# Non-default options per key, so the round trip is not only of defaults.
VARIANTS = {
    "ddim": [{"eta": 0.3}],
    "ddim_stochastic": [{"eta": 0.5}],
    "dpm_solver_2s": [{"lower_order_final": False}],
    "dpm_solver_3m": [{"variant": "reference", "lower_order_final": False}],
    "dpm_solver_pp_3m": [{"variant": "reference"}],
    "dpm_solver_adaptive": [{"order": 2, "rtol": 0.01, "atol": 1e-3, "h_init": 0.1}],
    "torchdiffeq": [{"method": "bosh3", "rtol": 1e-7, "atol": 1e-8}],
    "torchdiffeq_fixed": [{"method": "midpoint"}],
    "scipy": [{"method": "DOP853", "rtol": 1e-9}],
    "deis_3": [{"variable": "rho", "lower_order_final": True}],
    "unipc": [{"solver_order": 3, "variant": "bh1", "predict_x0": False}],
    "torchsde": [{"method": "srk"}],
    "pc": [
        {"predictor": "dpm_solver_pp_2m", "corrector": None},
        {"predictor": S.get_sampler("unipc", solver_order=3), "corrector": "langevin"},
    ],
    "annealed_langevin": [{"n_steps_each": 3, "step_lr": 2e-5}],
    "edm_stochastic": [{"S_churn": 10.0, "S_tmax": math.inf}, {"S_churn": 0.0}],
}
CASES = [(key, {}) for key in S.SAMPLERS] + [
    (key, opts) for key, variants in VARIANTS.items() for opts in variants
]


def _json(config):
    return json.loads(json.dumps(config, allow_nan=False))


@pytest.mark.parametrize("key,options", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_sampler_config_round_trips_through_json(key, options):
    sampler = S.get_sampler(key, **options)
    config = _json(sampler.to_config())
    assert config["name"] == key
    rebuilt = S.get_sampler(config)
    assert type(rebuilt) is type(sampler)
    assert repr(rebuilt) == repr(sampler)
    assert rebuilt.to_config() == sampler.to_config()
    assert rebuilt.nfe(7) == sampler.nfe(7) and rebuilt.order == sampler.order


def test_get_sampler_config_keywords_override_the_config():
    config = _json(S.get_sampler("unipc", solver_order=3).to_config())
    assert S.get_sampler(config, variant="bh1").options() == {
        "solver_order": 3, "variant": "bh1", "predict_x0": True, "lower_order_final": "auto",
    }  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [
        {"options": {}},
        {"name": "ddim", "extra": 1},
        {"name": "nope"},
        {"name": "ddim", "options": 3},
    ],
)
def test_bad_sampler_config_is_refused_with_the_expected_form(config):
    with pytest.raises(ValueError, match="sampler"):
        S.get_sampler(config)


# -------------------------------------------------------------------------------------------
# Grids

ends = st.tuples(st.floats(0.05, 0.45), st.floats(0.55, 1.0))


@st.composite
def grids(draw):
    name = draw(st.sampled_from(sorted(GRIDS)))
    t_end, t_start = draw(ends)
    if name == "explicit":
        n = draw(st.integers(1, 12))
        inner = draw(st.lists(st.floats(t_end, t_start), min_size=n - 1, max_size=n - 1))
        ts = sorted({t_start, t_end, *inner}, reverse=True)
        return S.Explicit(ts)
    if name == "discrete_spacing":
        kind = draw(st.sampled_from(S.DiscreteSpacing.KINDS))
        return S.DiscreteSpacing(kind, steps_offset=draw(st.integers(0, 1)),
                                 final=draw(st.sampled_from(["t_min", "zero"])))  # fmt: skip
    if name == "flow_match_shift":
        mu = draw(st.sampled_from([None, 0.8]))
        return S.FlowMatchShift(draw(st.floats(0.5, 4.0)), mu=mu,
                                time_shift_type=draw(st.sampled_from(["exponential", "linear"])))  # fmt: skip
    endpoints = draw(st.sampled_from([{}, {"t_start": t_start, "t_end": t_end}]))
    if name == "karras":
        return S.Karras(draw(st.floats(1.0, 9.0)), **endpoints)
    return GRIDS[name](**endpoints)


@given(grid=grids())
def test_grid_config_round_trips_to_the_same_times(grid):
    config = _json(grid.to_config())
    rebuilt = S.grid_from_config(config)
    assert type(rebuilt) is type(grid) and rebuilt.to_config() == grid.to_config()
    sde = (
        S.DiscreteVPSDE.linear() if isinstance(grid, S.DiscreteSpacing)
        else S.RectifiedFlow(t_min=1e-5) if isinstance(grid, S.FlowMatchShift)
        else S.VPSDE()
    )  # fmt: skip
    n = None if isinstance(grid, S.Explicit) else 6
    assert torch.equal(rebuilt.grid(sde, n), grid.grid(sde, n))


def test_every_grid_class_is_in_the_config_registry():
    classes = {cls for cls in vars(S).values() if isinstance(cls, type)}
    grid_classes = {c for c in classes if issubclass(c, S.TimeGrid) and c is not S.TimeGrid}
    assert grid_classes - set(GRIDS.values()) == {S.Optimized}


def test_grid_name_gives_its_default_grid():
    assert repr(S.grid_from_config("karras")) == repr(S.Karras())


def test_optimized_grid_config_is_refused_naming_the_fitted_alternative():
    den = S.Denoiser(lambda x, t: torch.zeros_like(x), S.VPSDE())
    with pytest.raises(TypeError, match=r"fit\(sde, n_steps\)"):
        S.Optimized("ddim", den, shape=(2, 1)).to_config()


@pytest.mark.parametrize("config", [{"name": "nope"}, {"options": {}}, 3])
def test_bad_grid_config_is_refused(config):
    with pytest.raises(ValueError, match="grid"):
        S.grid_from_config(config)
