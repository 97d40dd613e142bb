r"""Steps-vs-error on exact Gaussian-mixture problems, for every registered sampler and the peers.

For every problem (2-D and 64-D mixtures under the DDPM-linear discrete schedule, the continuous
VP SDE and the VE SDE), every NFE budget and every time grid:

- **deterministic samplers** (``SAMPLERS`` entries with ``stochastic = False``) start from one
  prior draw ``x_T`` and are compared path by path with the reference PF-ODE solution from the
  same ``x_T`` (``scoresde.reference_solution``, scipy DOP853 at rtol = atol = 1e-10). The error
  of sample ``i`` is the RMS over coordinates ``|x_i - x_ref,i|_2 / sqrt(d)``; the table reports
  its median (and mean, 90th percentile, max) over samples;
- **peers** run on the same ``x_T``: diffusers' schedulers (DDPM-linear problems only, their
  schedule) and k-diffusion's samplers (every problem), see ``benchmarks/peers.py``. A peer that
  ends at another noise level (Heun and LMS in diffusers stop at ``sigma = 0``) is compared with
  the reference to that level;
- **stochastic samplers** have no reference path; they get the sliced 2-Wasserstein distance of
  their samples to exact samples of ``p_{t_min}`` in a separate table, with the distance between
  two exact sample sets of the same size as the floor.

Budgets are NFE, not steps: a sampler with ``k`` network calls per step gets the largest step
count whose NFE fits the budget, and the measured NFE is recorded. Every sampler runs through the
public ``scoresde.sample``. Results go to ``benchmarks/results/<date>_<device>/``:
``exact_error.tsv``, ``exact_error_sw.tsv``, ``summary.md``, PNGs and ``env.txt``.

    python -m benchmarks.exact_error            # full run
    python -m benchmarks.exact_error --quick    # small run (fewer samples, NFE and grids)
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import scoresde as S
from benchmarks import peers
from benchmarks.common import git_revision, read_tsv, result_dir, write_env, write_tsv
from scoresde.metrics import sliced_wasserstein

NFES = (5, 6, 8, 10, 15, 20, 50)
QUICK_NFES = (5, 10, 20, 50)
GRIDS: dict[str, Callable[[], S.TimeGrid]] = {
    "uniform_time": S.UniformTime,
    "uniform_lambda": S.UniformLambda,
    "karras": lambda: S.Karras(7.0),
    "quadratic": S.Quadratic,
}
QUICK_GRIDS = ("uniform_time", "uniform_lambda", "karras")
# samplers that also run on an ``Optimized`` grid, fitted per problem and step count on
# ``OPTIMIZED_DRAWS`` prior draws independent of the evaluation draw
OPTIMIZED_SAMPLERS = ("unipc", "deis_3", "dpm_solver_pp_2m", "dpm_solver_3m")
OPTIMIZED_DRAWS = 16
OPTIMIZED_EVALS = 300
# tolerances swept for samplers whose NFE is not fixed by the step count (adaptive)
ADAPTIVE_RTOLS = (3e-1, 1e-1, 3e-2, 1e-2, 1e-3)
PATH_COLUMNS = [
    "problem",
    "dim",
    "sde",
    "family",
    "sampler",
    "grid",
    "nfe_budget",
    "nfe",
    "n_steps",
    "median_error",
    "mean_error",
    "p90_error",
    "max_error",
    "time_s",
    "note",
]
SW_COLUMNS = [
    "problem",
    "dim",
    "sde",
    "family",
    "sampler",
    "grid",
    "nfe_budget",
    "nfe",
    "n_steps",
    "sw2",
    "sw2_floor",
    "n_samples",
    "time_s",
    "note",
]
PEER_FAMILIES = ("diffusers", "k-diffusion")


# -------------------------------------------------------------------------------------------
# Problems


def gmm2d() -> S.GaussianMixture:
    """3 unequal components in 2-D with unequal weights (the tests' ``gmm_2d``)."""
    means = torch.tensor([[1.5, 0.0], [-1.0, 1.0], [-0.5, -1.5]], dtype=torch.float64)
    return S.GaussianMixture(means, stds=torch.tensor([0.5, 0.7, 0.6]), weights=[0.5, 0.3, 0.2])


def gmm64(seed: int = 0) -> S.GaussianMixture:
    """8 components in 64-D: means ``0.5 N(0, I)`` (norm ~4), stds in [0.3, 0.8], random weights."""
    g = torch.Generator().manual_seed(seed)
    means = 0.5 * torch.randn(8, 64, generator=g, dtype=torch.float64)
    stds = 0.3 + 0.5 * torch.rand(8, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(8, generator=g, dtype=torch.float64)
    return S.GaussianMixture(means, stds=stds, weights=weights)


DATA: dict[str, Callable[[], S.GaussianMixture]] = {"gmm2d": gmm2d, "gmm64": gmm64}
SDES: dict[str, Callable[[], S.SDE]] = {
    "ddpm": S.DiscreteVPSDE.linear,  # DDPM's linear betas, N = 1000 (what most users have)
    "vp": S.VPSDE,
    "ve": S.VESDE,
}


@dataclass
class Problem:
    key: str
    data: S.GaussianMixture
    sde: S.SDE
    sde_key: str

    @property
    def dim(self) -> int:
        return self.data.dim


def make_problems(keys: Sequence[str] | None = None) -> list[Problem]:
    """Problems ``<data>_<sde>`` for every data set and SDE (or the given keys)."""
    all_keys = [f"{d}_{s}" for d in DATA for s in SDES]
    keys = all_keys if keys is None else list(keys)
    unknown = sorted(set(keys) - set(all_keys))
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown}; valid: {all_keys}")
    out = []
    for key in keys:
        d, s = key.split("_")
        out.append(Problem(key, DATA[d](), SDES[s](), s))
    return out


# -------------------------------------------------------------------------------------------
# References


class References:
    """Reference solutions of one problem from one prior draw, cached by endpoint noise levels."""

    def __init__(self, problem: Problem, x_T: Tensor):
        self.problem, self.x_T = problem, x_T
        sde = problem.sde
        self.s_start = math.exp(-float(sde.lambda_(sde.T)))
        self.s_end = math.exp(-float(sde.lambda_(sde.t_min)))
        self.alpha_T, self.alpha_end = float(sde.alpha(sde.T)), float(sde.alpha(sde.t_min))
        self._own: Tensor | None = None
        self._between: dict[tuple[float, float], Tensor] = {}
        self.solve_s = 0.0

    def own(self) -> Tensor:
        """The reference from ``x_T`` at ``T`` to ``t_min`` of the problem's SDE."""
        if self._own is None:
            start = time.perf_counter()
            self._own = S.reference_solution(self.problem.data, self.problem.sde, self.x_T).x
            self.solve_s += time.perf_counter() - start
        return self._own

    def between_vp(self, s_start: float, s_end: float) -> Tensor:
        """Reference in the VP variable for a run from VE level ``s_start`` to ``s_end`` that
        started from ``x_T`` (VP) at ``s_start``."""
        key = (s_start, s_end)
        if key not in self._between:
            start = time.perf_counter()
            y = peers.reference_between(
                self.problem.data, self.x_T * math.sqrt(1 + s_start**2), s_start, s_end
            )
            self._between[key] = y / math.sqrt(1 + s_end**2)
            self.solve_s += time.perf_counter() - start
        return self._between[key]


def error_stats(x: Tensor, ref: Tensor) -> dict:
    """Per-sample RMS error over coordinates, summarised over samples."""
    e = (x.to(torch.float64) - ref).flatten(1).norm(dim=1) / math.sqrt(ref[0].numel())
    if not bool(torch.isfinite(e).all()):
        return {
            "median_error": math.nan,
            "mean_error": math.nan,
            "p90_error": math.nan,
            "max_error": math.nan,
            "note": "non-finite samples",
        }
    return {
        "median_error": float(e.median()),
        "mean_error": float(e.mean()),
        "p90_error": float(torch.quantile(e, 0.9)),
        "max_error": float(e.max()),
    }


# -------------------------------------------------------------------------------------------
# Our samplers


def steps_for_budget(sampler: S.Sampler, nfe: int) -> int | None:
    """The largest step count whose NFE is at most ``nfe`` (``None`` if 1 step needs more)."""
    best = None
    for n in range(1, nfe + 1):
        k = sampler.nfe(n)
        if k is not None and k <= nfe:
            best = n
    return best


def is_adaptive(sampler: S.Sampler) -> bool:
    return sampler.nfe(1) is None


def adaptive_variants(key: str) -> list[tuple[str, S.Sampler]]:
    """An adaptive sampler at each tolerance of ``ADAPTIVE_RTOLS`` (if it takes ``rtol`` and
    ``atol``), else with its defaults."""
    out = []
    for rtol in ADAPTIVE_RTOLS:
        try:
            out.append(
                (f"adaptive(rtol={rtol:g})", S.get_sampler(key, rtol=rtol, atol=rtol * 1e-2))
            )
        except (TypeError, ValueError):
            return [("adaptive(defaults)", S.get_sampler(key))]
    return out


def run_ours(
    sampler: S.Sampler, problem: Problem, x_T: Tensor, grid: S.TimeGrid, n_steps: int, seed: int
) -> tuple[S.SampleResult | None, float, str]:
    """One run through ``scoresde.sample``; returns (result or None, seconds, note)."""
    denoiser = problem.data.denoiser(problem.sde, "eps")
    start = time.perf_counter()
    try:
        res = S.sample(
            sampler,
            denoiser,
            x_T=x_T,
            grid=grid,
            n_steps=n_steps,
            progress=False,
            generator=torch.Generator().manual_seed(seed),
        )
    except (FloatingPointError, ValueError, RuntimeError) as err:
        return None, time.perf_counter() - start, f"{type(err).__name__}: {err}"[:200]
    return res, time.perf_counter() - start, ""


def optimized_grid(sampler: S.Sampler, problem: Problem, seed: int) -> S.TimeGrid:
    """An ``Optimized`` grid for ``sampler`` on this problem's exact model, fitted on its own
    prior draws (seed ``seed + 100``, never the evaluation draw)."""
    return S.Optimized(
        sampler,
        problem.data.denoiser(problem.sde, "eps"),
        shape=(OPTIMIZED_DRAWS, *problem.data.event_shape),
        seed=seed + 100,
        max_evals=OPTIMIZED_EVALS,
        progress=False,
    )


def budget_runs(sampler, problem, x_T, grid, nfes, seed, base):
    """One run of ``sampler`` on ``grid`` per NFE budget it fits: yields ``(row, result)``, the
    row holding ``base``, the sampler's key, the budget, the step count, time and note."""
    for budget in nfes:
        n = steps_for_budget(sampler, budget)
        if n is None:
            continue
        res, secs, note = run_ours(sampler, problem, x_T, grid, n, seed)
        row = {**base, "sampler": sampler.name, "nfe_budget": budget, "n_steps": n,
               "time_s": secs, "note": note}  # fmt: skip
        yield row, res


def path_rows_ours(
    problem: Problem,
    refs: References,
    keys: Sequence[str],
    grids: Sequence[str],
    nfes: Sequence[int],
    seed: int,
    optimized: Sequence[str] = (),
) -> list[dict]:
    rows = []
    base = {
        "problem": problem.key,
        "dim": problem.dim,
        "sde": problem.sde_key,
        "family": "scoresde",
    }
    ref = refs.own()
    for key in keys:
        proto = S.get_sampler(key)
        if proto.stochastic:
            continue
        if is_adaptive(proto):
            for label, sampler in adaptive_variants(key):
                res, secs, note = run_ours(sampler, problem, refs.x_T, S.UniformTime(), 1, seed)
                row = {**base, "sampler": key, "grid": label, "time_s": secs, "note": note}
                if res is not None:
                    row.update(
                        nfe=res.nfe, n_steps=res.stats.get("n_steps"), **error_stats(res.x, ref)
                    )
                rows.append(row)
            continue
        grid_makers = {g: GRIDS[g] for g in grids}
        if key in optimized:
            grid_makers["optimized"] = lambda proto=proto: optimized_grid(proto, problem, seed)
        for grid_key, make_grid in grid_makers.items():
            grid = make_grid()  # one object per sampler: Optimized caches a fit per step count
            for row, res in budget_runs(proto, problem, refs.x_T, grid, nfes, seed, base):
                row["grid"] = grid_key
                if res is not None:
                    row.update(nfe=res.nfe, **error_stats(res.x, ref))
                rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------
# Peers


def path_rows_diffusers(problem: Problem, refs: References, nfes: Sequence[int]) -> list[dict]:
    if not isinstance(problem.sde, S.DiscreteVPSDE) or not peers.diffusers_available():
        return []
    rows = []
    base = {
        "problem": problem.key,
        "dim": problem.dim,
        "sde": problem.sde_key,
        "family": "diffusers",
    }
    betas = problem.sde.betas
    for method in peers.DIFFUSERS_METHODS:
        for spacing in peers.DIFFUSERS_SPACINGS:
            for budget in nfes:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    n = peers.diffusers_steps_for_nfe(method, spacing, betas, budget)
                    if n is None:
                        continue
                    start = time.perf_counter()
                    try:
                        run = peers.run_diffusers(method, spacing, betas, problem.data, refs.x_T, n)
                    except (ValueError, RuntimeError, IndexError) as err:
                        rows.append(
                            {
                                **base,
                                "sampler": method,
                                "grid": spacing,
                                "nfe_budget": budget,
                                "n_steps": n,
                                "note": f"{type(err).__name__}: {err}"[:200],
                            }
                        )
                        continue
                secs = time.perf_counter() - start
                ref = refs.between_vp(run.s_start, run.s_end)
                note = "ends at sigma=0" if run.s_end == 0.0 else ""
                rows.append(
                    {
                        **base,
                        "sampler": method,
                        "grid": spacing,
                        "nfe_budget": budget,
                        "n_steps": n,
                        "nfe": run.nfe,
                        "time_s": secs,
                        "note": note,
                        **error_stats(run.x, ref),
                    }
                )
    return rows


def k_sigmas(sde: S.SDE, grid: S.TimeGrid, n_steps: int) -> Tensor:
    """The VE noise levels ``exp(-lambda_(t_i))`` of a scoresde grid (k-diffusion's input)."""
    return torch.exp(-sde.lambda_(grid.grid(sde, n_steps)))


def path_rows_k_diffusion(
    problem: Problem, refs: References, grids: Sequence[str], nfes: Sequence[int]
) -> list[dict]:
    if not peers.k_diffusion_available():
        return []
    rows = []
    base = {
        "problem": problem.key,
        "dim": problem.dim,
        "sde": problem.sde_key,
        "family": "k-diffusion",
    }
    ref_vp = refs.own()
    y_T = refs.x_T / refs.alpha_T

    def record(name, grid, budget, n_steps, fn):
        start = time.perf_counter()
        try:
            run = fn()
        except (ValueError, RuntimeError, FloatingPointError) as err:
            rows.append(
                {
                    **base,
                    "sampler": name,
                    "grid": grid,
                    "nfe_budget": budget,
                    "n_steps": n_steps,
                    "note": f"{type(err).__name__}: {err}"[:200],
                }
            )
            return
        secs = time.perf_counter() - start
        rows.append(
            {
                **base,
                "sampler": name,
                "grid": grid,
                "nfe_budget": budget,
                "n_steps": n_steps,
                "nfe": run.nfe,
                "time_s": secs,
                **error_stats(run.x * refs.alpha_end, ref_vp),
            }
        )

    for name, per_step in peers.K_DIFFUSION_FIXED.items():
        for grid_key in grids:
            for budget in nfes:
                n = budget // per_step
                if n < 1:
                    continue
                sigmas = k_sigmas(problem.sde, GRIDS[grid_key](), n)
                record(
                    name,
                    grid_key,
                    budget,
                    n,
                    lambda s=sigmas, k=name: peers.run_k_diffusion(k, problem.data, y_T, s),
                )
    s_max, s_min = refs.s_start, refs.s_end
    for budget in nfes:
        record(
            "dpm_fast",
            "own (uniform lambda)",
            budget,
            None,
            lambda b=budget: peers.run_k_diffusion(
                "dpm_fast", problem.data, y_T, sigma_min=s_min, sigma_max=s_max, nfe=b
            ),
        )
    for rtol in ADAPTIVE_RTOLS:
        record(
            "dpm_adaptive",
            f"adaptive(rtol={rtol:g})",
            None,
            None,
            lambda r=rtol: peers.run_k_diffusion(
                "dpm_adaptive",
                problem.data,
                y_T,
                sigma_min=s_min,
                sigma_max=s_max,
                rtol=r,
                atol=r * 1e-2,
            ),
        )
    return rows


# -------------------------------------------------------------------------------------------
# Stochastic samplers: sliced Wasserstein to exact samples


def sw_rows(
    problem: Problem,
    keys: Sequence[str],
    grids: Sequence[str],
    nfes: Sequence[int],
    n_samples: int,
    seed: int,
) -> list[dict]:
    stochastic = [k for k in keys if S.SAMPLERS[k].stochastic]
    if not stochastic:
        return []
    sde, data = problem.sde, problem.data
    exact = data.sample_marginal(
        sde, sde.t_min, n_samples, generator=torch.Generator().manual_seed(seed + 1)
    )
    exact2 = data.sample_marginal(
        sde, sde.t_min, n_samples, generator=torch.Generator().manual_seed(seed + 2)
    )

    def sw(x):  # the same projection directions for every row
        return sliced_wasserstein(
            x, exact, n_projections=256, generator=torch.Generator().manual_seed(seed + 3)
        )

    floor = sw(exact2)
    x_T = sde.prior_sample(
        (n_samples, *data.event_shape),
        generator=torch.Generator().manual_seed(seed + 4),
        dtype=torch.float64,
    )
    base = {
        "problem": problem.key,
        "dim": problem.dim,
        "sde": problem.sde_key,
        "family": "scoresde",
        "sw2_floor": floor,
        "n_samples": n_samples,
    }
    rows = []
    for key in stochastic:
        proto = S.get_sampler(key)
        for grid_key in grids:
            for row, res in budget_runs(
                proto, problem, x_T, GRIDS[grid_key](), nfes, seed + 5, base
            ):
                row["grid"] = grid_key
                if res is not None:
                    finite = bool(torch.isfinite(res.x).all())
                    row.update(nfe=res.nfe, sw2=sw(res.x) if finite else math.nan)
                    if not finite:
                        row["note"] = "non-finite samples"
                rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------
# Summary


def best_row(rows: list[dict], budget: int, metric: str = "median_error", **match) -> dict | None:
    """The row with the smallest finite ``metric`` among those with measured NFE <= ``budget``
    that match the given columns."""
    ok = [
        r
        for r in rows
        if all(r.get(k) == v for k, v in match.items())
        and isinstance(r.get("nfe"), int)
        and r["nfe"] <= budget
        and isinstance(r.get(metric), (int, float))
        and math.isfinite(r[metric])
    ]
    return min(ok, key=lambda r: r[metric]) if ok else None


def _cell(row: dict | None, metric: str = "median_error") -> str:
    if row is None:
        return "—"
    return f"{row[metric]:.3e} (`{row['sampler']}`, {row['grid']}, {row['nfe']} NFE)"


def summarize(rows: list[dict], sw: list[dict], *, claim_nfes=(10, 20), header: str = "") -> str:
    """The markdown summary: the issue-4 comparison on DDPM-linear problems, best per family at
    every budget, and the stochastic samplers' SW table."""
    out = [header, ""] if header else []
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    budgets = sorted({r["nfe_budget"] for r in rows if isinstance(r.get("nfe_budget"), int)})
    ddpm = [p for p in problems if p.endswith("_ddpm")]
    out += [
        "## Our best vs the best peer on the DDPM-linear schedule (issue 4)",
        "",
        "Median per-sample RMS error vs the DOP853 reference, same prior draw, best sampler and",
        "grid per family among runs with measured NFE <= budget. The claim to check: ours / best",
        "peer <= 0.5.",
        "",
        "| problem | NFE | best scoresde | best diffusers | best k-diffusion "
        "| ours / best peer | <= 0.5 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in ddpm:
        for b in claim_nfes:
            ours = best_row(rows, b, problem=p, family="scoresde")
            dif = best_row(rows, b, problem=p, family="diffusers")
            kd = best_row(rows, b, problem=p, family="k-diffusion")
            peer = min(
                [r for r in (dif, kd) if r is not None],
                key=lambda r: r["median_error"],
                default=None,
            )
            ratio = ours["median_error"] / peer["median_error"] if ours and peer else math.nan
            verdict = "—" if math.isnan(ratio) else ("yes" if ratio <= 0.5 else "**no**")
            cells = " | ".join(_cell(r) for r in (ours, dif, kd))
            out.append(f"| {p} | {b} | {cells} | {ratio:.3g} | {verdict} |")
    out += [
        "",
        "## Every method's best grid at the claim budgets, DDPM-linear problems",
        "",
        "Median per-sample RMS error at NFE <= budget, with the best grid (or spacing).",
        "",
    ]
    for p in ddpm:
        prow = [r for r in rows if r["problem"] == p]
        head = " | ".join(f"NFE <= {b}" for b in claim_nfes)
        out += [
            f"### {p}",
            "",
            f"| family | method | {head} |",
            "| --- | --- |" + " --- |" * len(claim_nfes),
        ]
        methods = dict.fromkeys((r["family"], r["sampler"]) for r in prow)
        for fam, name in sorted(methods, key=lambda m: (m[0] != "scoresde", m[0], m[1])):
            cells = []
            for b in claim_nfes:
                r = best_row(prow, b, family=fam, sampler=name)
                cells.append("—" if r is None else f"{r['median_error']:.3e} ({r['grid']})")
            out.append(f"| {fam} | `{name}` | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Best per family at every NFE budget (median per-sample RMS error)", ""]
    families = ["scoresde", *PEER_FAMILIES]
    for p in problems:
        out += [
            f"### {p}",
            "",
            "| NFE <= | " + " | ".join(families) + " |",
            "| --- |" + " --- |" * len(families),
        ]
        for b in budgets:
            cells = [_cell(best_row(rows, b, problem=p, family=f)) for f in families]
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        out.append("")
    if sw:
        out += ["## Stochastic samplers: sliced W2 to exact samples of p(t_min) (best grid)", ""]
        for p in list(dict.fromkeys(r["problem"] for r in sw)):
            prow = [r for r in sw if r["problem"] == p]
            floor = prow[0]["sw2_floor"]
            out += [
                f"### {p} (floor: two exact sample sets, {floor:.3e}; n = {prow[0]['n_samples']})",
                "",
                "| sampler | " + " | ".join(f"NFE <= {b}" for b in budgets) + " |",
                "| --- |" + " --- |" * len(budgets),
            ]
            for key in dict.fromkeys(r["sampler"] for r in prow):
                cells = []
                for b in budgets:
                    r = best_row(prow, b, metric="sw2", sampler=key)
                    cells.append("—" if r is None else f"{r['sw2']:.3e} ({r['grid']})")
                out.append(f"| `{key}` | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------


@dataclass
class Config:
    problems: list[str] | None = None
    samplers: list[str] | None = None
    nfes: tuple[int, ...] = NFES
    grids: tuple[str, ...] = tuple(GRIDS)
    n_paths: int = 512
    n_paths_high_dim: int = 256
    n_dist: int = 20000
    n_dist_high_dim: int = 5000
    peers: bool = True
    seed: int = 0
    optimized: tuple[str, ...] = OPTIMIZED_SAMPLERS

    @classmethod
    def quick(cls) -> Config:
        return cls(
            nfes=QUICK_NFES,
            grids=QUICK_GRIDS,
            n_paths=64,
            n_paths_high_dim=32,
            n_dist=1000,
            n_dist_high_dim=500,
            optimized=(),
        )


def run(cfg: Config, *, log: Callable[[str], None] = print) -> tuple[list[dict], list[dict], dict]:
    """The whole benchmark: path rows, SW rows and timings (seconds per part)."""
    keys = sorted(S.SAMPLERS) if cfg.samplers is None else list(cfg.samplers)
    unknown = sorted(set(keys) - set(S.SAMPLERS))
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; registered: {sorted(S.SAMPLERS)}")
    unknown = sorted(set(cfg.grids) - set(GRIDS))
    if unknown:
        raise ValueError(f"unknown grid(s) {unknown}; valid: {sorted(GRIDS)}")
    rows, sw = [], []
    timings = {
        "reference": 0.0,
        "scoresde": 0.0,
        "diffusers": 0.0,
        "k-diffusion": 0.0,
        "stochastic": 0.0,
    }
    for problem in make_problems(cfg.problems):
        high = problem.dim > 2
        n = cfg.n_paths_high_dim if high else cfg.n_paths
        x_T = problem.sde.prior_sample(
            (n, *problem.data.event_shape),
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        refs = References(problem, x_T)
        optimized = [k for k in cfg.optimized if k in keys]
        parts = [("scoresde", path_rows_ours, (keys, cfg.grids, cfg.nfes, cfg.seed, optimized))]
        if cfg.peers:
            parts += [
                ("diffusers", path_rows_diffusers, (cfg.nfes,)),
                ("k-diffusion", path_rows_k_diffusion, (cfg.grids, cfg.nfes)),
            ]
        for name, fn, fn_args in parts:
            start, solve0 = time.perf_counter(), refs.solve_s
            new = fn(problem, refs, *fn_args)
            timings[name] += time.perf_counter() - start - (refs.solve_s - solve0)
            rows += new
            log(f"{problem.key}: {name}: {len(new)} runs")
        timings["reference"] += refs.solve_s
        start = time.perf_counter()
        new = sw_rows(
            problem,
            keys,
            cfg.grids,
            cfg.nfes,
            cfg.n_dist_high_dim if high else cfg.n_dist,
            cfg.seed,
        )
        timings["stochastic"] += time.perf_counter() - start
        sw += new
        log(f"{problem.key}: stochastic: {len(new)} runs")
    return rows, sw, timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.exact_error", description=__doc__.split("\n\n")[0]
    )
    revision = git_revision()
    parser.add_argument(
        "--quick", action="store_true", help="small run: fewer samples, NFE and grids"
    )
    parser.add_argument("--problems", nargs="+", help="subset of <data>_<sde> keys (default: all)")
    parser.add_argument("--samplers", nargs="+", help="subset of registry keys (default: all)")
    parser.add_argument("--nfe", nargs="+", type=int, help=f"NFE budgets (default {list(NFES)})")
    parser.add_argument("--grids", nargs="+", help=f"time grids (default {list(GRIDS)})")
    parser.add_argument("--no-peers", action="store_true", help="skip diffusers and k-diffusion")
    parser.add_argument(
        "--optimized",
        nargs="*",
        help=f"samplers that also run on a fitted Optimized grid (default {list(OPTIMIZED_SAMPLERS)}"
        ", none with --quick; give no names for none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", help="result folder (default benchmarks/results/<date>_cpu[_quick])"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = Config.quick() if args.quick else Config()
    cfg.problems, cfg.samplers, cfg.peers, cfg.seed = (
        args.problems,
        args.samplers,
        not args.no_peers,
        args.seed,
    )
    if args.nfe:
        cfg.nfes = tuple(args.nfe)
    if args.grids:
        cfg.grids = tuple(args.grids)
    if args.optimized is not None:
        cfg.optimized = tuple(args.optimized)
    folder = result_dir("cpu", suffix="_quick" if args.quick else "", out=args.out)
    start = time.perf_counter()
    rows, sw, timings = run(cfg)
    wall = time.perf_counter() - start
    write_tsv(folder / "exact_error.tsv", rows, PATH_COLUMNS)
    if sw:
        write_tsv(folder / "exact_error_sw.tsv", sw, SW_COLUMNS)
    from benchmarks.plot import plot_exact_error, plot_sw

    plot_exact_error(rows, folder / "exact_error.png")
    plot_exact_error(rows, folder / "exact_error_best.png", envelope=True)
    if sw:
        plot_sw(sw, folder / "exact_error_sw.png")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    write_env(
        folder,
        git_sha=revision,
        device="cpu",
        seeds={
            "prior draw": cfg.seed,
            "noise": cfg.seed + 5,
            "exact samples": f"{cfg.seed + 1}, {cfg.seed + 2}",
        },
        extra={"wall_time_s": f"{wall:.0f} ({times})", "config": repr(cfg)},
    )
    header = f"# exact_error summary ({folder.name})\n\nRun: see env.txt (wall time {wall:.0f} s)."
    text = summarize(
        read_tsv(folder / "exact_error.tsv"),
        read_tsv(folder / "exact_error_sw.tsv") if sw else [],
        header=header,
    )
    (folder / "summary.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {folder} in {wall:.0f} s ({times})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
