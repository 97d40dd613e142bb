"""Inputs that used to give a silently wrong answer now raise one clear error.

* ``sample(..., sde=X)`` with ``X`` not the denoiser's own process: the network would be sampled
  under another schedule (a VP ring of radius 2.1 came out at 1.83 under a VE process).
* A NaN from the final ``denoise_final`` evaluation: it was returned as the sample.
* A network whose output dtype is not its input's: it turned the whole sample into that dtype;
  the output is now cast to the state's dtype (an integer output is refused).
* A network that returns a tuple, a dict or ``None``: it failed deep inside the conversion.
"""

import pytest
import torch

import scoresde as S

VP = S.VPSDE()


def ring_denoiser(sde=VP):
    return S.ring_mixture().denoiser(sde)


def test_another_process_than_the_denoisers_is_refused():
    with pytest.raises(ValueError, match=r"sde=VESDE\(.*is not the process the denoiser was built"):
        S.sample("ddim", ring_denoiser(), S.VESDE(), shape=(4, 2), n_steps=3, progress=False)


def test_the_same_process_with_another_time_range_is_accepted():
    sde = S.VPSDE(t_min=1e-4)  # same alpha, sigma; only the cut-off differs
    res = S.sample("ddim", ring_denoiser(), sde, shape=(4, 2), n_steps=3, progress=False)
    assert res.ts[-1].item() == pytest.approx(1e-4)


def test_an_equal_but_distinct_process_object_is_accepted():
    res = S.sample("ddim", ring_denoiser(), S.VPSDE(), shape=(4, 2), n_steps=3, progress=False)
    assert torch.isfinite(res.x).all()


def test_a_nan_from_the_final_denoising_step_raises():
    inner = ring_denoiser()

    def net(x, t):  # finite everywhere but at the grid's last time, t_min
        out = inner.raw(x, t)
        return torch.where(t[:, None] < 2e-3, torch.full_like(out, float("nan")), out)

    d = S.Denoiser(net, VP, inner.parameterization)
    with pytest.raises(FloatingPointError, match=r"final denoising step \(denoise_final=True"):
        S.sample("ddim", d, shape=(4, 2), n_steps=3, denoise_final=True, progress=False)


def test_a_network_returning_another_dtype_keeps_the_states_dtype():
    inner = ring_denoiser()
    d = S.Denoiser(lambda x, t: inner.raw(x, t).double(), VP, inner.parameterization)
    g = torch.Generator().manual_seed(0)
    res = S.sample("ddim", d, shape=(4, 2), n_steps=3, progress=False, generator=g)
    ref = S.sample("ddim", inner, shape=(4, 2), n_steps=3, progress=False,
                   generator=g.manual_seed(0))  # fmt: skip
    assert res.x.dtype == torch.float32
    torch.testing.assert_close(res.x, ref.x)


def test_a_network_returning_integers_is_refused():
    d = S.Denoiser(lambda x, t: x.long(), VP)
    with pytest.raises(ValueError, match=r"returned torch.int64 .* for a torch.float32 input"):
        S.sample("ddim", d, shape=(4, 2), n_steps=3, progress=False)


@pytest.mark.parametrize(
    "output",
    [lambda x: (x,), lambda x: {"sample": x}, lambda x: None],
    ids=["tuple", "dict", "none"],
)
def test_a_network_returning_no_tensor_is_named(output):
    d = S.Denoiser(lambda x, t: output(x), VP)
    with pytest.raises(TypeError, match=r"network <lambda> returned (tuple|dict|NoneType);"):
        S.sample("ddim", d, shape=(4, 2), n_steps=3, progress=False)
