"""Orders of the stochastic DPM-Solver samplers on every kind of schedule, and their samples on
exact Gaussian data.

The registry-wide tests (``test_sde_strong_order.py``, ``test_sde_weak_order.py``) measure every
stochastic sampler on VP; here the SDE-DPM-Solver++ variants and k-diffusion's second-order
ancestral samplers are measured on VE and DDPM-linear too, with their non-default options.

* Strong order (the options' runs are marked slow): as in ``test_sde_strong_order.py``
  (``gmm_2d``, one ``BrownianNoise`` path,
  reference at 4096 steps, slope within 0.3 of ``order``) with 64 paths (Monte-Carlo error of the
  mean distance ~10%, which moves the slope over the 16x range by < 0.07). 3M runs on
  ``UniformLambda`` (see ``GRIDS`` in ``test_sde_strong_order.py``).
* Weak order: the exact discrete law's bias on 1-D Gaussian data (``discrete_moments`` of
  ``test_sde_weak_order.py``), slope within 0.25 of ``weak_order``. DDPM-linear discriminates
  like VP. On VE every exponential integrator is special on Gaussian data (first-order ones show
  slope 2 as well), so VE checks only that the declared order 2 is reached.
* Samples: 20,000 draws at 200 steps (``UniformLambda``: on the uniform-t VP grid the last
  steps in ``lambda_`` stay long, and the variance bias of 2M at 200 steps is 2.6 standard errors
  of the sample's std) from the exact ``p_T`` on VP and VE have sample mean and
  standard deviation within 5 standard errors of the exact marginal at ``t_min`` (standard errors
  from the sample: ``sqrt(var / N)`` for the mean, ``sqrt((m4 - var^2) / N) / (2 std)`` for the
  standard deviation, by the delta method). The discrete law's own bias at 200 steps is below
  1.5 standard errors for every sampler here (asserted), so a 5-SE failure has probability
  < 1e-3 for a correct sampler; the seeds are fixed, so the test is deterministic.
"""

import pytest
import torch

import scoresde as S
from tests.convergence.test_sde_weak_order import (
    DATA,
    STEP_COUNTS_BY_KEY,
    discrete_moments,
    exact_moments,
)
from tests.helpers import empirical_order, format_table, gmm_2d

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}
# key, options
VARIANTS = [
    ("sde_dpm_solver_pp_2m", {}),
    ("sde_dpm_solver_pp_2m", {"solver_type": "heun"}),
    ("sde_dpm_solver_pp_2m", {"eta": 0.5}),
    ("sde_dpm_solver_pp_3m", {}),
    ("dpm_solver_pp_sde", {}),
    ("dpm_solver_pp_2s_ancestral", {}),
    ("dpm_solver_pp_2s_ancestral", {"eta": 0.5}),
    ("dpm_2_ancestral", {}),
]
IDS = [f"{k}{''.join(f'-{o}={v}' for o, v in opts.items())}" for k, opts in VARIANTS]
STRONG_COUNTS = [16, 32, 64, 128, 256]
# the options' strong orders are long sweeps (run with -m slow); the defaults run in CI
STRONG_VARIANTS = [
    pytest.param(key, options, id=i, marks=[pytest.mark.slow] if options else [])
    for (key, options), i in zip(VARIANTS, IDS, strict=True)
]
K_SE = 5.0


@pytest.mark.parametrize("sde_key", ["ve", "ddpm"])
@pytest.mark.parametrize("key, options", STRONG_VARIANTS)
def test_strong_order_on_every_schedule(key, options, sde_key):
    sde = SDES[sde_key]
    den = gmm_2d().denoiser(sde)
    sampler = S.get_sampler(key, **options)
    grid = S.UniformLambda() if key == "sde_dpm_solver_pp_3m" else S.UniformTime()
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = S.BrownianNoise(seed=7)

    def solve(n):
        return S.sample(sampler, den, x_T=x_T, n_steps=n, grid=grid, noise=noise, progress=False).x

    ref = solve(4096)
    errors = [(solve(n) - ref).norm(dim=1).mean().item() for n in STRONG_COUNTS]
    p = empirical_order(STRONG_COUNTS, errors)
    assert abs(p - sampler.order) <= 0.3, (
        f"{key} on {sde_key}: strong order {p:.3f}, declared {sampler.order}\n"
        f"{format_table(STRONG_COUNTS, errors)}"
    )


@pytest.mark.parametrize("sde_key", ["ve", "ddpm"])
@pytest.mark.parametrize("key, options", VARIANTS, ids=IDS)
def test_weak_order_on_every_schedule(key, options, sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler(key, **options)
    # where the bias is in its asymptotic range on the uniform-t grid (see test_sde_weak_order.py)
    counts = STEP_COUNTS_BY_KEY.get(key, [128, 256, 512, 1024])
    m, v = exact_moments(sde, sde.t_min)
    errors = []
    for n in counts:
        m_n, v_n = discrete_moments(sampler, n, sde, S.UniformLambda())
        errors.append(abs(m_n - m) + abs(v_n - v))
    p = empirical_order(counts, errors)
    assert abs(p - sampler.weak_order) <= 0.25, (
        f"{key} on {sde_key}: weak order {p:.3f}, declared {sampler.weak_order}\n"
        f"{format_table(counts, errors)}"
    )


@pytest.mark.parametrize("sde_key", ["vp", "ve"])
@pytest.mark.parametrize("key, options", VARIANTS, ids=IDS)
def test_gaussian_samples_have_the_exact_mean_and_std(key, options, sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler(key, **options)
    n, N = 200, 20_000
    gen = torch.Generator().manual_seed(17)
    x_T = DATA.sample_marginal(sde, sde.T, N, generator=gen)
    x = S.sample(sampler, DATA.denoiser(sde), x_T=x_T, n_steps=n, grid=S.UniformLambda(),
                 generator=gen, progress=False).x  # fmt: skip
    x = x.flatten().to(torch.float64)
    mean, var = float(x.mean()), float(x.var())
    m4 = float(((x - mean) ** 4).mean())
    se_mean = (var / N) ** 0.5
    se_std = ((m4 - var**2) / N) ** 0.5 / (2 * var**0.5)
    m, v = exact_moments(sde, sde.t_min)
    m_n, v_n = discrete_moments(sampler, n, sde, S.UniformLambda())
    assert abs(m_n - m) < 1.5 * se_mean and abs(v_n**0.5 - v**0.5) < 1.5 * se_std, (
        f"{key}: the discrete law's bias at {n} steps is not small against the standard errors"
    )
    msg = (
        f"{key} on {sde_key}: sample mean {mean:.5f} (SE {se_mean:.1e}), std {var**0.5:.5f} "
        f"(SE {se_std:.1e}); exact {m:.5f}, {v**0.5:.5f}"
    )
    assert abs(mean - m) <= K_SE * se_mean, msg
    assert abs(var**0.5 - v**0.5) <= K_SE * se_std, msg
