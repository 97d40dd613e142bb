"""Bad options of ``ipndm``/``lms``/``er_sde``/``restart`` raise at construction with an error
that names the option, the value and what was expected."""

import pytest

import scoresde as S


@pytest.mark.parametrize("order", [0, 5, 2.0, True, "4"])
def test_lms_rejects_orders_outside_1_to_4(order):
    with pytest.raises(ValueError, match="order must be an int"):
        S.get_sampler("lms", order=order)


@pytest.mark.parametrize("max_order", [0, 5, 3.0, True])
def test_ipndm_rejects_max_orders_outside_1_to_4(max_order):
    with pytest.raises(ValueError, match="max_order must be an int"):
        S.get_sampler("ipndm", max_order=max_order)


@pytest.mark.parametrize("order", [0, 4, 1.5, False])
def test_er_sde_rejects_solver_orders_outside_1_to_3(order):
    with pytest.raises(ValueError, match="solver_order must be an int"):
        S.get_sampler("er_sde", solver_order=order)


def test_er_sde_rejects_a_noise_scaler_with_negative_values():
    with pytest.raises(ValueError, match=r"noise_scaler must return finite positive values.*phi\("):
        S.get_sampler("er_sde", noise_scaler=lambda r: r - 1.0)


def test_er_sde_names_noise_scaler_when_it_fails_on_a_tensor():
    """phi is called on a tensor of noise levels; a scalar-only function (math.sqrt) fails there,
    and the error says so instead of torch's "only one element tensors can be converted"."""
    import math

    with pytest.raises(ValueError, match=r"noise_scaler must take a float64 tensor.*raised"):
        S.get_sampler("er_sde", noise_scaler=lambda r: math.sqrt(r) * r)


def test_er_sde_rejects_a_noise_scaler_that_gives_negative_noise_variance():
    # phi(rho)/rho = 1/rho grows as rho falls: rho_t^2 - rho_s^2 (phi_t/phi_s)^2 < 0
    with pytest.raises(ValueError, match="noise_scaler phi must have phi\\(rho\\)/rho"):
        S.get_sampler("er_sde", noise_scaler=lambda r: r**0 + 0 * r)


def test_er_sde_rejects_a_scaler_that_is_not_callable_or_returns_the_wrong_shape():
    with pytest.raises(TypeError, match="noise_scaler must be a callable"):
        S.get_sampler("er_sde", noise_scaler=2.0)
    with pytest.raises(ValueError, match="same shape"):
        S.get_sampler("er_sde", noise_scaler=lambda r: r.sum())


@pytest.mark.parametrize("s_noise", [-0.1, float("nan")])
def test_er_sde_rejects_negative_s_noise(s_noise):
    with pytest.raises(ValueError, match="s_noise must be"):
        S.get_sampler("er_sde", s_noise=s_noise)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(K=-1), "K must be an int >= 0"),
        (dict(restart_steps=0), "restart_steps must be an int >= 1"),
        (dict(restart_interval=(0.3, 0.06)), r"restart_interval\[1\] must be"),
        (dict(restart_interval=(0.0, 0.3)), r"restart_interval\[0\] must be"),
        (dict(restart_interval=0.3), "restart_interval must be a pair"),
        (dict(interval_variable="lambda"), "interval_variable must be one of"),
        (dict(solver="euler_maruyama"), "solver must be a deterministic step-based sampler"),
        (dict(solver="pndm"), "NFE is proportional"),
        (dict(solver="no_such_sampler"), "solver must be a registry key"),
    ],
)
def test_restart_rejects_bad_options_at_construction(options, match):
    with pytest.raises(ValueError, match=match):
        S.get_sampler("restart", **options)


@pytest.mark.parametrize(
    "options",
    [
        dict(restart_interval=(1e-4, 0.3)),
        dict(restart_interval=(0.06, 1e4)),
        dict(restart_interval=(0.5, 2.0), interval_variable="t"),
    ],  # fmt: skip
)
def test_restart_interval_outside_the_grid_is_reported(options):
    sde = S.VESDE()
    den = S.Gaussian([0.0], std=1.0).denoiser(sde)
    with pytest.raises(ValueError, match="restart_interval must lie inside the grid"):
        S.sample(S.get_sampler("restart", **options), den, shape=(2, 1), n_steps=8, progress=False)
