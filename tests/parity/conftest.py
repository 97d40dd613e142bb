"""Fixtures of the parity tests: peers' reference implementations, loaded lazily."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

PACKAGE = "_scoresde_test_k_diffusion"


@pytest.fixture(scope="module")
def kd():
    """k-diffusion's ``sampling.py`` (pinned: k-diffusion 0.1.1.post1), loaded on its own under a
    private package name with a stub ``utils``: the package ``__init__`` imports heavy optional
    dependencies, and ``sampling.py`` uses only ``append_dims`` from ``utils``."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(path.parent)]
    utils = types.ModuleType(f"{PACKAGE}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.utils = utils
    sys.modules[PACKAGE], sys.modules[f"{PACKAGE}.utils"] = package, utils
    try:
        sampling_spec = importlib.util.spec_from_file_location(f"{PACKAGE}.sampling", path)
        sampling = importlib.util.module_from_spec(sampling_spec)
        sampling_spec.loader.exec_module(sampling)
    finally:
        del sys.modules[PACKAGE], sys.modules[f"{PACKAGE}.utils"]
    return sampling
