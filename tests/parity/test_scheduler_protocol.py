"""The parts of the scheduler protocol a pipeline loop does not show: ``add_noise`` is diffusers'
forward process, ``set_begin_index`` (img2img) samples the rest of the grid as ``scoresde.sample``
does from the noised image, latents edited between steps are the state the sampler continues
from, and ``timesteps`` lists every evaluation (with a leading discarded one where the sampler's
first evaluation is not at ``x_T``).

The model is a smooth closed-form function of ``(x, timestep)`` (the loop does not care what it
is); the two sides run the same float64 arithmetic, so they agree to 1e-12 relative.
``add_noise`` is compared with diffusers' ``DDPMScheduler.add_noise``, whose ``alphas_cumprod``
table is float32: relative rounding 6e-8, hence 1e-6.
"""

import pytest
import torch

import scoresde as S
from scoresde.adapters import from_diffusers

diffusers = pytest.importorskip("diffusers", reason="the scheduler needs diffusers")
from scoresde.adapters import ScoresdeScheduler  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("float64"),
]


def net(x, timestep, **kwargs):
    return torch.tanh(0.7 * x + 1e-3 * torch.as_tensor(timestep, dtype=x.dtype).reshape(-1, 1, 1))


def _config(**kw):
    return diffusers.DDPMScheduler(clip_sample=False, **kw).config


def _loop(scheduler, x, timesteps, edit=None):
    for k, t in enumerate(timesteps):
        x = scheduler.step(net(x, t), t, x).prev_sample
        if edit is not None:
            x = edit(k, x)
    return x


def _x(seed, shape=(3, 2, 2)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_add_noise_is_diffusers_forward_process():
    config = _config(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    ours, theirs = (
        ScoresdeScheduler.from_config(config),
        diffusers.DDPMScheduler.from_config(config),
    )
    x0, noise, t = _x(0), _x(1), torch.tensor([0, 417, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("key", ["dpm_solver_pp_2m", "pf_heun", "unipc"])
def test_img2img_from_begin_index_is_sample_on_the_rest_of_the_grid(key):
    scheduler = ScoresdeScheduler.from_config(_config(), sampler=key)
    scheduler.set_timesteps(6)
    k = 3 * scheduler.order  # the first evaluation of step 3, as img2img pipelines compute it
    scheduler.set_begin_index(k)
    x0, noise = _x(0), _x(1)
    x_t = scheduler.add_noise(x0, noise, scheduler.timesteps[k : k + 1])
    x = _loop(scheduler, x_t, scheduler.timesteps[k:])

    sde, den = from_diffusers(net, _config())
    ts = S.UniformTime().grid(sde, 6)[3:]
    torch.testing.assert_close(x_t, sde.perturb(x0, ts[0], noise), rtol=1e-12, atol=0)
    res = S.sample(key, den, x_T=x_t, grid=S.Explicit(ts), progress=False)
    torch.testing.assert_close(x, res.x, rtol=1e-12, atol=0)


def test_latents_edited_between_steps_are_the_state_the_sampler_continues_from():
    """An inpainting pipeline overwrites part of the latents after each step; the next step
    must start there (a history-free sampler then equals sampling from the edited state)."""
    scheduler = ScoresdeScheduler.from_config(_config(), sampler="ddim")
    scheduler.set_timesteps(4)
    edited = _x(5)
    x = _loop(scheduler, _x(0), scheduler.timesteps, lambda k, x: edited if k == 1 else x)

    sde, den = from_diffusers(net, _config())
    ts = S.UniformTime().grid(sde, 4)[2:]
    res = S.sample("ddim", den, x_T=edited, grid=S.Explicit(ts), progress=False)
    torch.testing.assert_close(x, res.x, rtol=1e-12, atol=0)


def test_timesteps_list_every_evaluation_in_the_network_convention():
    scheduler = ScoresdeScheduler.from_config(_config(), sampler="pf_heun")
    scheduler.set_timesteps(3)
    sde = S.DiscreteVPSDE.linear()
    ts = S.UniformTime().grid(sde, 3)
    # Heun evaluates at t_i and t_{i+1} of every step; the train index is t N - 1
    expected = sde.t_to_index(torch.stack([ts[0], ts[1], ts[1], ts[2], ts[2], ts[3]]))
    torch.testing.assert_close(scheduler.timesteps, expected, rtol=1e-15, atol=0)
    assert scheduler.order == 2 and scheduler.init_noise_sigma == 1.0


@pytest.mark.parametrize("key", ["torchdiffeq_fixed", "torchsde"])
def test_first_evaluation_away_from_x_T_gets_a_leading_discarded_timestep(key):
    """The whole-run backends first evaluate a rescaled or reshaped copy of x_T (equal to
    rounding, not bit for bit); the pipeline evaluates its own x_T first, so that output is
    discarded and the backend's own first point is evaluated next."""
    scheduler = ScoresdeScheduler.from_config(_config(), sampler=key)
    scheduler.set_timesteps(3)
    nfe = scheduler.sampler.nfe(3)
    assert scheduler.plan.warm_up and len(scheduler.timesteps) == 1 + nfe
    torch.manual_seed(3)
    x = _loop(scheduler, _x(0), scheduler.timesteps)

    _, den = from_diffusers(net, _config())
    torch.manual_seed(3)
    res = S.sample(key, den, x_T=_x(0), n_steps=3, progress=False)
    torch.testing.assert_close(x, res.x, rtol=1e-12, atol=0)
    assert res.nfe == nfe
