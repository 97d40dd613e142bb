"""Shared fixtures: float64 mode, devices, hypothesis profiles.

Hypothesis profiles are picked by ``HYPOTHESIS_PROFILE``: ``ci`` (default; derandomised, 30
examples), ``dev`` (random, 50) and ``thorough`` (random, 500).
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests are small; one thread keeps timings stable and leaves the second core to the other job.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def float64():
    """Run the test with float64 as the default dtype (strict mode, as in diffrax's tests)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
