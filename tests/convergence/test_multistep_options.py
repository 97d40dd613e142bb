"""Declared order = measured order for the options of the multistep samplers.

``tests/convergence/test_ode_order.py`` measures every registered sampler with its defaults; this
file measures the options that change the interpolation variable (DEIS ``variable``) or the order
(UniPC ``solver_order``, ``variant``, ``predict_x0``, ``lower_order_final``), on the same problem:
the 2-D mixture ``gmm_2d``, 32 prior draws, a logSNR-uniform grid, the scipy DOP853 reference at
rtol = atol = 1e-10, and the mean Euclidean error at ``t_min``.

Tolerance: the fitted slope must be within 0.25 of ``sampler.order``, the band of
``test_ode_order.py`` (its docstring derives it). Step counts are chosen per case so that the
errors lie in [1e-9, 1] *and* the fit starts in the asymptotic range: DEIS with ``variable="t"``
or ``"rho"`` interpolates at nodes that a logSNR-uniform grid spaces unevenly in that variable
(geometrically in ``rho``), which slows the approach to the asymptotic slope (local slopes 2.5,
2.6, 2.8, 2.9, 2.9 for ``deis_3``/``"t"`` from 12 to 384 steps); UniPC-3 reaches order 4 from
about 64 steps on (local slopes 3.8, 3.9, 4.0 from 64 to 512).
"""

import pytest
import torch

import scoresde as S
from tests.helpers import empirical_order, format_table, gmm_2d, reference_solution

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}

CASES = [
    ("deis_2", {"variable": "t"}, "vp", [32, 64, 128, 256]),
    ("deis_2", {"variable": "rho"}, "vp", [32, 64, 128, 256]),
    ("deis_3", {"variable": "t"}, "ddpm", [48, 96, 192, 384]),
    ("deis_3", {"variable": "rho"}, "ve", [96, 192, 384, 768]),
    ("deis_3", {"lower_order_final": True}, "vp", [12, 24, 48, 96]),
    ("unipc", {"solver_order": 1}, "vp", [16, 32, 64, 128, 256]),
    ("unipc", {"solver_order": 3}, "ddpm", [64, 128, 256, 512]),
    ("unipc", {"variant": "bh1"}, "ve", [16, 32, 64, 128, 256]),
    ("unipc", {"predict_x0": False}, "ve", [16, 32, 64, 128, 256]),
    ("unipc", {"lower_order_final": False}, "ddpm", [12, 24, 48, 96]),
]


def case_id(case):
    key, options, sde_key, _ = case
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"{key}[{opts}]-{sde_key}"


@pytest.fixture(scope="module")
def references():
    data = gmm_2d()
    out = {}
    for name, sde in SDES.items():
        x_T = sde.prior_sample(
            (32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        out[name] = (data, x_T, reference_solution(data, sde, x_T).x)
    return out


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_multistep_option_converges_at_its_declared_order(case, references):
    key, options, sde_key, counts = case
    sde = SDES[sde_key]
    data, x_T, ref = references[sde_key]
    sampler = S.get_sampler(key, **options)
    den = data.denoiser(sde)
    errors = []
    for n in counts:
        res = S.sample(sampler, den, x_T=x_T, n_steps=n, grid=S.UniformLambda(), progress=False)
        errors.append((res.x - ref).norm(dim=1).mean().item())
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1.0 for e in errors), f"{case_id(case)}: errors left the window\n{table}"
    p = empirical_order(counts, errors)
    assert abs(p - sampler.order) <= 0.25, (
        f"{case_id(case)}: measured order {p:.3f}, declared {sampler.order}\n{table}"
    )
