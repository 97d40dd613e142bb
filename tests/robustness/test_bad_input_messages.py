"""The bad inputs the sweep (``benchmarks/bad_inputs.py``) found without a clear one-line error:
each now raises ``ValueError`` / ``TypeError`` naming the argument (or file) and the value."""

import math

import pytest
import torch

import scoresde as S
from scoresde import checkpoint as ck
from scoresde.adapters import from_k_diffusion
from scoresde.samplers import SAMPLERS

VP = S.VPSDE()
RING = S.ring_mixture().denoiser(VP)
NO_OPTIONS = sorted(k for k, cls in SAMPLERS.items() if cls.__init__ is object.__init__)


def run(**kw):
    return S.sample(**{"sampler": "ddim", "denoiser": RING, "shape": (4, 2), "n_steps": 3,
                       "progress": False, **kw})  # fmt: skip


@pytest.mark.parametrize("key", NO_OPTIONS)
def test_a_sampler_without_options_names_the_unknown_option(key):
    with pytest.raises(
        ValueError, match=rf"unknown option 'bogus' for sampler '{key}'; its options are \[\]"
    ):
        S.get_sampler(key, bogus=1)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"sampler": 5}, r"sampler must be a Sampler or a registry name; got 5 \(int\)"),
        ({"grid": "karras"}, r"grid must be a TimeGrid .*; got 'karras' \(str\)"),
        ({"noise": 5}, r"noise must be a NoiseSource; got 5 \(int\)"),
        ({"progress": "yes"}, r"progress must be a bool .*; got 'yes'"),
    ],
)
def test_sample_arguments_of_the_wrong_type_show_the_value(kw, message):
    with pytest.raises((TypeError, ValueError), match=message):
        run(**kw)


def test_denoiser_arguments_of_the_wrong_type_show_the_value():
    with pytest.raises(TypeError, match=r"net must be callable as net\(x, t\); got 5 \(int\)"):
        S.Denoiser(5, VP, "eps")
    with pytest.raises(TypeError, match=r"sde must be a scoresde.SDE; got 'vp' \(str\)"):
        S.Denoiser(lambda x, t: x, "vp", "eps")


@pytest.mark.parametrize(
    "grid",
    [
        S.UniformTime(),
        S.Karras(),
        S.Explicit([1.0, 0.5]),
        S.DiscreteSpacing("trailing"),
        S.FlowMatchShift(3.0),
    ],  # fmt: skip
    ids=lambda g: type(g).__name__,
)
def test_every_grid_names_an_sde_of_the_wrong_type(grid):
    with pytest.raises(TypeError, match=r"sde must be a scoresde.SDE; got 5 \(int\)"):
        grid.grid(5, 1)


def test_invert_refuses_non_finite_data_naming_x0():
    x0 = torch.zeros(4, 2)
    x0[1, 0] = math.nan
    with pytest.raises(ValueError, match=r"x0 holds 1 NaN or infinite values"):
        S.invert("ddim", RING, x0, n_steps=3, progress=False)


def test_an_unknown_predictor_is_named_as_the_predictor_option():
    with pytest.raises(ValueError, match=r"^predictor: unknown sampler 'bogus'"):
        S.get_sampler("pc", predictor="bogus")


@pytest.mark.parametrize(
    "sigmas, message",
    [
        (
            [80.0, math.nan, 0.1],
            r"sigmas must be finite noise levels >= 0; got 1 other values \(\[nan\]\)",
        ),
        (
            [80.0, -1.0, 0.1],
            r"sigmas must be finite noise levels >= 0; got 1 other values \(\[-1.0\]\)",
        ),
        ([math.inf, 1.0], r"sigmas must be finite"),
        ("abc", r"sigmas must be a sequence of noise levels .*; got 'abc'"),
    ],
)
def test_from_k_diffusion_refuses_sigmas_that_are_not_noise_levels(sigmas, message):
    with pytest.raises(ValueError, match=message):
        from_k_diffusion(lambda x, sigma: x, sigmas=sigmas)


def test_checkpoint_weights_that_do_not_fit_the_model_name_the_file(tmp_path):
    from scoresde.models import ScoreMLP

    net = ScoreMLP(2)
    ckpt = {
        "format": ck.FORMAT, "model_config": net.config, "sde": ck.sde_to_dict(VP),
        "parameterization": "eps", "time_input": ck.time_input_to_dict(S.ContinuousTime()),
        "ema": {"unrelated": torch.zeros(1)},
    }  # fmt: skip
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"'.*bad.pt' holds 'ema' weights that do not fit its "
                       r"model_config \(Error\(s\) in loading state_dict"):  # fmt: skip
        ck.load_denoiser(path)


def test_the_exact_denoiser_names_a_state_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"exact denoiser is for data of shape \(2,\); got x of "
                       r"shape \(4, 3\)"):  # fmt: skip
        run(shape=(4, 3))
