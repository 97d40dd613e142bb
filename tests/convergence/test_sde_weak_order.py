"""Weak convergence of the stochastic samplers: their samples have the right distribution.

Gaussian data ``N(mu, s^2)`` in 1-D (``scoresde.exact.Gaussian``) under the VP SDE: the reverse
process started from the exact marginal ``p_T`` has the exact marginal
``N(alpha mu, alpha^2 s^2 + sigma^2)`` at ``t_min``. The exact denoiser is affine in ``x``, so
every sampler here except the Langevin corrector (whose step size depends on batch norms) is an
affine map of ``(x_T, z_1, ..., z_K)``, where the ``z`` are all the standard normals it draws.
Its *exact discrete-time* mean and variance at ``t_min`` therefore follow from one run on probe
inputs (:func:`discrete_moments`: ``x_T`` at the mean, one row with ``x_T`` one standard deviation
up, and one row per draw with that draw set to 1): the sharpest reference, free of Monte-Carlo
noise.

* Weak order (deterministic): the bias ``|mean_n - mean| + |var_n - var|`` of the discrete law
  falls like ``n_steps^-weak_order``; the least-squares slope is within 0.25 of the declared
  ``weak_order`` over a 8x range of ``n`` where the bias lies in ``(1e-9, 1)`` (far above the
  1e-15 rounding of the probe run, inside the asymptotic range: the next term of the expansion
  moves the slope by < 0.15 there, measured). VP only: on VE the Gaussian problem is special
  (Euler–Maruyama's first-order variance term vanishes and it shows slope 2), so VP is where the
  generic order shows.
* Distribution (Monte Carlo): 2e5 samples of every stochastic step-based sampler, with its
  default options, have sample mean and variance within 5 standard errors of the discrete law
  (standard errors from the sample itself: ``sqrt(var / N)`` and ``sqrt((m4 - var^2) / N)``);
  at 5 SE a correct sampler fails with probability < 1e-6 per comparison (the seeds are fixed,
  so the test is deterministic). The Langevin corrector is checked against its population-level
  moment recursion instead (below), at the same 5 SE, and its declared variance floor
  ``snr^2`` against the recursion at 2048 steps.
* Gaussian mixture: on ``gmm_2d`` the sliced-Wasserstein distance to exact samples of ``p_t_min``
  (``GaussianMixture.sample_marginal``) falls from 8 (4 for ``COARSE_STEPS``) to 64 steps by more than three times the
  distance between two independent exact samples of the same size (the estimator's own noise
  scale).
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.metrics import sliced_wasserstein
from scoresde.noise import NoiseSource
from scoresde.samplers import SAMPLERS, LangevinCorrector, Sampler
from tests.helpers import empirical_order, format_table, gmm_2d

DATA = S.Gaussian([1.0], std=0.5)
SDE = S.VPSDE()
# orders are measured on one fixed grid, whatever each sampler's default_grid
GRID = S.UniformTime()
K_SE = 5.0

# Options under which the declared weak order applies (the sampler's docstring says why):
# EDM's churn converges only with S_noise = 1 and gamma = S_churn / n below its cap.
WEAK_OPTIONS = {"edm_stochastic": dict(S_churn=2.0, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0)}
# Step counts per weak order, inside the asymptotic range on this problem (measured biases:
# order 1 from ~1e-2 to ~1e-3, order 2 from ~5e-3 to ~5e-6).
STEP_COUNTS = {1: [64, 128, 256, 512], 2: [128, 256, 512, 1024]}
# Samplers whose bias on this grid is pre-asymptotic below ~1000 steps, because the uniform-t
# grid's last steps in lambda_ (h = log(1 + dt / t_min) / 2) shrink only once dt < t_min: the
# third-order multistep extrapolation across them (local slopes 3.0, 3.0, 2.7, 2.4 from 64 to
# 1024 steps; 2.20, 2.07, 2.02 from 1024 to 8192), and the second-order ancestral steps, whose
# stage lies at lambda_{i+1} (local slopes 1.65, 1.70, 1.77, 1.84, 1.90, 1.95 from 64 to 4096).
STEP_COUNTS_BY_KEY = {
    "sde_dpm_solver_pp_3m": [1024, 2048, 4096],
    "dpm_2_ancestral": [256, 512, 1024, 2048],
    "dpm_solver_pp_2s_ancestral": [256, 512, 1024, 2048],
}
# Grids for the sliced-Wasserstein test (see STEP_COUNTS_BY_KEY): on the uniform-t grid 3M's
# samples are worse at 64 steps than at 8.
GRIDS = {"sde_dpm_solver_pp_3m": S.UniformLambda()}
# Samplers with their own weak-convergence test below: the Langevin corrector's bias has a floor
# (test_pc_langevin_matches_its_moment_recursion) and annealed Langevin's rate depends on the
# schedule near t_min (test_annealed_langevin_bias_falls_at_least_at_its_declared_rate).
# restart's bias with a fixed restart_steps has a floor from its restart segments; its weak order
# (with the segments refined with the grid) is tested in tests/convergence/test_restart.py.
# sa_solver's weak order shows on grids uniform in lambda_ (tests/convergence/test_sa_solver.py):
# on this uniform-in-t VP grid its last steps are long in lambda_ (h ~ 1 at 128 steps) and the
# slope over 128-1024 steps is 2.5-2.6, not yet asymptotic.
OWN_TEST = {"pc", "annealed_langevin", "restart", "sa_solver"}


def step_based_stochastic():
    return [k for k, c in sorted(SAMPLERS.items()) if c.stochastic and c.run is Sampler.run]


class ProbeNoise(NoiseSource):
    """Draw ``k`` (path increment or auxiliary, in call order) is the unit vector ``e_{k+2}``."""

    def __init__(self):
        self.k = 0

    def bind(self, ts, like):
        self.k = 0

    def __call__(self, t, t_next, like):
        return self._next(like)

    def extra(self, like):
        return self._next(like)

    def _next(self, like):
        z = torch.zeros_like(like)
        if 2 + self.k < like.shape[0]:
            z[2 + self.k] = 1.0
        self.k += 1
        return z


def exact_moments(sde, t):
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    mu, var0 = float(DATA.means[0, 0]), float(DATA.stds[0]) ** 2
    return a * mu, a * a * var0 + s * s


def discrete_moments(sampler, n, sde=SDE, grid=GRID):
    """Mean and variance at ``t_min`` of the sampler's discrete law, started from ``p_T``
    (``grid=None``: the sampler's default grid)."""
    den = DATA.denoiser(sde)
    m_T, v_T = exact_moments(sde, sde.T)
    counter = ProbeNoise()
    start = torch.full((2, 1), m_T, dtype=torch.float64)
    S.sample(sampler, den, x_T=start, n_steps=n, noise=counter, grid=grid, progress=False)
    x_T = torch.full((counter.k + 2, 1), m_T, dtype=torch.float64)
    x_T[1] += v_T**0.5
    res = S.sample(sampler, den, x_T=x_T, n_steps=n, noise=ProbeNoise(), grid=grid, progress=False)
    y = res.x[:, 0]
    return float(y[0]), float(((y[1:] - y[0]) ** 2).sum())


def sample_moments(x):
    """Sample mean and variance with their standard errors."""
    x = x.flatten().to(torch.float64)
    n = x.numel()
    mean, var = x.mean(), x.var()
    m4 = ((x - mean) ** 4).mean()
    return float(mean), float(var), float((var / n).sqrt()), float(((m4 - var**2) / n).sqrt())


def weak_bias(sampler, n):
    m, v = exact_moments(SDE, SDE.t_min)
    m_n, v_n = discrete_moments(sampler, n)
    return abs(m_n - m) + abs(v_n - v)


@pytest.mark.parametrize("key", [k for k in step_based_stochastic() if k not in OWN_TEST])
def test_discrete_bias_falls_at_the_declared_weak_order(key):
    sampler = S.get_sampler(key, **WEAK_OPTIONS.get(key, {}))
    counts = STEP_COUNTS_BY_KEY.get(key, STEP_COUNTS[int(round(sampler.weak_order))])
    errors = [weak_bias(sampler, n) for n in counts]
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1.0 for e in errors), f"{key}: biases left the fit window\n{table}"
    p = empirical_order(counts, errors)
    assert abs(p - sampler.weak_order) <= 0.25, (
        f"{key}: measured weak order {p:.3f}, declared {sampler.weak_order}\n{table}"
    )


