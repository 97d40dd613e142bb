"""A k-diffusion denoiser sampled through ``from_k_diffusion`` reproduces k-diffusion's own
``sample_euler`` and ``sample_heun`` (Karras et al. 2022, Alg. 1 with ``S_churn = 0``).

The "k-diffusion model" is the exact denoiser ``D(x, sigma)`` of the 2-D Gaussian mixture
``gmm_2d`` in VE form. k-diffusion steps on ``get_sigmas_karras(n, sigma_min, sigma_max, rho)``,
which appends ``sigma = 0``; its last step is an Euler step to the data, i.e. ``D``. Ours: the
``Karras(rho)`` grid with ``n - 1`` steps and ``denoise_final=True``, with ``ddim`` (Euler in
``sigma`` on ``dx/dsigma = (x - D)/sigma``) and ``edm_heun``; same ``x_T``, float64.

Tolerance 1e-10 relative: both sides do the same float64 arithmetic up to the rounding of the
sigma grid (our grid goes through ``inverse_lambda`` and back, ~1e-15 relative per time), over at
most 2 * 20 evaluations of a smooth denoiser.
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import from_k_diffusion
from tests.helpers import gmm_2d

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
CASES = {"euler": ("sample_euler", "ddim", 1), "heun": ("sample_heun", "edm_heun", 2)}


@pytest.mark.parametrize("n", [5, 18])
@pytest.mark.parametrize("case", sorted(CASES))
def test_from_k_diffusion_reproduces_k_diffusion_samplers(kd, case, n, float64):
    fn, key, nfe_per_step = CASES[case]
    data = gmm_2d()
    one = torch.ones((), dtype=torch.float64)

    def model(x, sigma):
        return data.posterior_mean(x, one, sigma)

    sigmas = kd.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, rho=RHO)
    assert sigmas.dtype == torch.float64
    x_T = SIGMA_MAX * torch.randn(
        16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    ref = getattr(kd, fn)(model, x_T.clone(), sigmas, disable=True)

    sde, den = from_k_diffusion(model, sigmas=sigmas)
    res = S.sample(key, den, x_T=x_T, grid=S.Karras(rho=RHO), n_steps=n - 1, denoise_final=True,
                   progress=False)  # fmt: skip
    torch.testing.assert_close(sde.sigma(res.ts), sigmas[:-1], rtol=1e-13, atol=0)
    rel = ((res.x - ref).norm() / ref.norm()).item()
    assert rel <= 1e-10, f"{case}, n={n}: relative difference {rel:.2e}"
    assert res.nfe == nfe_per_step * (n - 1) + 1  # k-diffusion: n (Euler), 2n - 1 (Heun)
