"""Memory does not grow with the step count unless a trajectory is asked for, and a trajectory
costs about its own size; the backends name where a non-finite value arose.

Memory probe: each case runs in a fresh process (so the peak resident set, ``ru_maxrss``, is its
own) on a 4 MiB state, ``(1024, 1024)`` float32, with a cheap linear network. At 16 and at 256
steps the peaks may differ by at most 64 MiB without a trajectory, where keeping one state per
grid time would cost 960 MiB more (the torchdiffeq and scipy backends did: 3-4 states per grid
time). With ``save_trajectory`` the peak may exceed the trajectory's own size by at most 20 %.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scoresde as S

REPO = Path(__file__).parents[2]
MIB = 2**20
STATE = (1024, 1024)

PROBE = f"""
import resource, sys, torch
import scoresde as S
key, n, traj = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
den = S.Denoiser(lambda x, t: 0.5 * x, S.VPSDE(), "x0")
x_T = torch.randn({STATE}, generator=torch.Generator().manual_seed(0))
sampler = S.get_sampler(key, **({{"rtol": 1e-3, "atol": 1e-3}} if key in ("scipy", "torchdiffeq") else {{}}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
S.sample(sampler, den, x_T=x_T, n_steps=n, grid=S.UniformTime(), save_trajectory=traj, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""

# the driver loop every step-based sampler shares (ddim), and the three whole-grid backends
KEYS = ["ddim", "torchdiffeq_fixed", "torchdiffeq", "scipy"]


def peak_growth_mib(key: str, n: int, trajectory: bool = False) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, key, str(n), "1" if trajectory else "0"],
        capture_output=True, text=True, cwd=REPO, check=True,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return int(out.stdout.split()[-1]) * 1024 / MIB  # ru_maxrss is in KiB on Linux


@pytest.mark.parametrize("key", KEYS)
def test_peak_memory_does_not_grow_with_the_step_count(key):
    small, large = peak_growth_mib(key, 16), peak_growth_mib(key, 256)
    assert large - small < 64, f"{key}: peak grew by {large - small:.0f} MiB from 16 to 256 steps"


@pytest.mark.parametrize("key", ["ddim", "torchdiffeq_fixed", "scipy"])
def test_a_trajectory_costs_about_its_own_size(key):
    n = 128
    size = (n + 1) * torch.Size(STATE).numel() * 4 / MIB
    extra = peak_growth_mib(key, n, trajectory=True) - peak_growth_mib(key, n)
    assert extra <= 1.2 * size, f"{key}: trajectory of {size:.0f} MiB cost {extra:.0f} MiB"


def nan_after(t_bad: float):
    """The ring mixture's exact denoiser, returning NaN once t falls below ``t_bad``."""
    inner = S.ring_mixture().denoiser(S.VPSDE())

    def net(x, t):
        out = inner.raw(x, t)
        return torch.where(t[:, None] < t_bad, torch.full_like(out, float("nan")), out)

    return S.Denoiser(net, inner.sde, inner.parameterization)


def test_a_fixed_grid_backend_names_the_step_and_times_of_a_nan():
    den = nan_after(0.45)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(
        FloatingPointError, match=r"at step 5 \(t=0.5005 -> t_next=0.4006\) in 'torchdiffeq_fixed'"
    ):
        S.sample(
            "torchdiffeq_fixed", den, x_T=x_T, n_steps=10, grid=S.UniformTime(), progress=False
        )


@pytest.mark.parametrize("key", ["torchdiffeq", "scipy"])
def test_an_adaptive_backend_names_where_the_model_output_became_non_finite(key):
    den = nan_after(0.45)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(
        FloatingPointError, match=r"model output first became non-finite at t=0\.4[0-9]"
    ):
        S.sample(key, den, x_T=x_T, n_steps=10, grid=S.UniformTime(), progress=False)