MC_OPTIONS = {"annealed_langevin": dict(n_steps_each=5)}  # 100 per level is just slower


@pytest.mark.parametrize("key", [k for k in step_based_stochastic() if k != "pc"])
def test_samples_follow_the_discrete_law(key):
    """2e5 samples at 16 steps (where the discrete law is far from the exact marginal, so the
    comparison is sharp) match the exact discrete mean and variance within 5 SE."""
    sampler = S.get_sampler(key, **MC_OPTIONS.get(key, {}))
    n = 16
    m_n, v_n = discrete_moments(sampler, n)
    gen = torch.Generator().manual_seed(11)
    x_T = DATA.sample_marginal(SDE, SDE.T, 200_000, generator=gen)
    den = DATA.denoiser(SDE)
    x = S.sample(sampler, den, x_T=x_T, n_steps=n, generator=gen, grid=GRID, progress=False).x
    mean, var, se_mean, se_var = sample_moments(x)
    msg = f"{key}: sample ({mean:.5f}, {var:.5f}), discrete law ({m_n:.5f}, {v_n:.5f})"
    assert abs(mean - m_n) <= K_SE * se_mean, msg
    assert abs(var - v_n) <= K_SE * se_var, msg


# -------------------------------------------------------------------------------------------
# Predictor–corrector: the Langevin step size is a ratio of batch-mean norms, so the samples are
# not an affine map of the draws. Its population limit is a deterministic moment recursion:
# the predictor step is affine (probed once per step), and one Langevin step with the population
# step size eps = k_i (E|z| / E|eps(x)|)^2 maps (m, V) to (m - (eps / sigma) E eps(x),
# (1 - eps e1 / sigma)^2 V + 2 eps), where eps(x) = e1 x + e0 for Gaussian data.


