"""``python -m scoresde demo``: every registered sampler on an exact 2-D Gaussian mixture.

The data are an 8-component ring whose score is closed-form under the VP SDE, so there is a
reference answer for both kinds of sampler. Every sampler runs on its own default grid
(``Sampler.default_grid``), as ``scoresde.sample`` does when no grid is given:

- deterministic samplers integrate the probability-flow ODE from the same prior draw; their error
  is the median per-sample distance to the scipy DOP853 solution (rtol = atol = 1e-10);
- stochastic samplers are compared in distribution: the sliced Wasserstein distance between their
  samples and exact draws from ``p_{t_min}``, beside the same distance between two exact draws
  (the Monte-Carlo floor). Every run is driven by the same Brownian path
  (:class:`~scoresde.noise.BrownianNoise`), so the column changes with the step count only.

At 5 steps ``sde_dpm_solver_1`` stays well above the floor (sliced Wasserstein ~0.5 on its
Karras grid, 24 on a logSNR-uniform one): its noise-prediction form amplifies the model's error
by ``e^h`` on long steps at high noise (see its docstring); from 10 steps on it is at the floor.

No downloads; a couple of minutes on a laptop CPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .exact import reference_solution, ring_mixture
from .metrics.distances import sliced_wasserstein
from .noise import BrownianNoise
from .samplers import SAMPLERS, get_sampler, sample
from .sde import VPSDE
from .utils import check_device, check_int, check_writable

__all__ = ["run_demo"]

# the picture formats matplotlib writes without extra packages
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")

# NCSN's 100 Langevin steps per noise level would spend 5000 NFE at n_steps=50, two thirds of
# the demo's time; 5 per level keeps it in the table at a comparable budget
DEMO_OPTIONS = {"annealed_langevin": {"n_steps_each": 5}}


def run_demo(
    *,
    out: str | Path = "scoresde_demo.png",
    n_samples: int = 2000,
    step_counts: tuple[int, ...] = (5, 10, 20, 50),
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Run the demo, print the table, write the picture; returns the table rows."""
    check_device("device", device)
    check_int("n_samples", n_samples, low=2)
    check_int("seed", seed, low=0)
    if not step_counts:
        raise ValueError("step_counts must hold at least one n_steps")
    for n in step_counts:
        check_int("n_steps", n, low=1)
    out = check_writable("out", out, IMAGE_SUFFIXES)
    torch.manual_seed(seed)
    sde = VPSDE()
    data = ring_mixture(k=8, radius=2.0, std=0.25)
    den = data.denoiser(sde)
    gen = torch.Generator().manual_seed(seed)
    x_T = sde.prior_sample((n_samples, 2), generator=gen, dtype=torch.float64).to(device)
    start = time.perf_counter()
    ref = reference_solution(data, sde, x_T)
    ref_x = ref.x.to(device)
    exact = data.sample_marginal(sde, sde.t_min, n_samples, generator=gen)
    exact2 = data.sample_marginal(sde, sde.t_min, n_samples, generator=gen)
    floor = sliced_wasserstein(exact, exact2, generator=torch.Generator().manual_seed(seed))
    print(
        f"exact problem: {data!r} under {sde!r}; {n_samples} samples, each sampler on its "
        f"default grid\n"
        f"reference PF-ODE: scipy DOP853 rtol=atol=1e-10, {ref.nfe} RHS evaluations\n"
        f"SW distance between two exact draws (Monte-Carlo floor): {floor:.4f}\n"
    )
    rows = []
    keys = sorted(SAMPLERS)
    for key in keys:
        sampler = get_sampler(key, **DEMO_OPTIONS.get(key, {}))
        for n in step_counts:
            t0 = time.perf_counter()
            # one Brownian path for every step count: the SW column then shows the
            # discretisation, not a new Monte-Carlo draw per cell
            res = sample(sampler, den, x_T=x_T, n_steps=n, progress=False,
                         noise=BrownianNoise(seed))  # fmt: skip
            seconds = time.perf_counter() - t0
            x = res.x.to("cpu", torch.float64)
            sw = sliced_wasserstein(x, exact, generator=torch.Generator().manual_seed(seed))
            err = math.nan if sampler.stochastic else (res.x - ref_x).norm(dim=1).median().item()
            rows.append(dict(sampler=key, stochastic=sampler.stochastic, order=sampler.order,
                             n_steps=n, nfe=res.nfe, error=err, sw=sw, seconds=seconds, x=x))  # fmt: skip
        if progress:
            print(f"  {key:<24s} done", flush=True)
    print(_format(rows, step_counts))
    print(f"\ntotal time {time.perf_counter() - start:.1f} s")
    _plot(rows, exact, Path(out), floor)
    print(f"wrote {out}")
    return rows


