"""Callbacks that steer and stop a run, for every sampler in the registry.

* A callback that returns a tensor replaces the state the run continues from: the trajectory
  records the replacement, the result changes, and returning an equal copy of the state changes
  nothing (bit for bit), so the sampler's own state (multistep histories, Brownian paths) stays
  consistent across a replacement. UniPC is the exception to the last property by design: its
  corrector would rebuild the state from the previous one, so after a replacement it is skipped
  once and the run continues from the replacement exactly.
* Memoryless samplers restarted from the replaced state on the rest of the grid give the same
  result as the replaced run (same arithmetic, so to rounding).
* ``Interrupt`` raised or returned after step ``k`` ends the run: the result is the state the
  uninterrupted run had at ``ts[k + 1]`` (bit for bit: the same operations ran), with
  ``stats["interrupted_at"] == k``; step-based samplers make fewer network calls than a full run.
* Backends that integrate the whole grid in one solve (torchdiffeq, scipy) run the callback
  after the solve: they honour ``Interrupt`` and reject a replacement with a clear error.
"""

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS, Sampler
from tests.helpers import GaussianMixture

KEYS = sorted(SAMPLERS)
ONE_SOLVE = {"torchdiffeq", "torchdiffeq_fixed", "scipy"}
STEERABLE = [k for k in KEYS if k not in ONE_SOLVE]
N, K = 6, 2  # grid intervals; the step after which the callback acts


def denoiser():
    means = torch.tensor([[1.0, 0.5, -0.5], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    return GaussianMixture(means, stds=0.5).denoiser(S.VPSDE())


def run(key, callback=None, **kw):
    gen = torch.Generator().manual_seed(3)
    return S.sample(key, denoiser(), shape=(2, 3), n_steps=N, generator=gen, dtype=torch.float64,
                    callback=callback, save_trajectory=True, progress=False, **kw)  # fmt: skip


def at_step(k, action):
    def callback(info):
        return action(info) if info.i == k else None

    return callback


@pytest.mark.parametrize("key", STEERABLE)
def test_a_returned_tensor_replaces_the_state(key):
    base = run(key)
    delta = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    seen = {}

    def shift(info):
        seen["x"] = info.x + delta
        return seen["x"]

    steered = run(key, at_step(K, shift))
    torch.testing.assert_close(steered.trajectory[K + 1], seen["x"], rtol=0, atol=0)
    assert not torch.allclose(steered.x, base.x, rtol=1e-6, atol=1e-6)
    if key != "unipc":
        same = run(key, at_step(K, lambda info: info.x.clone()))
        torch.testing.assert_close(same.x, base.x, rtol=0, atol=0)
        torch.testing.assert_close(same.trajectory, base.trajectory, rtol=0, atol=0)


@pytest.mark.parametrize("key", ["pf_euler", "pf_rk4", "dpm_solver_2s", "ddim", "edm_heun"])
def test_a_memoryless_sampler_continues_from_the_replacement(key):
    """Replacing the state at ``ts[K + 1]`` then stepping equals starting there: 1e-12 covers the
    rounding of the same float64 arithmetic (the coefficients are identical on the sub-grid)."""
    delta = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    steered = run(key, at_step(K, lambda info: info.x + delta))
    x_rep = steered.trajectory[K + 1]
    rest = S.Explicit(steered.ts[K + 1 :])
    restarted = S.sample(key, denoiser(), x_T=x_rep, grid=rest, progress=False)
    torch.testing.assert_close(restarted.x, steered.x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["raise", "return-class", "return-instance"])
@pytest.mark.parametrize("key", KEYS)
def test_interrupt_returns_the_state_reached(key, how):
    base = run(key)

    def stop(info):
        if how == "raise":
            raise S.Interrupt
        return S.Interrupt if how == "return-class" else S.Interrupt()

    res = run(key, at_step(K, stop))
    assert res.stats["interrupted_at"] == K
    torch.testing.assert_close(res.x, base.trajectory[K + 1], rtol=0, atol=0)
    assert res.trajectory.shape[0] == K + 2
    if type(S.get_sampler(key)).run is Sampler.run:
        assert res.nfe < base.nfe


def test_interrupt_skips_denoise_final():
    res = run("dpm_solver_pp_2m", at_step(K, lambda info: S.Interrupt), denoise_final=True)
    torch.testing.assert_close(res.x, res.trajectory[-1], rtol=0, atol=0)


@pytest.mark.parametrize("key", sorted(ONE_SOLVE))
def test_one_solve_backends_reject_a_replacement(key):
    with pytest.raises(ValueError, match=rf"'{key}' integrates the whole grid in one solve"):
        run(key, at_step(K, lambda info: info.x + 1.0))


@pytest.mark.parametrize(
    "callback, error, match",
    [
        (5, TypeError, r"callback must be callable as callback\(StepInfo\) or None; got 5"),
        (lambda info: "stop", TypeError,
         r"callback must return None, a tensor that replaces the state, or scoresde.Interrupt; "
         r"got str after step 0 of 'pf_euler'"),
        (lambda info: info.x[:1], ValueError,
         r"must match the state: got shape \(1, 3\), torch.float64 on cpu; expected shape \(2, 3\)"),
        (lambda info: info.x.float(), ValueError, r"got shape \(2, 3\), torch.float32"),
    ],
    ids=["not-callable", "returns-str", "wrong-shape", "wrong-dtype"],
)  # fmt: skip
def test_bad_callbacks_are_rejected_with_a_clear_error(callback, error, match):
    with pytest.raises(error, match=match):
        run("pf_euler", callback)
