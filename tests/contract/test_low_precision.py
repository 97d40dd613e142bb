"""float16 and bfloat16 states are first-class.

* The network's time conditioning (continuous ``t``, the DDPM train index, ``sigma``,
  ``log sigma``) is the same in every state dtype: a float16 or bfloat16 run hands the network
  exactly the float32 rounding of the float64 run's values (equality, not a tolerance: the times
  are computed in float64 from the grid, independently of the state), and never the state's dtype.
* ``init`` computes every coefficient in float64 and casts once: the coefficient tables built
  for a float16 (bfloat16) state equal the float64 tables rounded to that dtype, bit for bit,
  and times stay float64.
* A network in half precision samples end to end; a state whose dtype or device differs from
  the network's parameters is refused before the first call, with both named.
"""

import dataclasses

import pytest
import torch

import scoresde as S
from scoresde.models import ScoreMLP
from scoresde.samplers import SAMPLERS, Sampler

STEP_BASED = [k for k, c in sorted(SAMPLERS.items()) if c.run is Sampler.run]
LOW = [torch.float32, torch.float16, torch.bfloat16]
# VP-type schedules: 5 Euler steps of a VE reverse SDE grow the state past float16's range
TIME_INPUTS = {
    "t": (S.VPSDE(), S.ContinuousTime()),
    "index": (S.DiscreteVPSDE.linear(), S.TrainIndex()),
    "sigma": (S.SubVPSDE(), S.SigmaInput()),
    "log_sigma": (S.VPSDE(), S.LogSigmaInput()),
}


class Recorder:
    """The exact denoiser of data at the origin (``x0 = 0``), recording the conditioning it is
    given."""

    def __init__(self):
        self.t_in = []

    def __call__(self, x, t_in):
        self.t_in.append(t_in.clone())
        return torch.zeros_like(x)


def conditioning(key, sde, time_input, dtype):
    net = Recorder()
    den = S.Denoiser(net, sde, "x0", time_input=time_input)
    gen = torch.Generator().manual_seed(0)
    S.sample(key, den, shape=(2, 3), n_steps=5, generator=gen, dtype=dtype, progress=False)
    return net.t_in


@pytest.mark.parametrize("time_input", sorted(TIME_INPUTS))
@pytest.mark.parametrize("key", [*STEP_BASED, "torchsde"])
def test_the_network_gets_the_same_conditioning_in_every_dtype(key, time_input):
    sde, ti = TIME_INPUTS[time_input]
    ref = conditioning(key, sde, ti, torch.float64)
    assert ref and all(t.dtype == torch.float64 for t in ref)
    for dtype in LOW:
        got = conditioning(key, sde, ti, dtype)
        assert len(got) == len(ref)
        for t, r in zip(got, ref, strict=True):
            assert t.dtype == torch.float32, f"{dtype} state: conditioning in {t.dtype}"
            torch.testing.assert_close(t, r.to(torch.float32), rtol=0, atol=0)


def _tensors(state):
    """The tensors of a sampler state, in a fixed order (tuples, lists, dicts, dataclasses)."""
    if isinstance(state, torch.Tensor):
        return [state]
    if dataclasses.is_dataclass(state):
        state = [getattr(state, f.name) for f in dataclasses.fields(state)]
    if isinstance(state, dict):
        state = [state[k] for k in sorted(state)]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("key", STEP_BASED)
def test_coefficients_are_computed_in_float64_and_cast_once(key, dtype):
    sde = S.VPSDE()
    den = S.Denoiser(Recorder(), sde, "x0")
    sampler = S.get_sampler(key)
    ts = S.UniformLambda().grid(sde, 8)
    x64 = torch.zeros(2, 3, dtype=torch.float64)
    ref, low = (
        _tensors(sampler.init(den, sde, ts, x64)),
        _tensors(sampler.init(den, sde, ts, x64.to(dtype))),
    )
    assert len(ref) == len(low)
    for r, c in zip(ref, low, strict=True):
        assert c.dtype in (dtype, torch.float64), f"{key}: a table in {c.dtype}"
        torch.testing.assert_close(c, r.to(c.dtype), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_network_samples_end_to_end(dtype):
    sde = S.VPSDE()
    net = ScoreMLP(3, width=16, depth=1).to(dtype)
    den = S.Denoiser(net, sde, "eps")
    for key in ("dpm_solver_pp_2m", "euler_maruyama", "unipc"):
        res = S.sample(key, den, shape=(4, 3), n_steps=5, dtype=dtype, progress=False,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert res.x.dtype == dtype and torch.isfinite(res.x).all()


def test_a_state_in_another_dtype_than_the_network_is_refused_before_the_first_call():
    net = ScoreMLP(3, width=16, depth=1)
    calls = []
    net.register_forward_pre_hook(lambda *a: calls.append(1))
    den = S.Denoiser(net, S.VPSDE(), "eps")
    with pytest.raises(ValueError, match=r"x_T is torch.float16 but the network's parameters "
                                         r"are torch.float32"):  # fmt: skip
        S.sample("pf_euler", den, shape=(2, 3), n_steps=3, dtype=torch.float16, progress=False)
    assert not calls


def test_a_state_on_another_device_than_the_network_is_refused():
    den = S.Denoiser(ScoreMLP(3, width=16, depth=1).to("meta"), S.VPSDE(), "eps")
    with pytest.raises(ValueError, match=r"x_T is on cpu but the network's parameters are on meta"):
        S.sample("pf_euler", den, shape=(2, 3), n_steps=3, progress=False)


def test_x_T_and_a_different_dtype_are_refused():
    den = S.Denoiser(Recorder(), S.VPSDE(), "eps")
    with pytest.raises(ValueError, match=r"x_T is torch.float32 but dtype=torch.float16"):
        S.sample("pf_euler", den, x_T=torch.zeros(2, 3), n_steps=3, dtype=torch.float16)


@pytest.mark.parametrize("key", ["torchdiffeq", "dpm_solver_adaptive"])
def test_adaptive_solvers_raise_a_tolerance_below_the_state_resolution_and_finish(key):
    """float16's machine epsilon is 9.8e-4: a tolerance below it cannot be met (the step size
    underflows), so it is raised to the floor of 16 eps with a warning, and the run finishes."""
    den = S.Denoiser(Recorder(), S.VPSDE(), "x0")
    with pytest.warns(RuntimeWarning, match=rf"{key}: rtol=1e-05.* torch.float16 state"):
        res = S.sample(S.get_sampler(key, rtol=1e-5), den, shape=(2, 3), n_steps=2,
                       dtype=torch.float16, progress=False)  # fmt: skip
    assert res.x.dtype == torch.float16 and torch.isfinite(res.x).all()
