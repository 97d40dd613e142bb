"""The torchsde backend against our own reverse-SDE solvers, path by path.

* ``torchsde`` with ``method="euler"`` and ``euler_maruyama`` compute the same update on the same
  grid and the same Brownian increments, in a different order of float64 operations
  (``y + f ds + g dW`` against ``a x + b eps + c z``). Each step adds a few roundings of the
  state's size (``u |x|`` with ``u = 2^-53``) and the reverse flow does not amplify differences
  (its linearisation contracts: ``f + g^2 / v <= 0`` in reverse time for these data), so after
  ``n`` steps the paths differ by at most about ``8 n u max|x|``; we allow ``16 n u max|x|``
  (3e-13 at n = 64 with |x| < 3; measured <= 3e-15).
* ``milstein``'s correction is computed derivative-free and is exactly zero for additive noise,
  so it equals ``euler`` bit for bit.
* ``srk`` (strong order 1.5) and ``euler`` (strong order 1) converge to the same fine solution of
  the same path: errors against ``srk`` on 1024 steps fall at their strong orders (band 0.3 as in
  ``tests/convergence/test_sde_strong_order.py``; the reference's error, ~1e-4, is < 5% of the
  finest error fitted).
"""

import pytest
import torch

import scoresde as S
from tests.helpers import empirical_order, format_table, gmm_2d

U = 2.0**-53


def solve(key, sde, x_T, n, noise, grid=None, **options):
    den = gmm_2d().denoiser(sde) if x_T.ndim == 2 else image_problem().denoiser(sde)
    res = S.sample(S.get_sampler(key, **options), den, x_T=x_T, n_steps=n, noise=noise,
                   grid=grid or S.UniformTime(), progress=False)  # fmt: skip
    return res


def image_problem():
    means = torch.stack([torch.ones(1, 2, 2), -torch.ones(1, 2, 2)]).double()
    return S.GaussianMixture(means, stds=0.5)


CASES = {
    "vp-uniform-t": (S.VPSDE(), S.UniformTime(), (32, 2)),
    "vp-uniform-lambda": (S.VPSDE(), S.UniformLambda(), (32, 2)),
    "ve-karras-images": (S.VESDE(), S.Karras(), (8, 1, 2, 2)),
    "ddpm-uniform-t": (S.DiscreteVPSDE.linear(), S.UniformTime(), (32, 2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_torchsde_euler_is_euler_maruyama_on_the_same_path(case):
    sde, grid, shape = CASES[case]
    n = 64
    x_T = sde.prior_sample(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = S.BrownianNoise(seed=4)
    ours = solve("euler_maruyama", sde, x_T, n, noise, grid)
    theirs = solve("torchsde", sde, x_T, n, noise, grid, method="euler")
    assert theirs.nfe == ours.nfe == n
    tol = 16 * n * U * float(ours.x.abs().max())
    err = float((theirs.x - ours.x).abs().max())
    assert err <= tol, f"{case}: max difference {err:.3e} > {tol:.3e}"


def test_torchsde_milstein_equals_euler_bitwise():
    sde = S.VPSDE()
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = S.BrownianNoise(seed=2)
    euler = solve("torchsde", sde, x_T, 32, noise, method="euler")
    milstein = solve("torchsde", sde, x_T, 32, noise, method="milstein")
    torch.testing.assert_close(milstein.x, euler.x, rtol=0, atol=0)
    assert milstein.nfe == euler.nfe == 32


def test_torchsde_methods_converge_to_the_same_fine_solution():
    sde = S.VPSDE()
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = S.BrownianNoise(seed=7, levy_area=True)
    ref = solve("torchsde", sde, x_T, 1024, noise, method="srk").x
    counts = [16, 32, 64, 128]
    for method, order in [("srk", 1.5), ("euler", 1.0)]:
        runs = [solve("torchsde", sde, x_T, n, noise, method=method) for n in counts]
        assert [r.nfe for r in runs] == [
            S.get_sampler("torchsde", method=method).nfe(n) for n in counts
        ]
        errors = [(r.x - ref).norm(dim=1).mean().item() for r in runs]
        p = empirical_order(counts, errors)
        assert abs(p - order) <= 0.3, (
            f"{method}: strong order {p:.3f}\n{format_table(counts, errors)}"
        )


def test_torchsde_srk_needs_the_levy_area():
    sde = S.VPSDE()
    x_T = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="levy_area=True"):
        solve("torchsde", sde, x_T, 4, S.BrownianNoise(seed=1), method="srk")


def test_torchsde_gaussian_noise_seeds_a_reproducible_path():
    """With the default noise source, a fixed generator fixes the Brownian path."""
    sde = S.VESDE()
    den = gmm_2d().denoiser(sde)
    out = [
        S.sample("torchsde", den, shape=(8, 2), n_steps=8, progress=False,
                 generator=torch.Generator().manual_seed(s)).x
        for s in (3, 3, 4)
    ]  # fmt: skip
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    assert not torch.equal(out[0], out[2])
