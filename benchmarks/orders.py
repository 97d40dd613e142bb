"""Measured convergence orders of every registered sampler, as a markdown table.

The same measurement as the test suite (``tests/convergence/test_ode_order.py`` and
``tests/convergence/test_sde_strong_order.py``), over more schedules, for ``docs/correctness.md``:

- deterministic fixed-step samplers: least-squares log-log slope of the mean error at ``t_min``
  against the scipy DOP853 reference (rtol = atol = 1e-10) on ``gmm_2d``, logSNR-uniform grid,
  under VP, sub-VP, VE and DDPM-linear;
- stochastic samplers that converge pathwise: strong order on one ``BrownianNoise`` path against
  the same sampler on 2^12 steps (VP, uniform-in-t grid).

Usage: ``python benchmarks/orders.py [--out FILE.md]`` (about 2 minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scoresde as S  # noqa: E402
from scoresde.samplers import SAMPLERS, Sampler  # noqa: E402
from tests.convergence.test_ode_order import STEP_COUNTS, STEP_COUNTS_BY_KEY  # noqa: E402
from tests.convergence.test_sde_strong_order import GRIDS as SDE_GRIDS  # noqa: E402
from tests.convergence.test_sde_strong_order import N_REF  # noqa: E402
from tests.convergence.test_sde_strong_order import STEP_COUNTS as SDE_STEPS  # noqa: E402
from tests.helpers import empirical_order, gmm_2d  # noqa: E402

SDES = {
    "VP": S.VPSDE(),
    "sub-VP": S.SubVPSDE(),
    "VE": S.VESDE(),
    "DDPM-linear": S.DiscreteVPSDE.linear(),
}


def deterministic_orders() -> list[str]:
    data = gmm_2d()
    refs = {}
    for name, sde in SDES.items():
        x_T = sde.prior_sample(
            (32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        refs[name] = (x_T, S.reference_solution(data, sde, x_T).x)
    rows = ["| sampler | declared | " + " | ".join(SDES) + " |", "|---|---|" + "---|" * len(SDES)]
    for key, cls in sorted(SAMPLERS.items()):
        if cls.stochastic or cls.nfe_per_step is None:
            continue
        if cls.run is not Sampler.run and not getattr(cls, "fixed_grid", False):
            continue
        sampler = S.get_sampler(key)
        counts = STEP_COUNTS_BY_KEY.get(key, STEP_COUNTS[int(round(sampler.order))])
        cells = []
        for name, sde in SDES.items():
            x_T, ref = refs[name]
            den = data.denoiser(sde)
            errors = []
            for n in counts:
                res = S.sample(
                    sampler, den, x_T=x_T, n_steps=n, grid=S.UniformLambda(), progress=False
                )
                errors.append((res.x - ref).norm(dim=1).mean().item())
            cells.append(f"{empirical_order(counts, errors):.2f}")
        rows.append(f"| `{key}` | {sampler.order} | " + " | ".join(cells) + " |")
    return rows


def strong_orders() -> list[str]:
    sde = S.VPSDE()
    den = gmm_2d().denoiser(sde)
    x_T = sde.prior_sample(
        (128, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    rows = ["| sampler | declared strong | measured strong (VP) |", "|---|---|---|"]
    for key, cls in sorted(SAMPLERS.items()):
        if (
            not cls.stochastic
            or cls.run is not Sampler.run
            or not getattr(cls, "strong_convergence", True)
        ):
            continue
        sampler = S.get_sampler(key)
        noise = S.BrownianNoise(seed=7)
        grid = SDE_GRIDS.get(key)  # 3M: on lambda-uniform steps (see the test)

        def solve(n, sampler=sampler, noise=noise, grid=grid):
            return S.sample(
                sampler,
                den,
                x_T=x_T,
                n_steps=n,
                grid=grid or S.UniformTime(),
                noise=noise,
                progress=False,
            ).x

        ref = solve(N_REF)
        errors = [(solve(n) - ref).norm(dim=1).mean().item() for n in SDE_STEPS]
        rows.append(f"| `{key}` | {sampler.order} | {empirical_order(SDE_STEPS, errors):.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the tables to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    text = "\n".join(
        ["### Deterministic samplers: measured ODE order", "", *deterministic_orders(), "",
         "### Stochastic samplers: measured strong order", "", *strong_orders(), ""]
    )  # fmt: skip
    print(text)
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
