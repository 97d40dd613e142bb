"""Inversion refuses what has no inverse or no increasing grid, naming argument, value and
expectation; every stochastic registry sampler and every sampler in ``NOT_INVERTIBLE`` is
refused."""

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from scoresde.samplers.inversion import NOT_INVERTIBLE
from tests.helpers import gmm_2d

SDE = S.VPSDE()
X0 = torch.zeros(4, 2, dtype=torch.float64)


def den():
    return gmm_2d().denoiser(SDE)


@pytest.mark.parametrize("key", sorted(k for k, c in SAMPLERS.items() if c.stochastic))
def test_stochastic_samplers_cannot_invert(key):
    with pytest.raises(ValueError, match=r"sampler must be deterministic to invert.*got "):
        S.invert(key, den(), X0, n_steps=4, progress=False)


def test_a_stochastic_ddim_instance_cannot_invert():
    with pytest.raises(ValueError, match=r"sampler must be deterministic.*DDIM\(eta=0.5\)"):
        S.invert(S.get_sampler("ddim", eta=0.5), den(), X0, n_steps=4, progress=False)


@pytest.mark.parametrize("key", sorted(NOT_INVERTIBLE))
def test_samplers_built_for_a_decreasing_grid_refuse(key):
    with pytest.raises(ValueError, match=f"sampler '{key}' cannot invert: "):
        S.invert(key, den(), X0, n_steps=4, progress=False)


def test_bad_grids_name_the_problem():
    with pytest.raises(ValueError, match=r"grid must be strictly increasing.*got \[0.5, 0.25\]"):
        S.invert("ddim", den(), X0, grid=torch.tensor([0.5, 0.25]), progress=False)
    with pytest.raises(ValueError, match=r"grid must lie in \[t_min, T\]"):
        S.invert("ddim", den(), X0, grid=torch.tensor([0.5, 2.0]), progress=False)
    with pytest.raises(ValueError, match="n_steps must be an int >= 1 for grid"):
        S.invert("ddim", den(), X0, progress=False)
    with pytest.raises(ValueError, match="n_steps must be None or 2 for a grid of 3 times"):
        S.invert("ddim", den(), X0, grid=torch.tensor([0.1, 0.5, 0.9]), n_steps=4)
    with pytest.raises(TypeError, match="grid must be a TimeGrid or an increasing tensor"):
        S.invert("ddim", den(), X0, grid=[0.1, 0.5], progress=False)


def test_an_explicit_sampling_grid_is_inverted_on_its_reverse():
    ts = torch.tensor([1.0, 0.5, 0.1, 1e-3], dtype=torch.float64)
    res = S.invert("ddim", den(), X0, grid=S.Explicit(ts), progress=False)
    assert res.ts.tolist() == ts.flip(0).tolist() and res.nfe == 3
    same = S.invert("ddim", den(), X0, grid=ts.flip(0), progress=False)
    torch.testing.assert_close(res.x, same.x, rtol=0, atol=0)


def test_a_grid_whose_increasing_form_is_not_increasing_is_refused():
    class Broken(S.UniformTime):
        def increasing(self, sde, n_steps):
            return self.grid(sde, n_steps)  # forgot to reverse

    with pytest.raises(ValueError, match=r"Broken\(\)\.increasing\(\) returned a grid that is not"):
        S.invert("ddim", den(), X0, grid=Broken(), n_steps=4, progress=False)


def test_inverting_up_to_zero_terminal_snr_is_refused_for_samplers_whose_last_step_degenerates():
    flow = S.RectifiedFlow()
    den = S.ring_mixture().denoiser(flow, "flow")
    x0 = S.ring_mixture().sample_marginal(flow, flow.t_min, 8)
    with pytest.raises(ValueError, match=r"'dpm_solver_pp_2m' cannot invert up to alpha = 0"):
        S.invert("dpm_solver_pp_2m", den, x0, grid=S.UniformTime(), n_steps=20)
    for key in ("ddim", "pf_euler", "pf_heun"):
        res = S.invert(key, den, x0, grid=S.UniformTime(), n_steps=20, progress=False)
        assert torch.isfinite(res.x).all()
