"""``ancestral`` with a learned-variance model reproduces diffusers' ``DDPMScheduler(
variance_type="learned_range")`` loop on a tiny random UNet with ``2C`` output channels.

diffusers splits the output into the ``C`` mean channels and the ``C`` variance channels ``v``,
forms ``x0`` (clipped to ``[-1, 1]``: the scheduler's default ``clip_sample=True``, which
``from_diffusers`` turns into ``ClipX0``), takes the posterior mean, and adds
``exp(0.5 (w log beta_t + (1 - w) log beta~_t)) z`` with ``w = (v + 1) / 2`` (Nichol & Dhariwal
2021, eq. 15). Its last step (train step 0 to the data, no noise) is our ``denoise_final``. Both
sides draw ``z`` from the same seeded CPU generator in the same order (one draw per step after
the network call, none on the last step).

Tolerance: 1e-5 relative, as the deterministic UNet parity tests: the only difference is
diffusers' float32 ``alphas_cumprod`` (the UNet and the states are float64). A sampler that
ignored the learned variance (``fixed_large``, ``std^2 = beta_t``) differs by ~1e-2 (checked).
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import from_diffusers

diffusers = pytest.importorskip("diffusers", reason="parity with diffusers needs diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

STEPS = 10


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=2, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    return model.double().eval()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ancestral_reproduces_diffusers_ddpm_learned_range(unet, prediction_type):
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range",
                                        prediction_type=prediction_type)  # fmt: skip
    scheduler.set_timesteps(STEPS)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    x = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=gen).prev_sample

    sde, den = from_diffusers(unet, scheduler)
    assert den.learned_variance and isinstance(den.x0_correction, S.ClipX0)
    ts = S.DiscreteSpacing("leading", final="t_min").grid(sde, STEPS - 1)
    assert (sde.t_to_index(ts).round().long().tolist()) == scheduler.timesteps.tolist()

    def ours(denoiser):
        with torch.no_grad():
            return S.sample("ancestral", denoiser, x_T=x_T, grid=S.Explicit(ts), denoise_final=True,
                            generator=torch.Generator().manual_seed(2), progress=False)  # fmt: skip

    res = ours(den)
    rel = ((res.x - x).norm() / x.norm()).item()
    assert rel <= 1e-5, f"ancestral with learned_range: relative difference {rel:.2e}"
    assert res.nfe == STEPS
    _, mean_only = from_diffusers(unet, {**scheduler.config, "variance_type": "learned"})
    assert ((ours(mean_only).x - x).norm() / x.norm()).item() > 1e-3


def test_corrected_guided_learned_variance_steps_make_no_host_sync():
    """Thresholding, an interval-guided call and the learned variance stay device-side: one
    ``ancestral`` run's steps under ``NoHostSync``."""
    from tests.helpers import NoHostSync

    def net(x, t, class_labels):
        mean = 0.3 * x + class_labels.to(x.dtype)[:, None, None, None]
        return torch.cat([mean, torch.tanh(x)], dim=1)

    y = torch.tensor([1, 2])
    cfg = S.ClassifierFreeGuidance(3.0, {"class_labels": y}, {"class_labels": 0 * y},
                                   guidance_rescale=0.5, interval=(0.5, 20.0))  # fmt: skip
    sde = S.DiscreteVPSDE.linear()
    den = S.Denoiser(net, sde, "eps", time_input="index", guidance=cfg, learned_variance=True,
                     x0_correction=S.DynamicThreshold(0.9, 2.0))  # fmt: skip
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampler, ts = S.get_sampler("ancestral"), S.UniformTime().grid(sde, 5)
    noise = S.GaussianNoise(torch.Generator().manual_seed(1))
    with torch.inference_mode():
        state = sampler.init(den, sde, ts, x)
        grid = ts.tolist()
        with NoHostSync():
            for i in range(len(grid) - 1):
                x, state = sampler.step(den, sde, grid, i, x, state, noise)
    assert torch.isfinite(x).all()
