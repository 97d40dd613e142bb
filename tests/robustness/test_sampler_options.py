"""Bad sampler options raise ``ValueError`` naming the argument, the value and what was expected.

Each case constructs a sampler through the registry (as users do) with one bad option; the message
must contain the option's name, the offending value's ``repr`` and a phrase of the expectation.
"""

import pytest

import scoresde as S

CASES = [
    # key, options, expectation phrase
    ("ddim", {"eta": -0.1}, "[0.0, 1.0]"),
    ("ddim", {"eta": 1.5}, "[0.0, 1.0]"),
    ("ddim", {"eta": float("nan")}, "finite real"),
    ("ddim_stochastic", {"eta": 0.0}, "(0.0, 1.0]"),
    ("dpm_solver_2m", {"lower_order_final": 1}, "bool"),
    ("dpm_solver_3s", {"lower_order_final": "yes"}, "bool"),
    ("dpm_solver_pp_3m", {"variant": "midpoint"}, "['reference', 'taylor']"),
    ("dpm_solver_adaptive", {"order": 4}, "2 (DPM-Solver-12) or 3"),
    ("dpm_solver_adaptive", {"order": 2.5}, "int"),
    ("dpm_solver_adaptive", {"rtol": 0.0}, "(0.0, inf]"),
    ("dpm_solver_adaptive", {"atol": -1e-3}, "(0.0, inf]"),
    ("dpm_solver_adaptive", {"h_init": 0.0}, "(0.0, inf]"),
    ("dpm_solver_adaptive", {"theta": 1.5}, "(0.0, 1.0]"),
    ("torchdiffeq", {"method": "rk45"}, "'dopri5'"),
    ("torchdiffeq", {"rtol": 0.0}, "(0.0, inf]"),
    ("torchdiffeq", {"atol": -1.0}, "(0.0, inf]"),
    ("torchdiffeq_fixed", {"method": "dopri5"}, "'rk4'"),
    ("scipy", {"method": "LSODA"}, "'DOP853'"),
    ("scipy", {"rtol": -1e-5}, "(0.0, inf]"),
]


@pytest.mark.parametrize(
    "key, options, expected",
    CASES,
    ids=[f"{k}-{next(iter(o))}={next(iter(o.values()))!r}" for k, o, _ in CASES],
)
def test_bad_option_raises_a_value_error_naming_argument_value_and_expectation(
    key, options, expected
):
    ((name, value),) = options.items()
    with pytest.raises(ValueError) as err:
        S.get_sampler(key, **options)
    message = str(err.value)
    assert name in message and repr(value) in message and expected in message, message


@pytest.mark.parametrize(
    "key", ["dpm_solver_2m", "dpm_solver_pp_2s", "ddim", "torchdiffeq", "scipy"]
)
def test_options_are_keyword_only_and_typos_are_rejected(key):
    with pytest.raises(ValueError, match=rf"unknown option 'not_an_option' for sampler '{key}'"):
        S.get_sampler(key, not_an_option=1)
