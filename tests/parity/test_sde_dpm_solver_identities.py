"""With ``eta = 0`` the stochastic DPM-Solver samplers are their probability-flow ODE solvers.

``sde_dpm_solver_pp_2m(eta=0)`` is DPM-Solver++(2M) (``e^{-0 h} = 1``, no noise term; both
without ``lower_order_final``, whose rules differ), and the
three singlestep samplers lose their ancestral noise (``u = 0``, ``h_down = h``), leaving
DPM-Solver++(2S) (``dpm_solver_pp_sde``, ``dpm_solver_pp_2s_ancestral``) and DPM-Solver-2
(``dpm_2_ancestral``) with ``r = 1/2`` on every step. They then draw no noise, declare
``stochastic = False`` and the ODE order 2, and agree with the ODE samplers to float64 rounding
(the coefficients are computed along different paths: 1e-12 relative).
"""

import pytest
import torch

import scoresde as S
from scoresde.noise import NoiseSource
from tests.helpers import gmm_2d


class NoNoise(NoiseSource):
    def __call__(self, t, t_next, like):
        raise AssertionError("a sampler with eta = 0 drew noise")


@pytest.mark.parametrize("sde", [S.VPSDE(), S.VESDE(), S.DiscreteVPSDE.linear()], ids=repr)
@pytest.mark.parametrize(
    "key, options, ode_key, ode_options",
    [("sde_dpm_solver_pp_2m", {"lower_order_final": False}, "dpm_solver_pp_2m",
      {"lower_order_final": False}),
     ("dpm_solver_pp_sde", {}, "dpm_solver_pp_2s", {"lower_order_final": False}),
     ("dpm_solver_pp_2s_ancestral", {}, "dpm_solver_pp_2s", {"lower_order_final": False}),
     ("dpm_2_ancestral", {}, "dpm_solver_2s", {"lower_order_final": False})],
)  # fmt: skip
def test_eta_zero_is_the_ode_solver(key, options, ode_key, ode_options, sde):
    den = gmm_2d().denoiser(sde)
    x_T = sde.prior_sample((32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = S.get_sampler(key, eta=0.0, **options)
    assert not sampler.stochastic and sampler.order == 2 and sampler.weak_order is None
    for n in (6, 15):
        ours = S.sample(sampler, den, x_T=x_T, n_steps=n, grid=S.Karras(), noise=NoNoise(),
                        progress=False)  # fmt: skip
        ode = S.sample(S.get_sampler(ode_key, **ode_options), den, x_T=x_T, n_steps=n,
                       grid=S.Karras(), progress=False)  # fmt: skip
        assert ours.nfe == ode.nfe
        torch.testing.assert_close(ours.x, ode.x, rtol=1e-12, atol=1e-12)
