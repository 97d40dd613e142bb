"""Algebraic identities between stochastic samplers, to float64 rounding or bit for bit.

* Predictor–corrector with zero corrector steps (``corrector="none"`` or a Langevin corrector
  with ``n_steps=0``) *is* its predictor: the same operations on the same draws, so the samples
  are bit-identical and the NFE equal. With ``M`` corrector steps the measured NFE is the
  predictor's plus ``M`` per step.
* On a VE schedule (constant ``alpha``) the ancestral step is the Gaussian posterior
  ``q(x_{t_next} | x_t, x0)``, and so is SDE-DPM-Solver++'s first-order step (Lu et al. 2022b):
  the two agree to float64 rounding (rtol 1e-12: a handful of roundings of O(1) coefficients).
* EDM's sampler works in ``y = x / alpha`` and ``s = sigma / alpha``, where every schedule has the
  same probability-flow ODE ``dy/ds = eps``: on the same noise levels and draws, VP, sub-VP, VE
  and discrete VP give the same ``y`` to float64 rounding (1e-12; ``inverse_lambda`` round-trips
  ``t`` to ~1e-15).
"""

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS, LangevinCorrector, Sampler
from tests.helpers import gmm_2d

PREDICTORS = [k for k, c in sorted(SAMPLERS.items()) if c.run is Sampler.run and k != "pc"]
SDES = {"vp": S.VPSDE(), "subvp": S.SubVPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


def run(sampler, sde, noise, n=12, dtype=torch.float64):
    den = gmm_2d().denoiser(sde)
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=dtype)
    return S.sample(sampler, den, x_T=x_T, n_steps=n, noise=noise, grid=S.UniformLambda(),
                    progress=False)  # fmt: skip


@pytest.mark.parametrize("corrector", ["none", "langevin-0"])
@pytest.mark.parametrize("key", PREDICTORS)
def test_pc_without_corrector_steps_is_its_predictor_bit_for_bit(key, corrector):
    sde = S.VPSDE()
    pc_corrector = "none" if corrector == "none" else LangevinCorrector(n_steps=0)
    pc = S.get_sampler("pc", predictor=key, corrector=pc_corrector)
    for make_noise in (lambda: S.BrownianNoise(seed=3),
                       lambda: S.GaussianNoise(torch.Generator().manual_seed(3))):  # fmt: skip
        ours = run(pc, sde, make_noise())
        reference = run(S.get_sampler(key), sde, make_noise())
        torch.testing.assert_close(ours.x, reference.x, rtol=0, atol=0)
        assert ours.nfe == reference.nfe == pc.nfe(12)
    predictor = S.get_sampler(key)
    assert (pc.order, pc.weak_order, pc.stochastic) == (
        predictor.order,
        predictor.weak_order if predictor.weak_order is not None else predictor.order,
        predictor.stochastic,
    )


@pytest.mark.parametrize("key", ["euler_maruyama", "reverse_diffusion", "sde_dpm_solver_pp_2m"])
def test_pc_nfe_is_predictor_nfe_plus_corrector_steps(key):
    pc = S.get_sampler("pc", predictor=key, corrector=LangevinCorrector(snr=0.1, n_steps=2))
    res = run(pc, S.VESDE(), S.BrownianNoise(seed=1), n=7)
    assert res.nfe == pc.nfe(7) == S.get_sampler(key).nfe(7) + 2 * 7


@pytest.mark.parametrize("t, t_next", [(1.0, 0.9), (0.5, 0.3), (0.05, 1e-5)])
def test_ve_ancestral_is_sde_dpm_solver_pp_first_order(t, t_next):
    sde = S.VESDE()
    den = gmm_2d().denoiser(sde)
    x = 3.0 * torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = []
    for key in ("ancestral", "sde_dpm_solver_pp_2m"):
        res = S.sample(key, den, x_T=x, grid=S.Explicit([t, t_next]), noise=S.BrownianNoise(seed=5),
                       progress=False)  # fmt: skip
        out.append(res.x)
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-12)


def test_edm_stochastic_is_the_same_in_y_for_every_sde():
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    levels = (40.0 ** (1 / 7) + u * (0.05 ** (1 / 7) - 40.0 ** (1 / 7))) ** 7  # EDM eq. 5
    y_T = 40.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = S.get_sampler("edm_stochastic", S_churn=3.0, S_tmin=0.1, S_tmax=10.0)
    ys = {}
    for key, sde in SDES.items():
        ts = sde.inverse_lambda(-levels.log())
        res = S.sample(sampler, gmm_2d().denoiser(sde), x_T=y_T * sde.alpha(ts[0]),
                       grid=S.Explicit(ts), generator=torch.Generator().manual_seed(1),
                       progress=False)  # fmt: skip
        ys[key] = res.x / sde.alpha(ts[-1])
    for key in SDES:
        torch.testing.assert_close(ys[key], ys["ve"], rtol=1e-12, atol=1e-12, msg=key)
