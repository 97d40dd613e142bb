"""Per-sample seeds: with one generator (or Brownian seed) per sample, sample ``i`` depends on its
own seed only, never on the batch size, the other samples or its position in the batch.

For every stochastic sampler in the registry (``stochastic`` read from the registry, the torchsde
backend included), a batch of 4 and each sample run alone give the same sample. The states are
float64 and every operation acts on each sample separately, so the only differences are the
rounding of batched versus single-row kernels: 1e-12 bounds them with a wide margin (a few
hundred ulps after 6 steps of O(1) arithmetic). Reruns with fresh generators are bit-identical.
The state has 3 entries per sample, not a multiple of 16, where one shared Brownian path splits
its batch differently for different batch sizes.
"""

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from scoresde.samplers.pc import LangevinCorrector
from tests.helpers import GaussianMixture

# adaptive_sde chooses one step size for the whole batch from its largest error (Jolicoeur-Martineau
# et al. 2021, as dpm_solver_adaptive does), so a sample's steps, not its draws, depend on the
# batch: per-sample generators still give each sample its own noise, tested separately below
BATCH_COUPLED_STEPS = {"adaptive_sde"}
STOCHASTIC = [
    k for k, c in sorted(SAMPLERS.items()) if c.stochastic and k not in BATCH_COUPLED_STEPS
]
# pc's default corrector averages norms over the batch (the reference implementation), which
# couples the samples by design; its per-sample norms are the paper's rule
OPTIONS = {
    "annealed_langevin": dict(n_steps_each=2),
    "pc": dict(corrector=LangevinCorrector(norms="sample")),
}
SEEDS = [10, 11, 12, 13]
TOL = dict(rtol=1e-12, atol=1e-12)


