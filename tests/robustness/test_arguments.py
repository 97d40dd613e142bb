"""Argument types at the ``sample()`` boundary: numpy integers are integers; a shape that is not
a tuple, a dtype that is not a floating-point ``torch.dtype`` and a request larger than the
machine's memory each get one ``ValueError`` naming the argument, the value and what was
expected (not a ``TypeError`` from deep inside torch or an allocator failure)."""

import numpy as np
import pytest
import torch

import scoresde as S
from scoresde.likelihood import log_prob

DEN = S.ring_mixture().denoiser(S.VPSDE())


def run(**kw):
    kw = {"shape": (4, 2), "n_steps": 3, "progress": False, **kw}
    return S.sample("ddim", DEN, **kw)


def test_numpy_integers_are_accepted_for_n_steps_and_shape():
    g = torch.Generator().manual_seed(0)
    ref = run(generator=g).x
    got = run(shape=(np.int64(4), np.int32(2)), n_steps=np.int64(3), generator=g.manual_seed(0))
    assert got.x.shape == (4, 2) and got.stats["n_steps"] == 3
    torch.testing.assert_close(got.x, ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"shape": 4}, r"shape must be a tuple of positive ints \(batch, \*dims\); got 4"),
        ({"shape": ()}, r"shape must be a tuple of positive ints"),
        ({"shape": (4, 0)}, r"shape must be a tuple of positive ints .*; got \(4, 0\)"),
        ({"shape": (4, 2.0)}, r"shape must be a tuple of positive ints .*; got \(4, 2.0\)"),
        ({"dtype": "float32"}, r"dtype must be a floating-point torch.dtype .*; got 'float32'"),
        ({"dtype": torch.int64}, r"dtype must be a floating-point torch.dtype .*; got torch.int64"),
        ({"n_steps": 5.0}, r"n_steps must be an int >= 1; got 5.0"),
        ({"n_steps": 10**9}, r"n_steps=1000000000 needs about \d+ GiB for the grid's coefficient"),
    ],
    ids=["int-shape", "empty-shape", "zero-dim", "float-dim", "str-dtype", "int-dtype",
         "float-n_steps", "huge-n_steps"],
)  # fmt: skip
def test_bad_arguments_get_one_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        run(**kw)


def test_a_trajectory_larger_than_memory_is_refused_before_sampling():
    with pytest.raises(ValueError, match=r"n_steps=100000 needs about .* GiB for save_trajectory"):
        run(shape=(512, 3, 64, 64), n_steps=10**5, save_trajectory=True)


def test_an_attention_resolution_that_matches_no_unet_level_is_refused():
    from scoresde.models import UNet

    with pytest.raises(
        ValueError, match=r"include \[8\], which match no UNet level.*\[28, 14, 7\]"
    ):
        UNet(image_size=28, channel_mults=(1, 2, 2), attention_resolutions=(8,))


def test_log_prob_refuses_a_non_finite_input():
    with pytest.raises(ValueError, match="x must be finite"):
        log_prob(DEN, torch.tensor([[float("nan"), 0.0]]))


def test_log_prob_names_where_the_model_output_became_non_finite():
    inner = DEN

    def net(x, t):  # NaN once t passes 0.5 on the way from t_min to T
        out = inner.raw(x, t)
        return torch.where(t[:, None] > 0.5, torch.full_like(out, float("nan")), out)

    d = S.Denoiser(net, inner.sde, inner.parameterization)
    with pytest.raises(FloatingPointError, match=r"non-finite model output in log_prob at t=0\.5"):
        log_prob(d, torch.zeros(2, 2, dtype=torch.float64))


def test_a_misspelt_sampler_option_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown option 'etaa' for sampler 'ddim'; its options are \['eta'\]"
    ):
        S.get_sampler("ddim", etaa=1.0)


@pytest.mark.parametrize("key", sorted(S.SAMPLERS))
def test_every_sampler_accepts_its_own_options_back(key):
    sampler = S.get_sampler(key)
    assert repr(S.get_sampler(sampler.to_config())) == repr(sampler)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: S.DiscreteVPSDE("abc"), r"betas must be a 1-D sequence of floats in \(0, 1\); got 'abc'"),
        (lambda: S.DiscreteVPSDE(torch.full((10, 2), 0.01)), r"betas must be 1-D .*got shape \(10, 2\)"),
        (lambda: S.VPSDE(beta_max=1e5), r"beta_max=100000.0 .* makes alpha\(T\) = exp\(-2.5e\+04\)"),
        (lambda: S.SubVPSDE(beta_max=1e5), r"beta_max=100000.0 .* whose square underflows"),
    ],
    ids=["str-betas", "2d-betas", "vp-underflow", "subvp-underflow"],
)  # fmt: skip
def test_schedules_that_cannot_be_computed_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
