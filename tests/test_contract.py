"""The sampler contract, checked for every entry of ``SAMPLERS`` (ids = registry keys).

Properties: declared attributes are well-formed; the NFE the Denoiser measures equals
``sampler.nfe(n_steps)``; shape, dtype and device are preserved for 1-D and 4-D states under every
SDE; a fixed generator makes sampling deterministic; ``step`` makes no host sync. A sampler added
to the registry is held to all of this automatically.
"""

import inspect

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS, Sampler
from tests.helpers import GaussianMixture, NoHostSync

KEYS = sorted(SAMPLERS)
SDES = {
    "vp": S.VPSDE(),
    "subvp": S.SubVPSDE(),
    "ve": S.VESDE(),
    "ddpm": S.DiscreteVPSDE.linear(),
}


def problem(event_shape):
    """Two components in ``event_shape``; 4-D states use (1, 2, 2) images."""
    means = torch.stack([torch.ones(event_shape), -torch.ones(event_shape)]).double()
    return GaussianMixture(means, stds=0.5)


def steps_based(sampler: Sampler) -> bool:
    return type(sampler).run is Sampler.run


@pytest.mark.parametrize("key", KEYS)
def test_declared_attributes_are_well_formed(key):
    cls = SAMPLERS[key]
    assert cls.name == key
    assert isinstance(cls.stochastic, bool)
    assert cls.order > 0
    assert cls.nfe_per_step is None or (isinstance(cls.nfe_per_step, int) and cls.nfe_per_step >= 1)
    if cls.stochastic:
        assert cls.weak_order is not None and cls.weak_order > 0
    doc = (inspect.getdoc(cls) or "").lower()
    for word in ("order", "nfe", "reference"):
        assert word in doc, f"{key}: docstring must state its {word}"
    sampler = cls()  # every sampler runs with its paper defaults
    assert isinstance(repr(sampler), str)


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("key", KEYS)
def test_every_sampler_reports_measured_nfe_and_keeps_shape(key, sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler(key)
    for event_shape, dtype in [((2,), torch.float64), ((1, 2, 2), torch.float32)]:
        den = problem(event_shape).denoiser(sde)
        gen = torch.Generator().manual_seed(0)
        n = 6
        res = S.sample(sampler, den, shape=(3, *event_shape), n_steps=n, generator=gen,
                       dtype=dtype, progress=False)  # fmt: skip
        assert res.x.shape == (3, *event_shape)
        assert res.x.dtype == dtype
        assert res.x.device.type == "cpu"
        assert torch.isfinite(res.x).all()
        expected = sampler.nfe(n)
        if expected is None:  # adaptive: the count depends on the solution
            assert res.nfe >= 1
        else:
            assert res.nfe == expected, f"{key}: measured {res.nfe} NFE, declared {expected}"
        assert res.ts.shape == (n + 1,) and res.ts.dtype == torch.float64


@pytest.mark.parametrize("key", KEYS)
def test_sampling_is_deterministic_under_a_fixed_generator(key):
    sde = SDES["vp"]
    den = problem((2,)).denoiser(sde)
    out = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(1234)
        out.append(S.sample(key, den, shape=(4, 2), n_steps=5, generator=gen, progress=False).x)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


@pytest.mark.parametrize("key", KEYS)
def test_step_makes_no_host_sync(key, device):
    sampler = S.get_sampler(key)
    if not steps_based(sampler):
        pytest.skip(f"{key} integrates the whole interval in its own run(); it has no step")
    sde = SDES["vp"]
    den = problem((2,)).denoiser(sde)
    ts = S.UniformLambda().grid(sde, 6)
    x = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(0)).to(device)
    noise = S.GaussianNoise(torch.Generator().manual_seed(1))
    noise.bind(ts, x)
    with torch.inference_mode():
        state = sampler.init(den, sde, ts, x)
        grid = ts.tolist()
        with NoHostSync():
            for i in range(len(grid) - 1):
                x, state = sampler.step(den, sde, grid, i, x, state, noise)
    assert torch.isfinite(x).all()


def test_host_sync_detector_catches_syncs():
    x = torch.ones(3)
    for fn in (lambda: x.sum().item(), lambda: bool(x.sum() > 0), lambda: x.tolist(),
               lambda: float(x[0]), lambda: int(x[0])):  # fmt: skip
        with pytest.raises(RuntimeError, match="host sync"), NoHostSync():
            fn()


def test_unknown_sampler_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names are") as err:
        S.get_sampler("dpm_solver_9000")
    assert "pf_euler" in str(err.value)
