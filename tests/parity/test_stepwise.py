"""Driven one network evaluation at a time (``scoresde.adapters.stepwise``, the engine of the
diffusers scheduler), every fixed-grid sampler gives exactly what ``scoresde.sample`` gives: for
any registry key, step count, grid, schedule and parameterization (hypothesis), the caller's loop
``x = run.feed(net(x, t), x)`` over the planned evaluation times ends on ``sample``'s result from
the same ``x_T`` and noise, and calls the network at the planned times only.

Both sides run the same float64 arithmetic in the same order: bit-for-bit equality.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as S
from scoresde.adapters.stepwise import StepwiseRun, plan_evaluations

# adaptive integrators (no fixed NFE per step) are refused by the scheduler
ADAPTIVE = {k for k, cls in S.SAMPLERS.items() if cls().nfe_per_step is None}
KEYS = sorted(k for k in S.SAMPLERS if k not in ADAPTIVE)
OPTIONS = {"annealed_langevin": {"n_steps_each": 2}}
SDES = [S.VPSDE(), S.VESDE(), S.DiscreteVPSDE.cosine(200)]
GRIDS = [S.UniformTime(), S.UniformLambda(), S.Karras(rho=7.0), S.Quadratic()]


def net(x, t_in):
    return torch.sin(x + 0.1 * t_in.reshape(-1, *[1] * (x.ndim - 1)))


@settings(max_examples=60)
@given(
    key=st.sampled_from(KEYS),
    n=st.integers(1, 5),
    sde=st.sampled_from(SDES),
    grid=st.sampled_from(GRIDS),
    parameterization=st.sampled_from(["eps", "x0", "v"]),
    denoise_final=st.booleans(),
)
def test_stepwise_run_is_sample_bit_for_bit(key, n, sde, grid, parameterization, denoise_final):
    sampler = S.get_sampler(key, **OPTIONS.get(key, {}))
    time_input = S.ContinuousTime()
    den = S.Denoiser(net, sde, parameterization, time_input=time_input)
    x_T = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(1)
    expected = S.sample(sampler, den, x_T=x_T, grid=grid, n_steps=n,
                        denoise_final=denoise_final, progress=False)  # fmt: skip

    ts = grid.grid(sde, n)
    plan = plan_evaluations(sampler, sde, den.parameterization, time_input, ts,
                            denoise_final=denoise_final)  # fmt: skip
    assert len(plan.times) - plan.warm_up == expected.nfe
    torch.manual_seed(1)
    run = StepwiseRun(sampler, sde, den.parameterization, time_input, ts, x_T,
                      denoise_final=denoise_final)  # fmt: skip
    x = x_T
    for k, t in enumerate(plan.times):
        t_in = torch.full((x.shape[0],), t, dtype=torch.float64)
        x = run.skip() if k == 0 and plan.warm_up else run.feed(net(x, t_in), x)
    assert torch.equal(x, expected.x)
