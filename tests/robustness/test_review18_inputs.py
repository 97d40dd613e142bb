"""Bad inputs found by a new-user sweep: each gives one clear error naming the argument and value
(before: a bare torch/Python message, a multi-line tensor repr, or a silent NaN)."""

import math

import pytest
import torch

import scoresde as S


def test_explicit_grid_of_strings_names_ts():
    with pytest.raises(TypeError, match=r"ts must be .*\['a', 'b'\]"):
        S.Explicit(["a", "b"])


@pytest.mark.parametrize("name", ["cond", "uncond"])
def test_guidance_kwargs_not_a_dict_names_the_argument(name):
    kw = {"cond": {}, "uncond": {}, name: 5}
    with pytest.raises(TypeError, match=rf"{name} must be a dict.*got 5 \(int\)"):
        S.ClassifierFreeGuidance(2.0, **kw)


def test_invert_integer_x0_message_is_one_line():
    den = S.ring_mixture().denoiser(S.VPSDE())
    with pytest.raises(TypeError, match=r"x0 must be .*torch.int64 tensor of shape \(4, 2\)") as e:
        S.invert("ddim", den, torch.zeros(4, 2, dtype=torch.long), n_steps=5, progress=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("t", [math.nan, 5.0, -0.1, "a"])
def test_predict_at_a_number_outside_0_T_is_refused_not_nan(t):
    """A NaN time used to return an all-NaN prediction, a time past T an extrapolated one."""
    den = S.ring_mixture().denoiser(S.VPSDE())
    with pytest.raises(ValueError, match=r"t must be a finite real number in \[0.0, 1.0\]"):
        den.predict(torch.zeros(4, 2), t)


def test_predict_at_numbers_inside_0_T_still_works():
    den = S.ring_mixture().denoiser(S.VPSDE())
    for t in (0.0, 0.5, 1.0):
        assert torch.isfinite(den.predict(torch.zeros(4, 2), t).x0).all()