def folded_normal_mean(mean, var):
    """``E|Y|`` for ``Y ~ N(mean, var)``."""
    sd = math.sqrt(var)
    return sd * math.sqrt(2 / math.pi) * math.exp(-(mean**2) / (2 * var)) + mean * math.erf(
        mean / (sd * math.sqrt(2))
    )


def pc_moment_recursion(sampler, n):
    den = DATA.denoiser(SDE)
    ts = S.UniformTime().grid(SDE, n)
    grid = ts.tolist()
    probe = torch.tensor([[0.0], [1.0], [0.0]], dtype=torch.float64)
    unit = torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64)

    class Unit(NoiseSource):
        def __call__(self, t, t_next, like):
            return unit

    predictor, corrector = sampler.predictor, sampler.corrector
    p_state = predictor.init(den, SDE, ts, probe)
    _, sigma, k = corrector.init(SDE, ts, probe)
    m, v = exact_moments(SDE, SDE.T)
    for i in range(n):
        y, p_state = predictor.step(den, SDE, grid, i, probe, p_state, Unit())
        b, A, C = float(y[0]), float(y[1] - y[0]), float(y[2] - y[0])
        m, v = A * m + b, A * A * v + C * C
        e = den.predict(probe[:2], grid[i + 1]).eps[:, 0]
        e0, e1 = float(e[0]), float(e[1] - e[0])
        sg = float(sigma[i])
        for _ in range(corrector.n_steps):
            ratio = math.sqrt(2 / math.pi) / (abs(e1) * folded_normal_mean(m + e0 / e1, v))
            step = float(k[i]) * ratio**2
            m, v = m - step / sg * (e1 * m + e0), (1 - step * e1 / sg) ** 2 * v + 2 * step
    return m, v


@pytest.mark.parametrize("n", [12, 40])
def test_pc_langevin_samples_follow_their_moment_recursion(n):
    """PC (reverse diffusion + Langevin, snr 0.16): 2e5 samples match the population moment
    recursion within 5 SE (the batch-mean step size differs from its population value by ~0.3%,
    which moves the variance by < 0.1 SE near equilibrium)."""
    sampler = S.get_sampler("pc", corrector=LangevinCorrector(snr=0.16, n_steps=1))
    m_n, v_n = pc_moment_recursion(sampler, n)
    gen = torch.Generator().manual_seed(5)
    x_T = DATA.sample_marginal(SDE, SDE.T, 200_000, generator=gen)
    x = S.sample(sampler, DATA.denoiser(SDE), x_T=x_T, n_steps=n, generator=gen, progress=False).x
    mean, var, se_mean, se_var = sample_moments(x)
    msg = f"pc at n={n}: sample ({mean:.5f}, {var:.5f}), recursion ({m_n:.5f}, {v_n:.5f})"
    assert abs(mean - m_n) <= K_SE * se_mean, msg
    assert abs(var - v_n) <= K_SE * se_var, msg


@pytest.mark.parametrize("snr", [0.16, 0.1])
def test_pc_langevin_variance_bias_tends_to_snr_squared(snr):
    """The declared floor: with many steps the Langevin corrector holds the variance at
    ``v (1 + a snr^2)`` (``a -> 1`` on fine grids), whatever the predictor's own bias. At 2048
    steps the predictor's O(1/n) bias is ~2e-4 relative, so the recursion is within 5% of
    ``snr^2`` (measured: within 1.5%)."""
    sampler = S.get_sampler("pc", predictor="euler_maruyama", corrector=LangevinCorrector(snr=snr))
    _, v = exact_moments(SDE, SDE.t_min)
    _, v_n = pc_moment_recursion(sampler, 2048)
    assert abs((v_n / v - 1) / snr**2 - 1) < 0.05, f"relative variance bias {v_n / v - 1:.5f}"


