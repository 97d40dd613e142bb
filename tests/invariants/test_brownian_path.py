"""``BrownianNoise``'s path: Brownian motion, the same at any step count, and cheap on dyadic grids.

* Law: every element of a ``(N,)`` state is an independent path, so ``N = 2e5`` elements sample
  the joint law of the increments over intervals at arbitrary (non-dyadic) times, two of them
  only 1e-5 apart (far above the tree's ``tol`` of 1e-7, far below the top cells). Each scaled
  increment must have variance 1 within 5 standard errors (``5 sqrt(2/N)``) and the correlation of
  any two disjoint increments must be 0 within ``5/sqrt(N)``.
* Consistency: increments of a 50-step grid equal the sums of those of a 100-step and of a
  150-step grid over the same intervals, in any query order (the value at a time depends on the
  seed and the time alone). The grids' float64 times differ by rounding (~1e-16), which moves a
  value bridged inside a leaf of width ~6e-8 by ~1e-16 / sqrt(6e-8) < 1e-12, times
  ``1/sqrt(0.02)`` for the scaled increment: atol 1e-10.
* Cost: on a ``UniformTime`` grid of 2^k steps (dyadic times) a pass over the grid draws at most
  2 state-sized normals per step; on a non-dyadic grid at most ``depth - log2(n) + 3`` per step.
"""

import math

import pytest
import torch

import scoresde as S
import scoresde.noise as noise_module

N = 200_000


def increments(noise, times, like):
    return [noise(a, b, like) for a, b in zip(times[:-1], times[1:], strict=True)]


def test_increments_at_arbitrary_times_are_independent_standard_normals():
    like = torch.zeros(N, dtype=torch.float64)
    times = [0.9731, 0.7123457, 0.5, 0.3141592, 0.31414920, 0.1234567, 0.0412]
    noise = S.BrownianNoise(seed=11)
    noise.bind(torch.tensor([1.0, 1e-3], dtype=torch.float64), like)
    z = torch.stack(increments(noise, times, like))
    var = z.var(dim=1)
    assert (var - 1).abs().max() < 5 * (2 / N) ** 0.5, var
    corr = torch.corrcoef(z)
    off = corr - torch.eye(len(z), dtype=corr.dtype)
    assert off.abs().max() < 5 / N**0.5, corr


def test_the_path_is_the_same_at_any_step_count_and_query_order():
    sde = S.VPSDE()
    like = torch.zeros(7, 3, dtype=torch.float64)
    noise = S.BrownianNoise(seed=3)
    coarse = S.UniformTime().grid(sde, 50).tolist()
    noise.bind(torch.tensor(coarse, dtype=torch.float64), like)
    want = increments(noise, coarse, like)

    def scaled(t, t_next):
        return noise(t, t_next, like) * (t - t_next) ** 0.5

    for n in (100, 150):
        fine = S.UniformTime().grid(sde, n).tolist()
        r = n // 50
        for j in reversed(range(50)):  # backwards: the order of queries must not matter
            total = sum(scaled(fine[r * j + k], fine[r * j + k + 1]) for k in range(r))
            torch.testing.assert_close(
                total / (coarse[j] - coarse[j + 1]) ** 0.5, want[j], rtol=0, atol=1e-10
            )


class CountDraws:
    def __init__(self, monkeypatch):
        self.n = 0
        draw = noise_module._DyadicBrownian._draw

        def counted(obj, *args):
            self.n += 1
            return draw(obj, *args)

        monkeypatch.setattr(noise_module._DyadicBrownian, "_draw", counted)


@pytest.mark.parametrize("n", [16, 64, 256, 50, 100, 200])
def test_a_pass_over_a_grid_draws_few_normals_per_step(n, monkeypatch):
    sde = S.VPSDE()
    like = torch.zeros(4)
    ts = S.UniformTime().grid(sde, n)
    noise = S.BrownianNoise(seed=0)
    counter = CountDraws(monkeypatch)
    noise.bind(ts, like)
    increments(noise, ts.tolist(), like)
    per_step = counter.n / n
    depth = math.ceil(math.log2((sde.T - sde.t_min) / noise.tol))
    bound = 2 if n & (n - 1) == 0 else depth - math.log2(n) + 3
    assert per_step <= bound, (n, per_step, bound)
