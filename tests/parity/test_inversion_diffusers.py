"""Our DDIM inversion reproduces diffusers' ``DDIMInverseScheduler`` on a tiny random UNet.

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
