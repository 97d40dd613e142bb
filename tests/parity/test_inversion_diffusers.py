"""Our inversion reproduces diffusers' ``DDIMInverseScheduler`` (``ddim``) and
``DPMSolverMultistepInverseScheduler`` (``dpm_solver_pp_2m`` / ``_3m``) on a tiny random UNet.

diffusers' loop ``for t in timesteps: x = inverse.step(unet(x, t).sample, t, x).prev_sample``
with ``timesteps = [0, r, 2r, ..., (m - 1) r]`` (``r = N // m``, ``"leading"``) steps the state
from train step ``t - r`` to ``t`` by DDIM's update, converting the network output with the
schedule at ``t - r`` (the state's own level) but calling the network with the *target*
timestep ``t`` (the approximation ``eps(x_{t-r}, t) ~ eps(x_{t-r}, t - r)`` that DDIM inversion
is usually run with). With ``set_alpha_to_one=False`` its first step goes from train step 0 to
train step 0 (the identity, one wasted network call). ``scoresde.invert`` with ``ddim`` on the
increasing grid of train steps ``0, r, ..., (m - 1) r`` evaluates the network at the state's own
time, the PF-ODE's exponential-Euler step; given a time input shifted by ``r`` train steps
(:class:`NextTrainIndex`) it is diffusers' update exactly, which isolates the solver arithmetic.
Without the shift the two differ by the model's change over one step (checked to be far above
the tolerance).

Tolerance: 1e-5 relative, as ``tests/parity/test_diffusers_unet.py`` (diffusers' float32
``alphas_cumprod``; the UNet runs in float64).
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import from_diffusers

diffusers = pytest.importorskip("diffusers", reason="parity with diffusers needs diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

STEPS = 10


class NextTrainIndex(S.TrainIndex):
    """The train index ``r`` steps ahead of the state's: diffusers' inverse-DDIM timestep."""

    def __init__(self, r: int):
        self.r = r

    def __call__(self, sde, t):
        return sde.t_to_index(t) + self.r


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    return model.double().eval()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_reproduces_diffusers_ddim_inverse_scheduler(unet, prediction_type):
    inverse = diffusers.DDIMInverseScheduler(set_alpha_to_one=False, clip_sample=False,
                                             prediction_type=prediction_type)  # fmt: skip
    inverse.set_timesteps(STEPS)
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = 2.0 * x0 - 1.0
    x = x0.clone()
    with torch.no_grad():
        for t in inverse.timesteps:
            x = inverse.step(unet(x, t).sample, t, x).prev_sample

    sde, den = from_diffusers(unet, inverse)
    r = sde.N // STEPS
    steps = inverse.timesteps.to(torch.float64)
    assert steps.tolist() == [k * r for k in range(STEPS)]
    shifted = S.Denoiser(den.net, sde, den.parameterization, time_input=NextTrainIndex(r))
    with torch.no_grad():
        res = S.invert("ddim", shifted, x0, grid=sde.index_to_t(steps), progress=False)
        own_time = S.invert("ddim", den, x0, grid=sde.index_to_t(steps), progress=False).x
    rel = ((res.x - x).norm() / x.norm()).item()
    assert rel <= 1e-5, f"DDIM inversion vs DDIMInverseScheduler: relative difference {rel:.2e}"
    assert res.nfe == STEPS - 1  # diffusers' first (identity) step is not taken
    assert ((own_time - x).norm() / x.norm()).item() > 1e-3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("key, order", [("dpm_solver_pp_2m", 2), ("dpm_solver_pp_3m", 3)])
def test_dpm_solver_pp_inversion_reproduces_diffusers_inverse_scheduler(
    unet, key, order, prediction_type
):
    """``DPMSolverMultistepInverseScheduler`` is DPM-Solver++ on the increasing train steps
    ``round(linspace(0, N - 1, m + 1))[:-1]`` and then ``N - 1``, with the network at the state's
    own time: our inversion on that grid, with the same options (no lower-order final step; the
    3M ``"reference"`` variant diffusers implements). diffusers keeps its noise levels
    ``sigma = sqrt((1 - abar) / abar)`` in float32; near the data end (``sigma = 0.01`` at train
    step 0) their rounding moves the first ``h`` by ~1e-5 relative, which reaches 3.4e-5 in the
    result, so the test replaces them by the same values in float64 (as
    ``tests/parity/diffusers_loop.upcast`` does for the sampling schedulers); what remains is
    diffusers' float32 ``alphas_cumprod`` (measured 5e-7 to 2.5e-6)."""
    inverse = diffusers.DPMSolverMultistepInverseScheduler(
        prediction_type=prediction_type, solver_order=order, lower_order_final=False
    )
    inverse.set_timesteps(STEPS)
    abar = inverse.alphas_cumprod.to(torch.float64)
    sigma = ((1.0 - abar) / abar).sqrt()
    inverse.sigmas = torch.cat([sigma[inverse.timesteps], sigma[-1:]])
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = 2.0 * x0 - 1.0
    x = x0.clone()
    with torch.no_grad():
        for t in inverse.timesteps:
            x = inverse.step(unet(x, t).sample, t, x).prev_sample

    sde, den = from_diffusers(unet, inverse)
    steps = torch.cat([inverse.timesteps.to(torch.float64), torch.tensor([sde.N - 1.0])])
    options = {"lower_order_final": False, **({"variant": "reference"} if order == 3 else {})}
    with torch.no_grad():
        res = S.invert(S.get_sampler(key, **options), den, x0, grid=sde.index_to_t(steps),
                       progress=False)  # fmt: skip
    rel = ((res.x - x).norm() / x.norm()).item()
    assert rel <= 1e-5, f"{key} inversion vs diffusers: relative difference {rel:.2e}"
    assert res.nfe == STEPS
