"""A diffusers UNet sampled through ``from_diffusers`` reproduces diffusers' own sampling loops.

A randomly initialised tiny ``UNet2DModel`` (no download) in float64, wrapped by
:func:`scoresde.adapters.from_diffusers`, is sampled by our ``ddim``, ``dpm_solver_pp_2m`` and
``unipc`` on the timesteps diffusers uses (:class:`~scoresde.DiscreteSpacing`), from the same
``x_T``, for epsilon- and v-prediction models. The reference is diffusers' loop
``for t in scheduler.timesteps: x = scheduler.step(unet(x, t).sample, t, x).prev_sample`` with
``DDIMScheduler``, ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler``. How the final
step maps is explained in ``tests/parity/test_diffusers.py``.

Tolerance: 1e-5 relative (the issue's bound). The two sides differ only by diffusers' float32
schedule tables (relative rounding 6e-8 of ``alphas_cumprod``, amplified to ~2e-6 in the step
coefficients; see ``tests/parity/test_diffusers.py``) and by ``DPMSolverMultistepScheduler``
rounding its state to float32 each step.
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import from_diffusers

diffusers = pytest.importorskip("diffusers", reason="parity with diffusers needs diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

STEPS = 10
# (our key, our options, diffusers scheduler, its config, spacing, final)
CASES = {
    "ddim": ("ddim", {}, "DDIMScheduler", {"clip_sample": False}, "leading", "t_min"),
    "dpm_solver_pp_2m": ("dpm_solver_pp_2m", {"lower_order_final": False},
                         "DPMSolverMultistepScheduler", {}, "linspace", "zero"),
    "unipc": ("unipc", {"lower_order_final": False}, "UniPCMultistepScheduler", {}, "linspace", "zero"),
}  # fmt: skip


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
@pytest.mark.parametrize("case", sorted(CASES))
def test_from_diffusers_reproduces_the_diffusers_loop(case, prediction_type, unet):
    key, options, name, config, spacing, final = CASES[case]
    scheduler = getattr(diffusers, name)(prediction_type=prediction_type, **config)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    scheduler.set_timesteps(STEPS)
    x = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample

    sde, den = from_diffusers(unet, scheduler)
    n_steps = STEPS - 1  # every case ends with diffusers' jump to the data: our denoise_final
    ts = S.DiscreteSpacing(spacing, final=final).grid(sde, n_steps)
    with torch.no_grad():
        res = S.sample(S.get_sampler(key, **options), den, x_T=x_T, grid=S.Explicit(ts),
                       denoise_final=True, progress=False)  # fmt: skip
    rel = ((res.x - x).norm() / x.norm()).item()
    assert rel <= 1e-5, f"{case}/{prediction_type}: relative difference {rel:.2e}"
    assert res.nfe == len(scheduler.timesteps)
