"""A model that returns NaN at a known step is reported with that step and its time."""

import pytest
import torch

import scoresde as S


class NaNAfter:
    """Returns zeros, then NaN from call ``k`` on (0-based)."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self, x, t):
        out = torch.zeros_like(x)
        if self.calls >= self.k:
            out = out + float("nan")
        self.calls += 1
        return out


@pytest.mark.parametrize("key", ["pf_euler", "euler_maruyama"])
def test_non_finite_state_names_the_step_and_time(key):
    sde = S.VPSDE()
    d = S.Denoiser(NaNAfter(3), sde, "eps")
    ts = S.UniformTime().grid(sde, 10)
    with pytest.raises(FloatingPointError) as err:
        S.sample(key, d, shape=(4, 2), n_steps=10, progress=False, generator=torch.Generator())
    msg = str(err.value)
    assert "step 3" in msg and f"t={ts[3].item():.6g}" in msg and repr(key) in msg


@pytest.mark.parametrize("k", [0, 7, 8, 11, 19])
def test_first_bad_step_is_named_wherever_it_falls_in_the_check_window(k):
    """The driver checks every ``FINITE_CHECK_EVERY`` (8) steps and after the last; the kept
    window still names the first bad step, and the run stops at the end of that window."""
    from scoresde.samplers.base import FINITE_CHECK_EVERY

    sde = S.VPSDE()
    net = NaNAfter(k)
    d = S.Denoiser(net, sde, "eps")
    ts = S.UniformTime().grid(sde, 20)
    with pytest.raises(FloatingPointError, match=rf"step {k} \(t={ts[k].item():.6g} "):
        S.sample("ddim", d, shape=(4, 2), n_steps=20, progress=False)
    window_end = min(20, (k // FINITE_CHECK_EVERY + 1) * FINITE_CHECK_EVERY)
    assert net.calls == window_end  # no network call after the failed check


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_one_reduction_finite_check_is_exact(dtype):
    """``all_finite`` sums once: any NaN or inf entry makes the sum non-finite, and a sum that
    overflows on finite entries (the largest finite values, 1000 of them) is still finite."""
    from scoresde.samplers.base import all_finite

    big = torch.finfo(dtype).max
    x = torch.full((10, 100), big, dtype=dtype)
    assert all_finite(x) and all_finite(-x) and all_finite(torch.zeros(3, dtype=dtype))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for k in (0, 517, 999):
            y = torch.zeros(10, 100, dtype=dtype)
            y.view(-1)[k] = bad
            assert not all_finite(y) and not all_finite(torch.where(y == 0, x, y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the asynchronous read is for GPUs")
@pytest.mark.parametrize("k", [0, 9, 19])
def test_the_asynchronous_check_on_a_gpu_still_names_the_first_bad_step(k):
    sde = S.VPSDE()
    d = S.Denoiser(NaNAfter(k), sde, "eps")
    ts = S.UniformTime().grid(sde, 20)
    with pytest.raises(FloatingPointError, match=rf"step {k} \(t={ts[k].item():.6g} "):
        S.sample("ddim", d, shape=(4, 2), n_steps=20, progress=False, device="cuda")
