"""Bad options of the multistep samplers and grids raise ``ValueError`` naming the argument.

Property: each message contains the argument's name and the offending value (or the expected
set), so a user can fix the call from the message alone.
"""

import pytest

import scoresde as S
from tests.helpers import gmm_2d

BAD_SAMPLER_OPTIONS = [
    ("deis_3", {"variable": "logrho"}, "variable"),
    ("deis_2", {"lower_order_final": 1}, "lower_order_final"),
    ("unipc", {"solver_order": 4}, "solver_order"),
    ("unipc", {"solver_order": True}, "solver_order"),
    ("unipc", {"variant": "bh3"}, "variant"),
    ("unipc", {"predict_x0": "yes"}, "predict_x0"),
    ("unipc", {"lower_order_final": None}, "lower_order_final"),
]


@pytest.mark.parametrize("key,options,name", BAD_SAMPLER_OPTIONS,
                         ids=[f"{k}-{n}" for k, _, n in BAD_SAMPLER_OPTIONS])  # fmt: skip
def test_bad_sampler_option_names_the_argument(key, options, name):
    with pytest.raises(ValueError, match=name) as err:
        S.get_sampler(key, **options)
    assert repr(next(iter(options.values()))) in str(err.value)


def test_unknown_keyword_is_rejected():
    with pytest.raises(
        ValueError, match=r"unknown option 'order' for sampler 'unipc'.*solver_order"
    ):
        S.get_sampler("unipc", order=3)  # the option is solver_order; order is the declared one


@pytest.mark.parametrize(
    "kwargs,name",
    [({"kind": "uniform"}, "kind"), ({"final": "zero_snr"}, "final"),
     ({"steps_offset": -1}, "steps_offset")],
)  # fmt: skip
def test_bad_discrete_spacing_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        S.DiscreteSpacing(**kwargs)


def test_discrete_spacing_needs_a_discrete_schedule_and_enough_train_steps():
    with pytest.raises(ValueError, match="DiscreteVPSDE"):
        S.DiscreteSpacing().grid(S.VPSDE(), 10)
    with pytest.raises(ValueError, match="n_steps=1000"):
        S.DiscreteSpacing("trailing").grid(S.DiscreteVPSDE.linear(), 1000)


def test_bad_optimized_grid_options_name_the_argument():
    sde = S.DiscreteVPSDE.linear()
    den = gmm_2d().denoiser(sde)
    with pytest.raises(ValueError, match="shape"):
        S.Optimized("unipc", den, shape=())
    with pytest.raises(ValueError, match="max_evals"):
        S.Optimized("unipc", den, shape=(4, 2), max_evals=0)
    with pytest.raises(ValueError, match="reference_steps"):
        S.Optimized("unipc", den, shape=(4, 2), reference_steps=1)
    with pytest.raises(ValueError, match="deterministic"):
        S.Optimized("euler_maruyama", den, shape=(4, 2))
    with pytest.raises(ValueError, match="denoiser"):
        S.Optimized("unipc", lambda x, t: x, shape=(4, 2))
    with pytest.raises(ValueError, match="valid names"):
        S.Optimized("unipc_9000", den, shape=(4, 2))