def problem():
    means = torch.tensor([[1.0, 0.5, -0.5], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    return GaussianMixture(means, stds=0.5)


def test_a_batch_coupled_adaptive_sampler_still_draws_each_samples_own_prior():
    sde = S.VPSDE()
    den = problem().denoiser(sde)
    for key in sorted(BATCH_COUPLED_STEPS):
        batch = S.sample(key, den, shape=(4, 3), generator=generators(SEEDS), n_steps=4,
                         save_trajectory=True, progress=False)  # fmt: skip
        alone = S.sample(key, den, shape=(1, 3), generator=generators(SEEDS[1:2]), n_steps=4,
                         save_trajectory=True, progress=False)  # fmt: skip
        torch.testing.assert_close(batch.trajectory[0, 1:2], alone.trajectory[0], rtol=0, atol=0)


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("key", STOCHASTIC)
def test_a_sample_depends_only_on_its_own_generator(key):
    sde = S.VPSDE()
    den = problem().denoiser(sde)
    sampler = S.get_sampler(key, **OPTIONS.get(key, {}))

    def draw(seeds):
        return S.sample(sampler, den, shape=(len(seeds), 3), n_steps=6, dtype=torch.float64,
                        generator=generators(seeds), progress=False).x  # fmt: skip

    batch = draw(SEEDS)
    torch.testing.assert_close(draw(SEEDS), batch, rtol=0, atol=0)
    for i, s in enumerate(SEEDS):
        torch.testing.assert_close(draw([s]), batch[i : i + 1], **TOL)
    # the position in the batch does not matter either
    torch.testing.assert_close(draw(SEEDS[::-1]), batch.flip(0), **TOL)


@pytest.mark.parametrize("key", STOCHASTIC)
def test_a_sample_depends_only_on_its_own_brownian_seed(key):
    sde = S.VESDE()
    den = problem().denoiser(sde)
    sampler = S.get_sampler(key, **OPTIONS.get(key, {}))
    x_T = sde.prior_sample((4, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def draw(rows):
        noise = S.BrownianNoise(seed=[SEEDS[i] for i in rows])
        return S.sample(sampler, den, x_T=x_T[rows], n_steps=6, noise=noise, progress=False).x

    batch = draw([0, 1, 2, 3])
    torch.testing.assert_close(draw([0, 1, 2, 3]), batch, rtol=0, atol=0)
    for i in range(4):
        torch.testing.assert_close(draw([i]), batch[i : i + 1], **TOL)


def test_torchsde_srk_takes_one_levy_area_path_per_sample():
    sde = S.VPSDE()
    den = problem().denoiser(sde)
    sampler = S.get_sampler("torchsde", method="srk")
    x_T = sde.prior_sample((3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def draw(rows):
        noise = S.BrownianNoise(seed=[SEEDS[i] for i in rows], levy_area=True)
        return S.sample(sampler, den, x_T=x_T[rows], n_steps=4, noise=noise, progress=False).x

    batch = draw([0, 1, 2])
    for i in range(3):
        torch.testing.assert_close(draw([i]), batch[i : i + 1], **TOL)


def test_one_seed_list_entry_is_the_single_seed_path():
    """A list of one seed is the same path as that seed for a batch of one."""
    ts = S.UniformTime().grid(S.VPSDE(), 5)
    like = torch.zeros(1, 3, dtype=torch.float64)
    a, b = S.BrownianNoise(seed=7), S.BrownianNoise(seed=[7])
    a.bind(ts, like)
    b.bind(ts, like)
    grid = ts.tolist()
    for i in range(5):
        torch.testing.assert_close(b(grid[i], grid[i + 1], like), a(grid[i], grid[i + 1], like),
                                   rtol=0, atol=0)  # fmt: skip
    torch.testing.assert_close(b.extra(like), a.extra(like), rtol=0, atol=0)


def test_the_prior_draw_matches_diffusers_per_sample_convention():
    """Sample ``i``'s prior is ``randn((1, *dims), generator=g_i)``, as diffusers draws it."""
    sde = S.VESDE()
    den = problem().denoiser(sde)
    res = S.sample("pf_euler", den, shape=(2, 3), n_steps=1, dtype=torch.float64,
                   generator=generators([5, 6]), save_trajectory=True, progress=False)  # fmt: skip
    expected = torch.cat([torch.randn((1, 3), generator=g, dtype=torch.float64)
                          for g in generators([5, 6])]) * sde.prior_std  # fmt: skip
    torch.testing.assert_close(res.trajectory[0], expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------
# bad input


def _den():
    return problem().denoiser(S.VPSDE())


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: S.sample("euler_maruyama", _den(), shape=(4, 3), n_steps=2,
                          generator=generators([1, 2, 3]), progress=False),
         ValueError, r"generator is a list of 3 torch.Generators but the batch has 4 samples"),
        (lambda: S.sample("euler_maruyama", _den(), x_T=torch.zeros(2, 3), n_steps=2,
                          generator=generators([1, 2, 3]), progress=False),
         ValueError, r"generator is a list of 3 torch.Generators but the batch has 2 samples"),
        (lambda: S.sample("euler_maruyama", _den(), shape=(2, 3), n_steps=2,
                          generator=[torch.Generator(), 7], progress=False),
         TypeError, r"generator\[1\] must be a torch.Generator \(one per sample\); got 7"),
        (lambda: S.sample("euler_maruyama", _den(), shape=(2, 3), n_steps=2, generator=7,
                          progress=False),
         TypeError, r"generator must be None, a torch.Generator or a list of torch.Generators"),
        (lambda: S.GaussianNoise(["a"]), TypeError, r"generator\[0\] must be a torch.Generator"),
        (lambda: S.sample("euler_maruyama", _den(), shape=(4, 3), n_steps=2,
                          noise=S.BrownianNoise(seed=[1, 2]), progress=False),
         ValueError, r"BrownianNoise has a list of 2 seeds but the batch has 4 samples; "
                     r"expected one seed per sample \(4\)"),
        (lambda: S.BrownianNoise(seed=[1, -2]), ValueError, r"seed\[1\] must be an int >= 0; got -2"),
        (lambda: S.BrownianNoise(seed=[]), ValueError, r"non-empty list"),
        (lambda: LangevinCorrector(norms="mean"), ValueError,
         r"norms must be 'batch' or 'sample'; got 'mean'"),
    ],
    ids=["short-list", "short-list-x_T", "non-generator", "int-generator", "noise-non-generator",
         "brownian-short", "brownian-negative", "brownian-empty", "corrector-norms"],
)  # fmt: skip
def test_bad_per_sample_randomness_is_rejected_with_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