def _format(rows, step_counts) -> str:
    header = f"{'sampler':<24s} {'order':>5s}  " + "  ".join(
        f"{f'n_steps={n}':>18s}" for n in step_counts
    )
    lines = ["deterministic: median per-sample error vs reference (NFE)", header]
    for stochastic in (False, True):
        if stochastic:
            lines += ["", "stochastic: sliced Wasserstein to exact samples (NFE)", header]
        for key in sorted({r["sampler"] for r in rows if r["stochastic"] == stochastic}):
            cells = [r for r in rows if r["sampler"] == key]
            vals = [
                f"{(r['sw'] if stochastic else r['error']):.2e} ({r['nfe']:>3d})" for r in cells
            ]
            lines.append(
                f"{key:<24s} {cells[0]['order']:>5}  " + "  ".join(f"{v:>18s}" for v in vals)
            )
    return "\n".join(lines)


def _same_curve(a: list, b: list) -> bool:
    """Equal NFE and errors equal to 1e-9 relative (the same method under two names)."""
    return len(a) == len(b) and all(
        n == m and (e == f or abs(e - f) <= 1e-9 * max(abs(e), abs(f)))
        for (n, e), (m, f) in zip(a, b, strict=True)
    )


def _plot(rows, exact, path: Path, floor: float) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    ax.scatter(exact[:, 0], exact[:, 1], s=2, c="0.6", label="exact")
    det = [r for r in rows if not r["stochastic"] and r["nfe"] <= 10]
    if det:
        best = min(det, key=lambda r: r["error"])
        ax.scatter(best["x"][:, 0], best["x"][:, 1], s=2, c="C3",
                   label=f"{best['sampler']} ({best['nfe']} NFE)")  # fmt: skip
    ax.set_title("samples at t_min")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    for ax, stochastic, metric, label in (
        (axes[1], False, "error", "median error vs reference"),
        (axes[2], True, "sw", "sliced Wasserstein to exact"),
    ):
        curves: dict[str, list] = {}  # name -> points; samplers with equal points share one
        for key in sorted({r["sampler"] for r in rows if r["stochastic"] == stochastic}):
            pts = [(r["nfe"], r[metric]) for r in rows if r["sampler"] == key]
            twin = next((k for k, v in curves.items() if _same_curve(v, pts)), None)
            if twin is None:
                curves[key] = pts
            else:
                curves[f"{twin} = {key}"] = curves.pop(twin)
        for j, (name, pts) in enumerate(curves.items()):
            # 10 colours x 4 line styles x 7 markers: no two curves look alike
            ax.loglog(*zip(*pts, strict=True), color=f"C{j % 10}", ls=("-", "--", ":", "-.")[j // 10 % 4],
                      marker="osD^v<>"[j % 7], ms=3.5, lw=1.3, label=name)  # fmt: skip
        lo, hi = min(r["nfe"] for r in rows), max(r["nfe"] for r in rows)
        ticks = [v for v in (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if lo <= v <= hi]
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if stochastic:
            ax.axhline(floor, color="k", ls=":", label="two exact draws")
        ax.set_xlabel("NFE")
        ax.set_ylabel(label)
        ax.set_title(("stochastic" if stochastic else "deterministic (PF-ODE)") + " samplers")
        ax.legend(fontsize=6, ncol=2)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
