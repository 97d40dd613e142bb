"""What the per-step fast path must not change.

``Denoiser.times`` prepares every grid time once per run (the network's conditioning and the
schedule), and a :class:`~scoresde.Prediction` converts the network output only to the forms a
sampler reads. Both are bookkeeping, so they must give the very numbers of a plain call at the
same time, for every parameterization and every option of the Denoiser (x0 corrections,
guidance with rescale and interval, learned variance, flow), and the schedule must be evaluated
per run, not per step.
"""

import pytest
import torch

import scoresde as S
from scoresde.denoiser import TimePoint


def linear_net(x, t_in, **kwargs):
    """A network whose output depends on ``x``, the conditioning and the class label."""
    scale = t_in.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    out = 0.3 * x - 0.2 * scale * x + 0.1
    label = kwargs.get("class_labels")
    return out if label is None else out + 0.05 * label.reshape(scale.shape).to(x.dtype)


def variance_net(x, t_in):
    return torch.cat([linear_net(x, t_in), torch.tanh(x)], dim=1)


CFG = S.ClassifierFreeGuidance(
    2.0, {"class_labels": torch.ones(3)}, {"class_labels": torch.zeros(3)},
    guidance_rescale=0.7, interval=(0.5, 20.0),
)  # fmt: skip
CASES = {
    "eps": (S.DiscreteVPSDE.linear(), dict(parameterization="eps", time_input="index")),
    "x0": (S.VPSDE(), dict(parameterization="x0")),
    "v": (S.DiscreteVPSDE.linear(), dict(parameterization="v", time_input="index")),
    "score": (S.VESDE(), dict(parameterization="score", time_input="sigma")),
    "flow": (S.RectifiedFlow(), dict(parameterization="flow")),
    "flow on VP": (S.VPSDE(), dict(parameterization="flow", time_input="log_sigma")),
    "clip": (S.VPSDE(), dict(parameterization="eps", x0_correction=S.ClipX0(0.5))),
    "threshold": (S.VPSDE(), dict(parameterization="v", x0_correction=S.DynamicThreshold(0.9))),
    "guidance": (S.VPSDE(), dict(parameterization="eps", guidance=CFG)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_prepared_times_give_the_numbers_of_a_plain_call(case, dtype):
    """Bitwise: the prepared schedule is the same float64 evaluation cast the same way."""
    sde, options = CASES[case]
    den = S.Denoiser(linear_net, sde, **options)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)
    ts = S.UniformTime().grid(sde, 5)[1:]  # alpha > 0 (rectified flow starts at alpha = 0)
    for k, time in enumerate(den.times(ts, x)):
        assert isinstance(time, TimePoint)
        fast, plain = den.predict(x, time), den.predict(x, ts[k])
        for name in ("x0", "eps"):
            assert torch.equal(getattr(fast, name), getattr(plain, name)), (name, k)
        for name in ("score", "v", "flow"):
            assert torch.equal(getattr(den, name)(x, time), getattr(den, name)(x, ts[k])), name


def test_prepared_times_keep_the_variance_channels_of_a_learned_variance_network():
    sde = S.DiscreteVPSDE.linear()
    den = S.Denoiser(variance_net, sde, "eps", time_input="index", learned_variance=True)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    ts = S.UniformTime().grid(sde, 4)
    for k, time in enumerate(den.times(ts, x)):
        fast, plain = den.predict(x, time), den.predict(x, ts[k])
        for a, b in zip(fast, plain, strict=True):
            assert torch.equal(a, b)
        assert fast.var_interp is not None and fast.var_interp.shape == x.shape


def test_a_prediction_converts_only_what_is_read():
    """An eps-network read as eps (and an x0-network read as x0) costs no arithmetic: the
    network's output is returned as is; with a correction eps comes from the corrected x0."""
    sde = S.VPSDE()
    x = torch.randn(4, 3)
    out = torch.randn(4, 3)
    for p, own in (("eps", "eps"), ("x0", "x0")):
        pred = S.Denoiser(lambda x, t: out, sde, p).predict(x, 0.5)
        assert getattr(pred, own) is out
    corrected = S.Denoiser(lambda x, t: out, sde, "eps", x0_correction=S.ClipX0(0.1))
    pred = corrected.predict(x, 0.5)
    assert pred.eps is not out and pred.x0.abs().max() <= 0.1
    alpha, sigma = sde.alpha(torch.tensor(0.5)).float(), sde.sigma(torch.tensor(0.5)).float()
    torch.testing.assert_close(pred.eps, (x - alpha * pred.x0) / sigma)


def test_a_prepared_time_refuses_another_batch():
    sde = S.VPSDE()
    den = S.Denoiser(linear_net, sde, "eps")
    time = den.times(S.UniformTime().grid(sde, 2), torch.zeros(3, 2))[0]
    with pytest.raises(ValueError, match="batch of 3"):
        den.predict(torch.zeros(5, 2), time)


class CountingVP(S.VPSDE):
    """Counts its schedule evaluations."""

    calls = 0

    def log_alpha(self, t):
        CountingVP.calls += 1
        return super().log_alpha(t)


@pytest.mark.parametrize(
    "key", ["ddim", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "dpm_solver_2s", "pf_euler",
            "pf_heun", "pndm", "unipc", "deis_3"],
)  # fmt: skip
def test_the_schedule_is_evaluated_per_run_not_per_step(key):
    """The loop evaluates no schedule: the count does not grow with the number of steps."""
    sde = CountingVP()
    den = S.Denoiser(linear_net, sde, "eps")
    counts = []
    for n in (12, 36):  # both above the count rule of lower-order final steps (n < 10)
        CountingVP.calls = 0
        S.sample(key, den, shape=(2, 3), n_steps=n, progress=False,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
        counts.append(CountingVP.calls)
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("case", sorted(CASES))
def test_combine_is_the_combination_of_x0_and_eps(case):
    """``c_x x + c_x0 x0 + c_eps eps``, formed from the state and the raw output at prepared
    times: equal to the combination of the converted forms up to float64 rounding of the
    weights (rtol 1e-12 on O(1) values), and through the corrected forms with a correction."""
    sde, options = CASES[case]
    den = S.Denoiser(linear_net, sde, **options)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ts = S.UniformTime().grid(sde, 4)[1:]
    for time in den.times(ts, x):
        pred = den.predict(x, time)
        got = pred.combine(0.7, -1.3, c_x=0.4)
        torch.testing.assert_close(got, 0.4 * x + 0.7 * pred.x0 - 1.3 * pred.eps,
                                   rtol=1e-12, atol=1e-12)  # fmt: skip
