"""Bad options of ``sa_solver`` and ``adaptive_sde`` raise at construction with an error that
names the option, the value and what was expected."""

import pytest

import scoresde as S


@pytest.mark.parametrize("name", ["predictor_order", "corrector_order"])
@pytest.mark.parametrize("value", [0, 5, 2.0, True])
def test_sa_solver_rejects_orders_outside_1_to_4(name, value):
    with pytest.raises(ValueError, match=f"{name} must be an int"):
        S.get_sampler("sa_solver", **{name: value})


@pytest.mark.parametrize("tau", [-0.5, float("nan"), float("inf")])
def test_sa_solver_rejects_a_negative_or_non_finite_tau(tau):
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        S.get_sampler("sa_solver", tau=tau)


def test_sa_solver_rejects_a_tau_function_with_negative_values():
    with pytest.raises(
        ValueError, match=r"tau must return a finite number >= 0.*tau\(0\.51\) = -0\.01"
    ):
        S.get_sampler("sa_solver", tau=lambda t: 0.5 - t)


def test_sa_solver_rejects_a_tau_that_is_neither_a_number_nor_callable():
    with pytest.raises(TypeError, match="tau must be a number >= 0 or a callable"):
        S.get_sampler("sa_solver", tau="1")
    with pytest.raises(ValueError, match="lower_order_final must be a bool"):
        S.get_sampler("sa_solver", lower_order_final=1)
