"""x0 corrections (clipping, dynamic thresholding) reproduce diffusers' clipped sampling loops.

* The corrections themselves equal diffusers' ``clamp`` and ``_threshold_sample`` on the same
  tensors (float64, to rounding: 1e-12).
* The Denoiser derives ``eps`` from the corrected ``x0``, so the eps-form DDIM
  (``dpm_solver_1``) and the x0-form DDIM (``dpm_solver_pp_1``) stay the same sampler of the
  corrected model (float64 rounding, 1e-10): a Denoiser that corrected ``x0`` only would make
  them differ by the whole correction.
* A tiny random ``UNet2DModel`` (float64, no download) through ``from_diffusers``: our ``ddim``
  reproduces ``DDIMScheduler()`` with its default ``clip_sample=True`` when diffusers' step
  re-derives eps from the clipped x0 (``use_clipped_model_output=True``), and our
  ``dpm_solver_pp_2m`` reproduces ``DPMSolverMultistepScheduler(thresholding=True)``. Tolerance
  1e-5 relative, as ``tests/parity/test_diffusers_unet.py`` (diffusers' float32 schedule tables).
  ``DDIMScheduler.step``'s default ``use_clipped_model_output=False`` pairs the clipped x0 with
  the unclipped eps, which is not the prediction of any one model; the test measures that it
  differs from the consistent update by far more than the tolerance (documented in
  ``docs/bring-your-own-model.md``).
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import from_diffusers
from tests.helpers import gmm_2d

diffusers = pytest.importorskip("diffusers", reason="parity with diffusers needs diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

STEPS = 10


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    return model.double().eval()


def x_T():
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("ratio, max_value", [(0.995, 1.0), (0.9, 2.5), (0.5, 0.8), (1.0, 4.0)])
def test_dynamic_threshold_is_diffusers_threshold_sample(ratio, max_value):
    sched = diffusers.DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=ratio,
                                    sample_max_value=max_value)  # fmt: skip
    x0 = 2.0 * torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)  # fmt: skip
    ours = S.DynamicThreshold(ratio, max_value)(x0)
    torch.testing.assert_close(ours, sched._threshold_sample(x0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S.ClipX0(1.5)(x0), x0.clamp(-1.5, 1.5), rtol=0, atol=0)


@pytest.mark.parametrize("correction", [S.ClipX0(0.5), S.DynamicThreshold(0.9, 1.5)])
def test_eps_is_derived_from_the_corrected_x0(correction):
    """``eps = (x - alpha x0_c) / sigma``, and the eps-form and x0-form DDIM agree."""
    sde = S.VPSDE()
    den = gmm_2d().denoiser(sde, "eps")
    corrected = S.Denoiser(den.net, sde, "eps", x0_correction=correction)
    x = 3.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    pred, plain = corrected.predict(x, t), den.predict(x, t)
    torch.testing.assert_close(pred.x0, correction(plain.x0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.eps, (x - sde.alpha(t) * pred.x0) / sde.sigma(t))
    runs = {key: S.sample(key, corrected, x_T=x, n_steps=8, progress=False).x
            for key in ("dpm_solver_1", "dpm_solver_pp_1")}  # fmt: skip
    torch.testing.assert_close(
        runs["dpm_solver_1"], runs["dpm_solver_pp_1"], rtol=1e-10, atol=1e-10
    )
    plain_run = S.sample("dpm_solver_1", den, x_T=x, n_steps=8, progress=False).x
    assert (plain_run - runs["dpm_solver_1"]).abs().max() > 1e-3  # the correction acted


def test_ddim_reproduces_diffusers_ddim_with_its_default_clip_sample(unet):
    scheduler = diffusers.DDIMScheduler()  # clip_sample=True, clip_sample_range=1.0
    assert scheduler.config.clip_sample
    scheduler.set_timesteps(STEPS)

    def diffusers_loop(use_clipped_model_output):
        x = x_T()
        with torch.no_grad():
            for t in scheduler.timesteps:
                out = unet(x, t).sample
                x = scheduler.step(
                    out, t, x, use_clipped_model_output=use_clipped_model_output
                ).prev_sample
        return x  # fmt: skip

    sde, den = from_diffusers(unet, scheduler)
    assert isinstance(den.x0_correction, S.ClipX0)
    ts = S.DiscreteSpacing("leading", final="t_min").grid(sde, STEPS - 1)
    with torch.no_grad():
        res = S.sample("ddim", den, x_T=x_T(), grid=S.Explicit(ts), denoise_final=True,
                       progress=False)  # fmt: skip
    rel = relative(res.x, diffusers_loop(True))
    assert rel <= 1e-5, f"ddim with clip_sample: relative difference {rel:.2e}"
    # the clipping acted, and diffusers' default step (clipped x0, unclipped eps) is another update
    _, plain = from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False))
    with torch.no_grad():
        unclipped = S.sample("ddim", plain, x_T=x_T(), grid=S.Explicit(ts), denoise_final=True,
                             progress=False).x  # fmt: skip
    assert relative(unclipped, res.x) > 1e-2
    assert relative(diffusers_loop(False), res.x) > 1e-3


@pytest.mark.parametrize("max_value", [1.0, 2.0])
def test_dpm_solver_pp_2m_reproduces_diffusers_thresholding(unet, max_value):
    scheduler = diffusers.DPMSolverMultistepScheduler(thresholding=True, sample_max_value=max_value,
                                                      dynamic_thresholding_ratio=0.9)  # fmt: skip
    scheduler.set_timesteps(STEPS)
    x = x_T()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample

    sde, den = from_diffusers(unet, scheduler)
    assert isinstance(den.x0_correction, S.DynamicThreshold)
    ts = S.DiscreteSpacing("linspace", final="zero").grid(sde, STEPS - 1)
    sampler = S.get_sampler("dpm_solver_pp_2m", lower_order_final=False)
    with torch.no_grad():
        res = S.sample(sampler, den, x_T=x_T(), grid=S.Explicit(ts), denoise_final=True,
                       progress=False)  # fmt: skip
        _, plain = from_diffusers(unet, diffusers.DPMSolverMultistepScheduler())
        unthresholded = S.sample(sampler, plain, x_T=x_T(), grid=S.Explicit(ts),
                                 denoise_final=True, progress=False).x  # fmt: skip
    rel = relative(res.x, x)
    assert rel <= 1e-5, f"dpm_solver_pp_2m with thresholding: relative difference {rel:.2e}"
    assert relative(unthresholded, res.x) > 1e-2  # the thresholding acted


def test_bad_corrections_name_the_argument():
    with pytest.raises(ValueError, match=r"ratio must be a finite real number in \(0.0, 1.0\]"):
        S.DynamicThreshold(ratio=1.5)
    with pytest.raises(ValueError, match=r"ratio must be .* got 0"):
        S.DynamicThreshold(ratio=0)
    with pytest.raises(ValueError, match=r"max_value must be a finite real number in \(0.0, inf"):
        S.DynamicThreshold(max_value=0.0)
    with pytest.raises(ValueError, match=r"range must be .*got -1"):
        S.ClipX0(-1)
    with pytest.raises(TypeError, match="x0_correction must be None or an X0Correction"):
        S.Denoiser(lambda x, t: x, S.VPSDE(), x0_correction=lambda x0: x0)
