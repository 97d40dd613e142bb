"""Parity with diffusers' flow-matching and zero-terminal-SNR schedulers, same model, same x_T.

Property: on the same model and the same ``x_T``,

- our ``pf_euler`` and ``ddim`` on :class:`~scoresde.FlowMatchShift` reproduce diffusers'
  ``FlowMatchEulerDiscreteScheduler`` loop (static shift 1 and 3; dynamic shifting, exponential and
  linear), and our ``pf_heun`` its ``FlowMatchHeunDiscreteScheduler`` (shift 1 and 3), with the
  model wrapped by :func:`~scoresde.adapters.diffusers.from_diffusers` (``timestep = sigma N``) and
  diffusers' last step to ``sigma = 0`` as ``denoise_final=True``;
- our ``ddim`` reproduces ``DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing",
  prediction_type="v_prediction")``, whose first step starts from pure noise (``alpha_bar = 0``).

The model is the closed-form velocity (or ``v``) of the 2-D Gaussian mixture ``gmm_2d``, float64.
Both sides take the same number of model calls.

Tolerance: diffusers keeps its sigmas and timesteps in float32 (relative rounding 6e-8) and casts
the state to float32 in every flow-matching step; over <= 20 steps of a contraction-free update
(|x| ~ 2) that gives relative differences ~20 * 6e-8 ~ 1e-6, inside the required 1e-5, which we
assert. Our float64 grids match diffusers' sigmas to 3e-8 (checked in tests/invariants/test_grids).
"""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from tests.helpers import gmm_2d

diffusers = pytest.importorskip(
    "diffusers", reason="parity with diffusers needs diffusers installed"
)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

from scoresde.adapters.diffusers import flow_match_grid, from_diffusers  # noqa: E402
from tests.parity.diffusers_loop import schedule_of  # noqa: E402

N = 1000
RTOL = 1e-5


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _flow_net(data):
    """The exact velocity conditioned like a diffusers transformer: ``timestep = sigma N``."""
    exact = data.denoiser(S.RectifiedFlow(t_min=1e-6), "flow").net

    def net(x, timestep):
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1).expand(x.shape[0]) / N
        return exact(x, t)

    return net


def _x_T(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 2, generator=gen, dtype=torch.float64)


EULER = [
    ("shift1", {}, None),
    ("shift3", {"shift": 3.0}, None),
    ("dynamic_exponential", {"use_dynamic_shifting": True}, 0.8),
    ("dynamic_linear", {"use_dynamic_shifting": True, "time_shift_type": "linear"}, 1.5),
]


@pytest.mark.parametrize("key", ["pf_euler", "ddim"])
@pytest.mark.parametrize("config, mu", [c[1:] for c in EULER], ids=[c[0] for c in EULER])
@pytest.mark.parametrize("m", [5, 12])
def test_euler_reproduces_flow_match_euler_scheduler(key, config, mu, m):
    data = gmm_2d()
    net = _flow_net(data)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=N, **config)
    scheduler.set_timesteps(m, mu=mu)
    x = _x_T()
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t), t, x).prev_sample
    sde, den = from_diffusers(net, scheduler)
    res = S.sample(key, den, x_T=_x_T(), grid=flow_match_grid(scheduler, mu=mu), n_steps=m - 1,
                   denoise_final=True, progress=False)  # fmt: skip
    assert res.nfe == len(scheduler.timesteps)
    assert _rel(res.x, x) <= RTOL, f"{key} vs FlowMatchEuler {config}: rel {_rel(res.x, x):.2e}"


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("m", [5, 12])
def test_heun_reproduces_flow_match_heun_scheduler(shift, m):
    data = gmm_2d()
    net = _flow_net(data)
    scheduler = diffusers.FlowMatchHeunDiscreteScheduler(num_train_timesteps=N, shift=shift)
    scheduler.set_timesteps(m)
    x = _x_T()
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t), t, x).prev_sample
    sde, den = from_diffusers(net, scheduler)
    res = S.sample("pf_heun", den, x_T=_x_T(), grid=flow_match_grid(scheduler), n_steps=m - 1,
                   denoise_final=True, progress=False)  # fmt: skip
    assert res.nfe == len(scheduler.timesteps)  # 2 (m - 1) + 1
    assert _rel(res.x, x) <= RTOL, f"pf_heun vs FlowMatchHeun shift={shift}: {_rel(res.x, x):.2e}"


@pytest.mark.parametrize("m", [4, 10, 25])
def test_ddim_reproduces_zero_snr_v_prediction_ddim_scheduler(m):
    """Lin et al. 2024's recipe: zero-SNR betas, trailing spacing, v-prediction; the first model
    call is at alpha_bar = 0 (pure noise), where only the model's x0 (= -v) carries signal."""
    scheduler = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", rescale_betas_zero_snr=True, timestep_spacing="trailing",
        prediction_type="v_prediction", clip_sample=False,
    )  # fmt: skip
    sde = schedule_of(scheduler)
    assert sde.zero_terminal_snr
    data = gmm_2d()
    den = data.denoiser(sde, "v")
    scheduler.set_timesteps(m)
    assert int(scheduler.timesteps[0]) == N - 1
    x = _x_T()
    for t in scheduler.timesteps:
        x = scheduler.step(den.v(x, sde.index_to_t(float(t))), t, x).prev_sample
    grid = S.DiscreteSpacing("trailing", final="zero")
    res = S.sample("ddim", den, x_T=_x_T(), grid=grid, n_steps=m - 1, denoise_final=True,
                   progress=False)  # fmt: skip
    assert res.nfe == m
    assert res.stats["zero_snr_start"] == "ddim"
    assert _rel(res.x, x) <= RTOL, f"ddim vs zero-SNR DDIMScheduler: rel {_rel(res.x, x):.2e}"


def test_from_diffusers_reads_zero_snr_v_prediction_configs():
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}  # fmt: skip
    sde, den = from_diffusers(lambda x, t: x, config)
    assert sde.zero_terminal_snr and den.parameterization is S.Parameterization.V
    ref = diffusers.DDIMScheduler(**config).alphas_cumprod.double()
    torch.testing.assert_close(sde.alphas_cumprod, ref, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="needs prediction_type 'v_prediction' or 'sample'"):
        from_diffusers(lambda x, t: x, {**config, "prediction_type": "epsilon"})


def test_from_diffusers_reads_flow_match_configs():
    for cls in (
        diffusers.FlowMatchEulerDiscreteScheduler,
        diffusers.FlowMatchHeunDiscreteScheduler,
    ):
        for source in (cls(shift=3.0), cls(shift=3.0).config):
            sde, den = from_diffusers(lambda x, t: x, source)
            assert isinstance(sde, S.RectifiedFlow)
            assert den.parameterization is S.Parameterization.FLOW
            t = torch.tensor([0.25, 1.0], dtype=torch.float64)
            torch.testing.assert_close(den.time_input(sde, t), t * N)
    dpm_flow = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    sde, den = from_diffusers(lambda x, t: x, dpm_flow)
    assert isinstance(sde, S.RectifiedFlow) and den.parameterization is S.Parameterization.FLOW
    sched = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match="mu must be given"):
        flow_match_grid(sched)
    with pytest.raises(ValueError, match=r"sets \['use_karras_sigmas'\] = True"):
        flow_match_grid(diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True))
    with pytest.raises(ValueError, match="time_shift_type must be one of"):
        flow_match_grid({"shift": 1.0, "time_shift_type": "cubic", "use_dynamic_shifting": True})