def test_annealed_langevin_bias_falls_at_least_at_its_declared_rate():
    """The declared weak order 1/2 is the asymptotic rate for VP-type schedules (the lag of
    the chain behind p_t, see the class docstring); in the range reachable here the rate is
    higher (~2/3, from sigma^2 ~ t^2 between the freezing time and t_min; measured 0.73), so the
    declared order is checked as a lower bound: slope >= weak_order - 0.25, and the bias falls
    at every doubling."""
    sampler = S.get_sampler("annealed_langevin", n_steps_each=1)
    counts = [64, 128, 256, 512, 1024]
    errors = [weak_bias(sampler, n) for n in counts]
    table = format_table(counts, errors)
    assert all(b < a for a, b in zip(errors[:-1], errors[1:], strict=True)), (
        f"bias did not fall\n{table}"
    )
    p = empirical_order(counts, errors)
    assert p >= sampler.weak_order - 0.25, f"measured rate {p:.3f}\n{table}"


# -------------------------------------------------------------------------------------------
# Gaussian mixture: sliced Wasserstein distance to exact samples


@pytest.fixture(scope="module")
def gmm_problem():
    data = gmm_2d()
    gen = torch.Generator().manual_seed(2)
    n = 10_000
    exact = data.sample_marginal(SDE, SDE.t_min, n, generator=gen)
    exact2 = data.sample_marginal(SDE, SDE.t_min, n, generator=gen)
    noise_floor = sliced_wasserstein(
        exact, exact2, p=1, n_projections=128, generator=torch.Generator().manual_seed(0)
    )
    x_T = data.sample_marginal(SDE, SDE.T, n, generator=gen)
    return data, exact, noise_floor, x_T


# Samplers accurate enough at 8 steps that the fall to 64 steps is within 3 estimator floors:
# compared from 4 steps instead (SW at 4, 8, 64 steps, estimator floor 0.012: er_sde 0.17, 0.041,
# 0.016; restart 0.27, 0.051, 0.021).
COARSE_STEPS = {"er_sde": 4, "restart": 4}


# Adaptive samplers (nfe_per_step None) set their accuracy by tolerance, not by n_steps (output
# times); adaptive_sde's error against its tolerance and NFE is tested in
# tests/convergence/test_adaptive_sde.py.
@pytest.mark.parametrize(
    "key", [k for k, c in sorted(SAMPLERS.items()) if c.stochastic and c.nfe_per_step is not None]
)
def test_sliced_wasserstein_to_exact_samples_falls_with_n_steps(key, gmm_problem):
    data, exact, floor, x_T = gmm_problem
    sampler = S.get_sampler(key, **MC_OPTIONS.get(key, {}))
    den = data.denoiser(SDE)
    dist = {}
    coarse = COARSE_STEPS.get(key, 8)
    for n in (coarse, 64):
        gen = torch.Generator().manual_seed(n)
        x = S.sample(
            sampler, den, x_T=x_T, n_steps=n, generator=gen, grid=GRIDS.get(key), progress=False
        ).x
        dist[n] = sliced_wasserstein(
            x, exact, p=1, n_projections=128, generator=torch.Generator().manual_seed(0)
        )
    assert dist[coarse] - dist[64] > 3 * floor, f"{key}: SW {dist} (estimator floor {floor:.4f})"


@pytest.mark.parametrize("key", [k for k in step_based_stochastic() if k not in OWN_TEST])
def test_weak_bias_on_rectified_flow_from_pure_noise_falls_at_least_at_the_declared_order(key):
    """The reverse SDE of rectified flow (f = -1/(1 - t), g^2 = 2t/(1 - t)) started at T = 1, where
    alpha = 0 and the first step is the ancestral lambda -> -inf limit (exact discrete law, probe
    inputs as above). Measured slopes from 64 to 512 steps: 1.0 (ancestral, reverse_diffusion,
    sde_dpm_solver_1), 0.94 (ddim_stochastic), 1.66 (euler_maruyama: its first-order variance term
    is small on this Gaussian problem), 2.0 (edm_stochastic), 1.83 (sde_dpm_solver_pp_2m, still
    approaching 2): at least the declared weak order minus the 0.25 band."""
    sde = S.RectifiedFlow()
    sampler = S.get_sampler(key, **WEAK_OPTIONS.get(key, {}))
    counts = [64, 128, 256, 512]
    m, v = exact_moments(sde, sde.t_min)
    errors = []
    for n in counts:
        m_n, v_n = discrete_moments(sampler, n, sde)
        errors.append(abs(m_n - m) + abs(v_n - v))
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1.0 for e in errors), f"{key}: biases left the fit window\n{table}"
    p = empirical_order(counts, errors)
    assert p >= sampler.weak_order - 0.25, (
        f"{key} on rectified flow: weak order {p:.3f} < declared {sampler.weak_order}\n{table}"
    )
