r"""Steps-vs-error of every deterministic sampler on flow-matching problems, from pure noise.

The setting of a flow-matching model (SD3, Flux): :class:`scoresde.RectifiedFlow`
(``x_t = (1 - t) x0 + t eps``), the model a velocity (``flow``) predictor, sampling from
``T = 1`` exactly (``alpha = 0``). The model is the closed-form velocity of a Gaussian mixture
(``gmm2d``: 3 components in 2-D; ``gmm64``: 8 in 64-D, as in ``benchmarks/exact_error.py``), so
every error is the solver's. Each deterministic fixed-step sampler runs on two grids:

- ``shift1``: diffusers' ``FlowMatchEulerDiscreteScheduler`` grid with ``shift = 1`` (uniform in
  ``t`` from 1 to ``1/N``),
- ``shift3``: the same with ``shift = 3`` (Stable Diffusion 3's default),

and is compared path by path with the reference PF-ODE solution from the same ``x_T`` to the
grid's last time (``scoresde.reference_solution``, DOP853 at rtol = atol = 1e-10, started in
``w = e^lambda`` at ``lambda = -inf``). Error of a sample: ``|x - x_ref|_2 / sqrt(d)``; the table
gives the median over samples. Budgets are NFE: each sampler gets the largest step count whose
measured NFE fits (a sampler whose step is not finite at ``alpha = 0`` takes its first step as
the one-NFE ``lambda -> -inf`` limit, see ``scoresde.samplers.zero_snr.zero_snr_first_step``).

    python -m benchmarks.flow_error            # ~1 min on one CPU thread
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

import scoresde as S
from benchmarks.common import git_revision, result_dir, write_env, write_tsv
from benchmarks.exact_error import DATA
from scoresde.samplers import SAMPLERS, Sampler

NFES = (5, 6, 8, 10, 15, 20)
GRIDS = {"shift1": lambda: S.FlowMatchShift(1.0), "shift3": lambda: S.FlowMatchShift(3.0)}
SAMPLES = {"gmm2d": 512, "gmm64": 256}


def deterministic_keys() -> list[str]:
    keys = []
    for key, cls in sorted(SAMPLERS.items()):
        fixed = cls.run is Sampler.run or getattr(cls, "fixed_grid", False)
        if not cls.stochastic and cls.nfe_per_step is not None and fixed:
            keys.append(key)
    return keys


def nfe_of(sampler: S.Sampler, n_steps: int) -> int:
    """NFE from ``alpha = 0``: samplers without a finite step there spend one NFE on the first."""
    if sampler.zero_snr_start:
        return sampler.nfe(n_steps)
    return 1 + (sampler.nfe(n_steps - 1) if n_steps > 1 else 0)


def steps_for(sampler: S.Sampler, budget: int) -> int | None:
    fits = [n for n in range(1, budget + 1) if nfe_of(sampler, n) <= budget]
    return max(fits) if fits else None


def run(nfes: Sequence[int], seed: int, log=print) -> list[dict]:
    sde = S.RectifiedFlow(t_min=1e-4)
    rows = []
    for data_key, samples in SAMPLES.items():
        data = DATA[data_key]()
        den = data.denoiser(sde, "flow")
        gen = torch.Generator().manual_seed(seed)
        x_T = sde.prior_sample((samples, data.dim), generator=gen, dtype=torch.float64)
        refs: dict[float, torch.Tensor] = {}
        for grid_key, make in GRIDS.items():
            for key in deterministic_keys():
                sampler = S.get_sampler(key)
                for budget in nfes:
                    n = steps_for(sampler, budget)
                    if n is None:
                        continue
                    grid = make()
                    t_end = float(grid.grid(sde, n)[-1])
                    if t_end not in refs:
                        refs[t_end] = S.reference_solution(data, sde, x_T, t_end=t_end).x
                    res = S.sample(sampler, den, x_T=x_T, grid=grid, n_steps=n, progress=False)
                    err = (res.x - refs[t_end]).norm(dim=1) / data.dim**0.5
                    rows.append({"problem": data_key, "grid": grid_key, "sampler": key,
                                 "nfe_budget": budget, "nfe": res.nfe, "n_steps": n,
                                 "median_error": float(err.median())})  # fmt: skip
            log(f"{data_key} {grid_key}: done")
    return rows


def summarize(rows: list[dict], nfes: Sequence[int]) -> str:
    out = []
    for problem in SAMPLES:
        for grid in GRIDS:
            sel = [r for r in rows if r["problem"] == problem and r["grid"] == grid]
            if not sel:
                continue
            out.append(f"\n**{problem}, {grid}** (median RMS error; best per column in bold)\n")
            out.append("| sampler | " + " | ".join(f"NFE {b}" for b in nfes) + " |")
            out.append("| --- |" + " ---: |" * len(nfes))
            best = {b: min((r["median_error"] for r in sel if r["nfe_budget"] == b),
                           default=None) for b in nfes}  # fmt: skip
            for key in sorted({r["sampler"] for r in sel}):
                cells = []
                for b in nfes:
                    r = [x for x in sel if x["sampler"] == key and x["nfe_budget"] == b]
                    if not r:
                        cells.append("—")
                        continue
                    e = r[0]["median_error"]
                    cells.append(f"**{e:.2e}**" if e == best[b] else f"{e:.2e}")
                out.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nfe", nargs="+", type=int, default=list(NFES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="result folder (default benchmarks/results/<date>_cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sha = git_revision()
    rows = run(args.nfe, args.seed)
    folder = result_dir("cpu", out=args.out)
    cols = ["problem", "grid", "sampler", "nfe_budget", "nfe", "n_steps", "median_error"]
    write_tsv(folder / "flow_error.tsv", rows, cols)
    (folder / "flow_error.md").write_text(summarize(rows, args.nfe))
    write_env(folder, device="cpu", seeds={"x_T": args.seed}, git_sha=sha, name="env_flow.txt")
    print(f"wrote {folder}/flow_error.tsv and flow_error.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
