"""Parity of the stochastic DPM-Solver family with k-diffusion's samplers, on the same noise.

Compared (float64, k-diffusion 0.1.1.post1 through the ``kd`` fixture):

* ``sde_dpm_solver_pp_2m`` with ``sample_dpmpp_2m_sde`` (``solver_type`` midpoint and heun, and
  ``eta``, ``s_noise`` away from 1);
* ``sde_dpm_solver_pp_3m`` with ``sample_dpmpp_3m_sde``;
* ``dpm_solver_pp_sde`` with ``sample_dpmpp_sde`` (``r = 1/2``; ``eta > 1`` too, where the
  ancestral split reaches a full denoise);
* ``dpm_solver_pp_2s_ancestral`` with ``sample_dpmpp_2s_ancestral``, ``dpm_2_ancestral`` with
  ``sample_dpm_2_ancestral``;
* ``ddim`` / ``ddim_stochastic`` with ``sample_euler_ancestral``: DDIM's ``s_i = eta sigma_{i+1}
  sqrt(1 - e^{-2h})`` is, in ``y = x / alpha``, exactly k-diffusion's ``sigma_up`` of
  ``get_ancestral_step`` with the same ``eta`` (no clamp is reached for ``eta <= 1``), and its
  deterministic part is the Euler step to ``sigma_down``.

Coordinates: k-diffusion works in ``y = x / alpha`` with level ``s = sigma / alpha = e^{-lambda}``
and a model returning ``x0`` (``VEModel`` of ``test_k_diffusion.py``); results map back by
``x = alpha y``.

Noise: one Brownian path ``W``, pre-drawn on the union of the grid and the stage times (our ``t``
is its time variable). Our sampler reads it through a ``NoiseSource`` and k-diffusion through its
``noise_sampler(sigma, sigma_next)``, each call mapped to the path's times (a call at a level that
is not one of them fails the test), and both get ``(W(b) - W(a)) / sqrt(|b - a|)``. So both
samplers see the same draws, including ``sample_dpmpp_sde``'s two overlapping intervals ``(t_i,
s)`` and ``(t_i, t_{i+1})``, which ours builds from ``(t_i, s)`` and ``(s, t_{i+1})``.

Ending: k-diffusion's grids end at ``sigma = 0`` with a special last step (every sampler here
returns the denoiser's ``x0`` there). Both endings are compared: the grid ending at our ``t_min``
(``sigma > 0``, every step ordinary), and k-diffusion's ``sigmas + [0]`` against ours with
``denoise_final=True`` (one more model call at ``t_min``), which is the same ending exactly.

Tolerance: 1e-12 relative, as in ``test_k_diffusion.py`` (float64 rounding amplified by at most
``1 / alpha_T`` ~ 150 through the change of coordinates over 15 steps; measured <= 6e-15).
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.noise import NoiseSource
from tests.helpers import gmm_2d
from tests.parity.test_k_diffusion import VEModel

RTOL = ATOL = 1e-12
SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}
N_STEPS = 15

# key, k-diffusion sampler, our options, k-diffusion's options
CASES = [
    ("sde_dpm_solver_pp_2m", "sample_dpmpp_2m_sde", {}, {}),
    ("sde_dpm_solver_pp_2m", "sample_dpmpp_2m_sde", dict(solver_type="heun"),
     dict(solver_type="heun")),
    ("sde_dpm_solver_pp_2m", "sample_dpmpp_2m_sde", dict(eta=0.5, s_noise=1.1, solver_type="heun"),
     dict(eta=0.5, s_noise=1.1, solver_type="heun")),
    ("sde_dpm_solver_pp_2m", "sample_dpmpp_2m_sde", dict(eta=1.7), dict(eta=1.7)),
    ("sde_dpm_solver_pp_3m", "sample_dpmpp_3m_sde", {}, {}),
    ("sde_dpm_solver_pp_3m", "sample_dpmpp_3m_sde", dict(eta=0.6, s_noise=0.9),
     dict(eta=0.6, s_noise=0.9)),
    ("dpm_solver_pp_sde", "sample_dpmpp_sde", {}, {}),
    ("dpm_solver_pp_sde", "sample_dpmpp_sde", dict(eta=0.5, s_noise=1.2), dict(eta=0.5, s_noise=1.2)),
    ("dpm_solver_pp_sde", "sample_dpmpp_sde", dict(eta=1.5), dict(eta=1.5)),
    ("dpm_solver_pp_2s_ancestral", "sample_dpmpp_2s_ancestral", {}, {}),
    ("dpm_solver_pp_2s_ancestral", "sample_dpmpp_2s_ancestral", dict(eta=0.5, s_noise=1.2),
     dict(eta=0.5, s_noise=1.2)),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", {}, {}),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", dict(eta=0.3, s_noise=0.8),
     dict(eta=0.3, s_noise=0.8)),
    ("ddim_stochastic", "sample_euler_ancestral", {}, {}),
    ("ddim", "sample_euler_ancestral", dict(eta=0.4), dict(eta=0.4)),
]  # fmt: skip
# multistep samplers: k-diffusion never lowers the order of its last steps
MULTISTEP = {"sde_dpm_solver_pp_2m", "sde_dpm_solver_pp_3m"}


class BrownianPath:
    """A Brownian path pre-drawn at ``times`` (our ``t``), read by both implementations."""

    def __init__(self, sde, times, like, seed):
        self.times = sorted({float(t) for t in times}, reverse=True)
        self.log_levels = [
            -float(v) for v in sde.lambda_(torch.tensor(self.times, dtype=torch.float64))
        ]
        gen = torch.Generator().manual_seed(seed)
        self.W = [torch.zeros_like(like)]
        for a, b in zip(self.times[:-1], self.times[1:], strict=True):
            step = torch.randn(like.shape, generator=gen, dtype=like.dtype)
            self.W.append(self.W[-1] + math.sqrt(a - b) * step)

    def _index(self, values, v, what):
        k = min(range(len(values)), key=lambda j: abs(values[j] - v))
        assert abs(values[k] - v) <= 1e-10 * max(1.0, abs(v)), f"{what} {v} is not on the path"
        return k

    def increment(self, a: int, b: int):
        return (self.W[b] - self.W[a]) / math.sqrt(abs(self.times[a] - self.times[b]))

    def ours(self):
        path = self

        class PathNoise(NoiseSource):
            def __call__(self, t, t_next, like):
                i, j = (path._index(path.times, v, "time") for v in (t, t_next))
                return path.increment(i, j)

        return PathNoise()

    def k_diffusion(self):
        def noise_sampler(sigma, sigma_next):
            i, j = (self._index(self.log_levels, math.log(float(v)), "level")
                    for v in (sigma, sigma_next))  # fmt: skip
            return self.increment(i, j)

        return noise_sampler


def run_both(kd, key, k_name, options, k_options, sde_key, ending):
    sde = SDES[sde_key]
    ts = S.Karras().grid(sde, N_STEPS)
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam = sde.lambda_(ts)
    stages = sde.inverse_lambda(lam[:-1] + 0.5 * (lam[1:] - lam[:-1]))
    path = BrownianPath(sde, [*ts.tolist(), *stages.tolist()], x_T, seed=5)
    if key in MULTISTEP:
        options = {**options, "lower_order_final": False}
    ours = S.sample(
        S.get_sampler(key, **options), gmm_2d().denoiser(sde, "eps"), x_T=x_T,
        grid=S.Explicit(ts), noise=path.ours(), denoise_final=ending == "zero", progress=False,
    ).x  # fmt: skip
    sigmas = torch.exp(-lam)
    if ending == "zero":
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    y = getattr(kd, k_name)(VEModel(sde), x_T / sde.alpha(ts[0]), sigmas, disable=True,
                            noise_sampler=path.k_diffusion(), **k_options)  # fmt: skip
    return ours, y if ending == "zero" else sde.alpha(ts[-1]) * y


@pytest.mark.parametrize("ending", ["t_min", "zero"])
@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize(
    "key, k_name, options, k_options", CASES,
    ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[2].items()) or 'default'}" for c in CASES],
)  # fmt: skip
def test_stochastic_sampler_matches_k_diffusion_on_the_same_brownian_path(
    kd, key, k_name, options, k_options, sde_key, ending
):
    ours, expected = run_both(kd, key, k_name, options, k_options, sde_key, ending)
    torch.testing.assert_close(ours, expected, rtol=RTOL, atol=ATOL * float(expected.abs().max()))


def test_the_comparison_sees_the_noise(kd):
    """The parity is not vacuous: another path, or ``s_noise`` on one side only, moves the result
    far beyond the tolerance."""
    ours, expected = run_both(kd, "dpm_solver_pp_sde", "sample_dpmpp_sde", {}, {}, "vp", "t_min")
    other, _ = run_both(kd, "dpm_solver_pp_sde", "sample_dpmpp_sde", dict(s_noise=1.01), {},
                        "vp", "t_min")  # fmt: skip
    assert (other - expected).abs().max() > 1e-4 * expected.abs().max()
    torch.testing.assert_close(ours, expected, rtol=RTOL, atol=ATOL * float(expected.abs().max()))
