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
