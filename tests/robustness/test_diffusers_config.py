"""A bad diffusers scheduler config gets one ``ValueError`` that names the key, the value and
what was expected, for every key ``from_diffusers`` reads (configs as plain dicts, offline: the
UNet is a stand-in callable, never called)."""

import pytest

from scoresde.adapters import flow_match_grid, from_diffusers

LINEAR = {"beta_schedule": "linear"}
FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler"}


def net(x, t):
    return x


CASES = [
    # (config, key named, value shown)
    ({**LINEAR, "num_train_timesteps": "1000"}, "num_train_timesteps", "'1000'"),
    ({**LINEAR, "num_train_timesteps": 1}, "num_train_timesteps", "1"),
    ({**LINEAR, "num_train_timesteps": 10.5}, "num_train_timesteps", "10.5"),
    ({**LINEAR, "num_train_timesteps": None}, "num_train_timesteps", "None"),
    ({**LINEAR, "beta_start": "0.0001"}, "beta_start", "'0.0001'"),
    ({**LINEAR, "beta_start": -1e-4}, "beta_start", "-0.0001"),
    ({**LINEAR, "beta_start": float("nan")}, "beta_start", "nan"),
    ({**LINEAR, "beta_end": 1.5}, "beta_end", "1.5"),
    ({**LINEAR, "beta_end": None}, "beta_end", "None"),
    ({**LINEAR, "beta_start": 0.02, "beta_end": 1e-4}, "beta_end", "0.0001"),
    ({"beta_schedule": "scaled_linear", "beta_end": [0.012]}, "beta_end", r"\[0.012\]"),
    ({"beta_schedule": 3}, "beta_schedule", "3"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule", "'sigmoid'"),
    ({"trained_betas": "abc"}, "trained_betas", "'abc'"),
    ({"trained_betas": [[0.1, 0.2], [0.3, 0.4]]}, "trained_betas", r"\[\[0.1"),
    ({"trained_betas": [0.1, 1.5, 0.2]}, "trained_betas", r"1.5"),
    ({"trained_betas": [0.1, 0.2], "num_train_timesteps": 1000}, "trained_betas", "1000"),
    ({**LINEAR, "prediction_type": "noise"}, "prediction_type", "'noise'"),
    ({**LINEAR, "prediction_type": None}, "prediction_type", "None"),
    ({**LINEAR, "rescale_betas_zero_snr": "yes"}, "rescale_betas_zero_snr", "'yes'"),
    ({**LINEAR, "variance_type": "learnt"}, "variance_type", "'learnt'"),
    ({**LINEAR, "thresholding": 1}, "thresholding", "1"),
    ({**LINEAR, "thresholding": True, "dynamic_thresholding_ratio": 2.0},
     "dynamic_thresholding_ratio", "2.0"),
    ({**LINEAR, "thresholding": True, "sample_max_value": -1}, "sample_max_value", "-1"),
    ({**LINEAR, "clip_sample": "true"}, "clip_sample", "'true'"),
    ({**LINEAR, "clip_sample": True, "clip_sample_range": 0}, "clip_sample_range", "0"),
    ({**LINEAR, "use_flow_sigmas": "no"}, "use_flow_sigmas", "'no'"),
    ({**FLOW, "num_train_timesteps": "1000"}, "num_train_timesteps", "'1000'"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "key", "value"), CASES)
def test_bad_config_value_names_the_key_and_the_value(config, key, value):
    with pytest.raises(ValueError, match=rf"(?s)^the scheduler config's .*{key}.*{value}") as e:
        from_diffusers(net, config)
    message = str(e.value)
    assert "\n" not in message
    assert "expected" in message or "must" in message


FLOW_CASES = [
    ({**FLOW, "shift": "3"}, "shift", "'3'"),
    ({**FLOW, "shift": 0.0}, "shift", "0.0"),
    ({**FLOW, "shift_terminal": 1.5}, "shift_terminal", "1.5"),
    ({**FLOW, "time_shift_type": "cubic"}, "time_shift_type", "'cubic'"),
    ({**FLOW, "use_dynamic_shifting": "true"}, "use_dynamic_shifting", "'true'"),
    ({**FLOW, "num_train_timesteps": 0}, "num_train_timesteps", "0"),
    ({**FLOW, "use_karras_sigmas": "yes"}, "use_karras_sigmas", "'yes'"),
]


@pytest.mark.parametrize(("config", "key", "value"), FLOW_CASES)
def test_bad_flow_config_value_names_the_key_and_the_value(config, key, value):
    with pytest.raises(ValueError, match=rf"^the scheduler config's {key} .*got {value}"):
        flow_match_grid(config)


def test_missing_optional_keys_take_diffusers_defaults_and_none_is_allowed_where_diffusers_allows():
    sde, den = from_diffusers(net, {**LINEAR, "trained_betas": None, "variance_type": None})
    assert sde.N == 1000
    assert flow_match_grid({**FLOW, "shift_terminal": None}).shift_terminal is None
