"""Classifier-free guidance composes in the Denoiser: one batched call per evaluation, and
scale 1 / 0 reproduce the conditional / unconditional model exactly (float64)."""

import pytest
import torch

import scoresde as S


class ToyConditional:
    """eps = 0.1 x + embedding(label): conditional on a class label."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, class_labels):
        self.calls += 1
        return 0.1 * x + class_labels.to(x.dtype)[:, None] * 0.05 * t[:, None]


def denoiser(guidance=None, **kw):
    return S.Denoiser(ToyConditional(), S.VPSDE(), "eps", guidance=guidance, **kw)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.5])
def test_guided_output_is_the_linear_combination(scale):
    x = torch.randn(4, 2, dtype=torch.float64)
    y, null = torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long)
    g = S.ClassifierFreeGuidance(scale, cond={"class_labels": y}, uncond={"class_labels": null})
    guided = denoiser(g)
    cond = denoiser(model_kwargs={"class_labels": y}).eps(x, 0.4)
    uncond = denoiser(model_kwargs={"class_labels": null}).eps(x, 0.4)
    torch.testing.assert_close(
        guided.eps(x, 0.4), uncond + scale * (cond - uncond), rtol=1e-12, atol=1e-12
    )
    assert guided.nfe == 1 and guided.net.calls == 1


def test_every_sampler_gets_guidance_through_the_denoiser():
    y = torch.tensor([1, 2])
    g = S.ClassifierFreeGuidance(2.0, cond={"class_labels": y}, uncond={"class_labels": 0 * y})
    res = S.sample("pf_euler", denoiser(g), shape=(2, 2), n_steps=4, progress=False)
    assert res.nfe == 4 and torch.isfinite(res.x).all()


def test_guidance_with_model_kwargs_or_mismatched_keys_is_refused():
    g = S.ClassifierFreeGuidance(
        2.0, cond={"class_labels": torch.ones(2)}, uncond={"class_labels": torch.zeros(2)}
    )
    with pytest.raises(ValueError, match="either as model_kwargs or inside guidance"):
        denoiser(g, model_kwargs={"class_labels": torch.ones(2)})
    with pytest.raises(ValueError, match="cond and uncond must have the same keys"):
        S.ClassifierFreeGuidance(2.0, cond={"a": torch.ones(1)}, uncond={"b": torch.ones(1)})


def test_class_conditional_sampling_with_the_projects_unet():
    """The project's UNet with ``num_classes`` (label ``num_classes`` = unconditional) under
    classifier-free guidance: one batched network call per evaluation, and the guided output is
    the linear combination of the conditional and unconditional calls."""
    from scoresde.models import UNet

    torch.manual_seed(0)
    net = UNet(in_channels=1, image_size=8, channels=8, channel_mults=(1, 2),
               attention_resolutions=(4,), groups=4, num_classes=10).eval()  # fmt: skip
    y = torch.tensor([3, 7])
    null = torch.full_like(y, 10)
    g = S.ClassifierFreeGuidance(3.0, cond={"class_labels": y}, uncond={"class_labels": null})
    sde = S.VPSDE()
    den = S.Denoiser(net, sde, "eps", guidance=g)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        cond = net(x, torch.full((2,), 0.5), class_labels=y)
        uncond = net(x, torch.full((2,), 0.5), class_labels=null)
        torch.testing.assert_close(
            den.eps(x, 0.5), uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5
        )
        res = S.sample("dpm_solver_pp_2m", den, shape=(2, 1, 8, 8), n_steps=5, progress=False)
    assert res.nfe == 5 and res.x.shape == (2, 1, 8, 8) and torch.isfinite(res.x).all()


# ---------------------------------------------------------------------------------------------
# guidance_rescale (Lin et al. 2024, Sec. 3.4) and the guidance interval (Kynkäänniemi et al. 2024)


def _cfg_inputs(batch=4):
    y, null = torch.arange(1, batch + 1), torch.zeros(batch, dtype=torch.long)
    return {"class_labels": y}, {"class_labels": null}


@pytest.mark.parametrize("phi", [0.0, 0.3, 0.7, 1.0])
def test_guidance_rescale_is_the_std_ratio_mix_of_diffusers(phi):
    """``phi * out * std(cond)/std(out) + (1 - phi) * out`` per sample, on the native output;
    checked against the formula and against diffusers' ``rescale_noise_cfg`` (float64, 1e-12)."""
    cond, uncond = _cfg_inputs()
    x = torch.randn(4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    net = lambda x, t, class_labels: 0.1 * x + class_labels.to(x.dtype)[:, None, None] * x**2  # noqa: E731
    g = S.ClassifierFreeGuidance(4.0, cond, uncond, guidance_rescale=phi)
    t_in = torch.full((4,), 0.5, dtype=torch.float64)
    out_c, out_u = net(x, t_in, **cond), net(x, t_in, **uncond)
    cfg = out_u + 4.0 * (out_c - out_u)
    ratio = out_c.std(dim=(1, 2), keepdim=True) / cfg.std(dim=(1, 2), keepdim=True)
    expected = phi * cfg * ratio + (1 - phi) * cfg
    torch.testing.assert_close(g(net, x, t_in), expected, rtol=1e-12, atol=1e-12)
    guiders = pytest.importorskip("diffusers.guiders.guider_utils")
    ref = guiders.rescale_noise_cfg(cfg, out_c, guidance_rescale=phi)
    torch.testing.assert_close(g(net, x, t_in), ref, rtol=1e-12, atol=1e-12)


def test_guidance_interval_guides_only_inside_the_noise_level_interval():
    """Per sample: ``uncond + w (cond - uncond)`` where ``sigma/alpha`` lies in (lo, hi], the
    conditional output elsewhere; the Denoiser passes each sample's noise level."""
    cond, uncond = _cfg_inputs()
    sde = S.VPSDE()
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    level = torch.exp(-sde.lambda_(t))
    lo, hi = float(level[1]) * 0.99, float(level[2]) * 1.01  # samples 1 and 2 inside
    g = S.ClassifierFreeGuidance(3.0, cond, uncond, interval=(lo, hi))
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    guided = denoiser(g).eps(x, t)
    c = denoiser(model_kwargs=cond).eps(x, t)
    u = denoiser(model_kwargs=uncond).eps(x, t)
    inside = torch.tensor([False, True, True, False])[:, None]
    expected = torch.where(inside, u + 3.0 * (c - u), c)
    torch.testing.assert_close(guided, expected, rtol=1e-12, atol=1e-12)
    # an interval holding every level is plain guidance
    everywhere = S.ClassifierFreeGuidance(3.0, cond, uncond, interval=(0.0, float("inf")))
    torch.testing.assert_close(denoiser(everywhere).eps(x, t), u + 3.0 * (c - u))


def test_bad_guidance_options_name_the_argument():
    cond, uncond = _cfg_inputs()
    with pytest.raises(ValueError, match=r"guidance_rescale must be .*\[0.0, 1.0\]; got 1.5"):
        S.ClassifierFreeGuidance(2.0, cond, uncond, guidance_rescale=1.5)
    with pytest.raises(
        ValueError, match=r"interval must be .*sigma_lo < sigma_hi.*got \(2.0, 1.0\)"
    ):
        S.ClassifierFreeGuidance(2.0, cond, uncond, interval=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"interval must be .*got \(1.0, 1.0\)"):
        S.ClassifierFreeGuidance(2.0, cond, uncond, interval=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"interval must be .*got 'wide'"):
        S.ClassifierFreeGuidance(2.0, cond, uncond, interval="wide")


def test_learned_variance_channels_are_not_guided_and_reach_the_prediction():
    """A ``2C``-channel network: guidance combines the ``C`` mean channels; the variance
    channels come from the conditional call and become ``Prediction.var_interp``."""
    cond, uncond = _cfg_inputs(2)

    def net(x, t, class_labels):
        mean = 0.1 * x + class_labels.to(x.dtype)[:, None, None]
        return torch.cat([mean, torch.tanh(x) * class_labels.to(x.dtype)[:, None, None]], dim=1)

    g = S.ClassifierFreeGuidance(3.0, cond, uncond)
    den = S.Denoiser(net, S.VPSDE(), "eps", guidance=g, learned_variance=True)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t_in = torch.full((2,), 0.5, dtype=torch.float64)
    c, u = net(x, t_in, **cond), net(x, t_in, **uncond)
    pred = den.predict(x, 0.5)
    torch.testing.assert_close(pred.eps, u[:, :3] + 3.0 * (c[:, :3] - u[:, :3]))
    torch.testing.assert_close(pred.var_interp, c[:, 3:])
    plain = S.Denoiser(lambda x, t: x, S.VPSDE(), learned_variance=True)
    with pytest.raises(ValueError, match=r"must have \(batch, 2C, ...\).*learned_variance=True"):
        plain.predict(x, 0.5)
    with pytest.raises(ValueError, match="learned_variance must be a bool"):
        S.Denoiser(lambda x, t: x, S.VPSDE(), learned_variance="learned_range")
