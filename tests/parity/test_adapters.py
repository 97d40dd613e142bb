"""Adapters reproduce the wrapped library's own quantities on the same inputs.

- diffusers: the DiscreteVPSDE built from a scheduler config has the scheduler's
  ``alphas_cumprod`` at every train step (diffusers accumulates the product of 1000 factors in
  float32: relative error up to N * 2^-24 = 6e-5, hence rtol 1e-4), and the Denoiser calls the UNet with the train index and converts its
  epsilon / v output exactly as diffusers' DDIM step does (float64, rtol 1e-10).
- k-diffusion: the VE SDE's sigma at t_min and T are the given sigma_min / sigma_max to rounding.
- score_fn: an exact score function gives the exact denoiser.
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import (
    discrete_sde_from_config,
    from_diffusers,
    from_k_diffusion,
    from_score_fn,
)

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test-only dependency")


def tiny_unet(out_channels=1, **kw):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=out_channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, **kw,
    ).double().eval()  # fmt: skip


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedule_from_config_matches_the_schedulers_alphas_cumprod(schedule):
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
    sde = discrete_sde_from_config(sched.config)
    torch.testing.assert_close(sde.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoiser_converts_unet_output_like_diffusers(prediction_type):
    unet = tiny_unet()
    sched = diffusers.DDIMScheduler(prediction_type=prediction_type, clip_sample=False)
    sde, den = from_diffusers(unet, sched)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = 617
    with torch.no_grad():
        out = unet(x, step).sample
        pred = den.predict(x, sde.index_to_t(step))
    abar = sde.alphas_cumprod[step]  # float64; its agreement with diffusers is tested above
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x0 = {"epsilon": (x - s * out) / a, "v_prediction": a * x - s * out, "sample": out}[
        prediction_type
    ]
    torch.testing.assert_close(pred.x0, x0, rtol=1e-10, atol=1e-12)
    assert den.nfe == 1


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_learned_variance_models_split_mean_and_variance_channels(variance_type):
    """The mean channels give eps; ``learned_range`` also hands the variance channels on as
    ``var_interp`` (``ancestral`` uses them), ``learned`` drops them."""
    unet = tiny_unet(out_channels=2)
    sde, den = from_diffusers(unet, {"num_train_timesteps": 1000, "beta_schedule": "linear",
                                     "variance_type": variance_type})  # fmt: skip
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        pred, out = den.predict(x, sde.index_to_t(10)), unet(x, 10).sample
    torch.testing.assert_close(pred.eps, out[:, :1])
    if variance_type == "learned_range":
        torch.testing.assert_close(pred.var_interp, out[:, 1:])
    else:
        assert pred.var_interp is None


def test_wrong_configs_name_what_is_wrong():
    unet = tiny_unet()
    with pytest.raises(ValueError, match="prediction_type must be one of .*got 'mu'"):
        from_diffusers(unet, {"beta_schedule": "linear", "prediction_type": "mu"})
    with pytest.raises(ValueError, match="flow_prediction' means the rectified-flow path"):
        from_diffusers(unet, {"beta_schedule": "linear", "prediction_type": "flow_prediction"})
    with pytest.raises(ValueError, match="beta_schedule must be one of .*got 'sigmoid'"):
        from_diffusers(unet, {"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="neither trained_betas nor beta_schedule"):
        from_diffusers(unet, {"num_train_timesteps": 1000})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr=True"):
        from_diffusers(unet, {"beta_schedule": "linear", "rescale_betas_zero_snr": True})
    with pytest.raises(TypeError, match="scheduler_or_config must be"):
        from_diffusers(unet, 42)
    bad = S.Denoiser(lambda x, t: x[..., :4], S.VPSDE())
    with pytest.raises(ValueError, match=r"returned torch.float\d+ of shape \(2, 1, 8, 4\)"):
        bad.predict(torch.zeros(2, 1, 8, 8), 0.5)


def test_x0_corrections_of_the_config_become_the_denoisers():
    """thresholding wins over clip_sample (diffusers' precedence); each option is read."""
    cases = [
        ({"clip_sample": False}, None),
        ({"clip_sample": True, "clip_sample_range": 2.5}, S.ClipX0(2.5)),
        ({"thresholding": True, "clip_sample": True, "dynamic_thresholding_ratio": 0.9,
          "sample_max_value": 3.0}, S.DynamicThreshold(0.9, 3.0)),
    ]  # fmt: skip
    for options, expected in cases:
        _, den = from_diffusers(tiny_unet(), diffusers.DDIMScheduler(**options))
        assert repr(den.x0_correction) == repr(expected)


def test_k_diffusion_adapter_puts_sigma_min_and_max_at_the_grid_ends():
    sde, den = from_k_diffusion(
        lambda x, sigma: x, sigmas=torch.tensor([14.6, 3.0, 0.03, 0.0], dtype=torch.float64)
    )
    assert sde.sigma(sde.t_min).item() == pytest.approx(0.03, rel=1e-12)
    assert sde.sigma(sde.T).item() == pytest.approx(14.6, rel=1e-12)
    assert den.parameterization is S.Parameterization.X0
    with pytest.raises(ValueError, match="give sigmas=, or sigma_min= and sigma_max="):
        from_k_diffusion(lambda x, sigma: x)


def test_score_fn_adapter_gives_the_exact_denoiser():
    sde = S.VPSDE()
    data = S.ring_mixture()
    den = from_score_fn(lambda x, t: data.score(x, t, sde), sde)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(den.x0(x, 0.3), data.x0(x, 0.3, sde), rtol=1e-10, atol=1e-10)
