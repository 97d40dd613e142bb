"""``ScoresdeScheduler`` refuses bad use with one clear error naming the argument, the value and
what was expected; and ``import scoresde`` never imports diffusers."""

import subprocess
import sys

import pytest
import torch

import scoresde as S

diffusers = pytest.importorskip("diffusers", reason="the scheduler needs diffusers")
from scoresde.adapters import ScoresdeScheduler  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def scheduler():
    return ScoresdeScheduler.from_config(diffusers.DDPMScheduler(clip_sample=False).config)


def test_import_scoresde_and_its_adapters_does_not_import_diffusers():
    code = "import sys, scoresde, scoresde.adapters; print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_step_before_set_timesteps_names_set_timesteps(scheduler):
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"num_inference_steps is None: call set_timesteps"):
        scheduler.step(x, 999, x)


def test_timestep_not_in_timesteps_names_the_expected_one(scheduler):
    scheduler.set_timesteps(3)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"timestep must be timesteps\[0\] = 999.0 .*got 5.0, "
                                         r"which is not in timesteps"):  # fmt: skip
        scheduler.step(x, 5, x)


def test_timestep_out_of_order_names_where_it_is(scheduler):
    scheduler.set_timesteps(3)
    x = torch.zeros(1, 1, 4, 4)
    t1 = scheduler.timesteps[1]
    with pytest.raises(ValueError, match=r"timestep must be timesteps\[0\].*timesteps\[1\]"):
        scheduler.step(x, t1, x)


def test_more_steps_than_timesteps_is_refused(scheduler):
    scheduler.set_timesteps(2)
    x = torch.zeros(1, 1, 4, 4)
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    with pytest.raises(ValueError, match=r"step\(\) was called 3 times but timesteps holds 2"):
        scheduler.step(x, scheduler.timesteps[-1], x)


def test_model_output_of_another_shape_is_refused(scheduler):
    scheduler.set_timesteps(2)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"model_output must have shape \(1, 1, 4, 4\) for sample"):
        scheduler.step(torch.zeros(1, 2, 4, 4), scheduler.timesteps[0], x)


ADAPTIVE = sorted(k for k, cls in S.SAMPLERS.items() if cls().nfe_per_step is None)


def test_the_adaptive_samplers_are_the_four_adaptive_integrators():
    assert ADAPTIVE == ["adaptive_sde", "dpm_solver_adaptive", "scipy", "torchdiffeq"]


@pytest.mark.parametrize("key", ADAPTIVE)
def test_adaptive_samplers_are_refused_naming_fixed_step_alternatives(key):
    config = diffusers.DDPMScheduler(clip_sample=False).config
    with pytest.raises(ValueError, match=rf"sampler '{key}' .*adaptive.*'pf_rk4'") as err:
        ScoresdeScheduler.from_config(config, sampler=key)
    # a stochastic one is also pointed to stochastic fixed-step samplers
    assert ("stochastic: 'sde_dpm_solver_pp_2m'" in str(err.value)) is S.SAMPLERS[key].stochastic


def test_options_with_a_sampler_instance_are_refused():
    with pytest.raises(ValueError, match=r"sampler_options apply to a sampler given by name"):
        ScoresdeScheduler(sampler=S.get_sampler("ddim"), sampler_options={"eta": 0.5})


def test_unknown_sampler_option_is_refused_by_the_sampler():
    config = diffusers.DDPMScheduler(clip_sample=False).config
    with pytest.raises(ValueError, match="unknown option .lower_order_finale. for sampler"):
        ScoresdeScheduler.from_config(config, sampler="dpm_solver_pp_2m", lower_order_finale=True)


def test_bad_grid_and_bad_num_inference_steps_are_refused(scheduler):
    with pytest.raises(TypeError, match=r"grid must be a TimeGrid"):
        ScoresdeScheduler(grid=3)
    with pytest.raises(ValueError, match=r"num_inference_steps must be an int >= 1"):
        scheduler.set_timesteps(0)
    explicit = ScoresdeScheduler(grid=S.Explicit([1.0, 0.5, 0.1]))
    with pytest.raises(ValueError, match=r"num_inference_steps must be 2 .*got 5"):
        explicit.set_timesteps(5)


def test_begin_index_inside_a_step_is_refused():
    scheduler = ScoresdeScheduler(sampler="pf_heun")
    scheduler.set_timesteps(3)
    with pytest.raises(ValueError, match=r"begin_index must be the first evaluation of a sampler "
                                         r"step, one of \[0, 2, 4\]; got 1"):  # fmt: skip
        scheduler.set_begin_index(1)


def test_a_zero_terminal_snr_config_is_refused_with_the_alternative():
    config = diffusers.DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                     timestep_spacing="trailing").config  # fmt: skip
    with pytest.raises(
        ValueError, match=r"does not run zero-terminal-SNR schedules.*from_diffusers"
    ):
        ScoresdeScheduler.from_config(config, sampler="ddim")


def test_add_noise_refuses_timesteps_outside_the_training_range(scheduler):
    x = torch.zeros(2, 1, 4, 4)
    for bad in ([-1, 3], [5000, 3]):
        with pytest.raises(ValueError, match=r"timesteps must be train indices in \[0, 999\]"):
            scheduler.add_noise(x, x, torch.tensor(bad))


def test_a_ddim_pipelines_eta_is_refused_unless_zero(scheduler):
    scheduler.set_timesteps(2)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"eta=0.5 passed to step\(\) would be ignored"):
        scheduler.step(x, scheduler.timesteps[0], x, eta=0.5)
    scheduler.step(x, scheduler.timesteps[0], x, eta=0.0, use_clipped_model_output=None)


def test_the_default_grid_is_the_samplers_own():
    config = diffusers.DDPMScheduler(clip_sample=False).config
    s = ScoresdeScheduler.from_config(config, sampler="pf_rk4")
    s.set_timesteps(3)
    torch.testing.assert_close(s.ts, S.get_sampler("pf_rk4").default_grid.grid(s.sde, 3))
