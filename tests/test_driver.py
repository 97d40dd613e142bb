"""The driver: callbacks, trajectories, denoise_final, default SDE, prior draws, result type."""

import torch

import scoresde as S
from scoresde.samplers import SampleResult


def setup():
    sde = S.VPSDE()
    return sde, S.ring_mixture().denoiser(sde)


def test_callback_sees_every_step_with_its_times_and_x0():
    sde, den = setup()
    seen = []
    res = S.sample("pf_euler", den, shape=(3, 2), n_steps=5, callback=seen.append, progress=False)
    assert [s.i for s in seen] == list(range(5))
    assert [s.t for s in seen] == res.ts[:-1].tolist()
    assert [s.t_next for s in seen] == res.ts[1:].tolist()
    torch.testing.assert_close(seen[-1].x, res.x)
    assert all(s.x0 is not None and s.x0.shape == (3, 2) for s in seen)


def test_trajectory_holds_every_grid_state():
    sde, den = setup()
    x_T = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(0))
    res = S.sample("pf_euler", den, x_T=x_T, n_steps=4, save_trajectory=True, progress=False)
    assert isinstance(res, SampleResult)
    assert res.trajectory.shape == (5, 3, 2)
    torch.testing.assert_close(res.trajectory[0], x_T)
    torch.testing.assert_close(res.trajectory[-1], res.x)
    assert S.sample("pf_euler", den, x_T=x_T, n_steps=4, progress=False).trajectory is None


def test_denoise_final_costs_one_nfe_and_returns_the_models_x0():
    sde, den = setup()
    x_T = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = S.sample("pf_euler", den, x_T=x_T, n_steps=4, progress=False)
    final = S.sample("pf_euler", den, x_T=x_T, n_steps=4, denoise_final=True, progress=False)
    assert final.nfe == plain.nfe + 1
    torch.testing.assert_close(final.x, den.x0(plain.x, sde.t_min))


def test_prior_draw_follows_generator_dtype_and_sde_scale():
    sde = S.VESDE(0.01, 30.0)
    den = S.Gaussian(torch.zeros(2)).denoiser(sde)
    res = [
        S.sample(
            "pf_euler",
            den,
            shape=(4000, 2),
            n_steps=1,
            generator=torch.Generator().manual_seed(5),
            save_trajectory=True,
            dtype=torch.float64,
            progress=False,
        )  # fmt: skip
        for _ in range(2)
    ]
    torch.testing.assert_close(res[0].trajectory[0], res[1].trajectory[0], rtol=0, atol=0)
    assert res[0].x.dtype == torch.float64
    std = res[0].trajectory[0].std().item()
    assert abs(std - 30.0) < 5 * 30.0 / (2 * 8000) ** 0.5  # 5 standard errors of the std


def test_explicit_grid_needs_no_n_steps_and_stats_are_reported():
    sde, den = setup()
    res = S.sample("pf_euler", den, shape=(2, 2), grid=S.Explicit([1.0, 0.3, 0.01]), progress=False)
    assert res.stats["n_steps"] == 2 and res.nfe == 2 and res.stats["time_s"] >= 0
