r"""Low-precision sampling: the error of float32, bfloat16 and float16 states against float64.

Every run of a sampler starts from the same float64 prior draw (rounded to the run's dtype) and,
for stochastic samplers, takes the same noise (drawn in float64, then rounded), so the difference
between a low-precision run and the float64 run is the rounding alone. The error of a sample is
``|x - x_64|_2 / sqrt(d)``; the tables give its median and maximum over the samples.

* **Exact problems** (``scoresde.exact``): Gaussian mixtures under the DDPM-linear, VP and VE
  schedules. The closed-form "network" computes in float64 and returns the state's dtype, so
  these numbers isolate the sampler's own arithmetic. For deterministic samplers the float64
  run's distance to the exact probability-flow solution (``discretisation``) is given beside
  them: rounding matters where it is not far below that.
* **MNIST** (``--ckpt``, default ``benchmarks/checkpoints/mnist_vp_unet.pt``): the trained UNet
  cast to each dtype, a few samples, the difference to the float64 and float32 runs in model
  space (pixels in ``[-1, 1]``). float16 convolutions are slow on the CPU (~15x float32).

    python -m benchmarks.precision            # ~2 min on one CPU thread

Outputs ``precision.tsv``, ``precision_mnist.tsv``, ``precision.md`` and ``env_precision.txt``
in ``benchmarks/results/<date>_<device>/``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

import scoresde as S
from benchmarks.common import REPO, git_revision, result_dir, write_env, write_tsv
from benchmarks.exact_error import make_problems, steps_for_budget

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EXACT_SAMPLERS = (
    "ddim",
    "dpm_solver_2s",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_3m",
    "unipc",
    "deis_3",
    "pf_heun",
    "euler_maruyama",
    "ancestral",
    "sde_dpm_solver_pp_2m",
)
EXACT_PROBLEMS = ("gmm64_ddpm", "gmm64_vp", "gmm64_ve")
MNIST_SAMPLERS = ("dpm_solver_pp_2m", "unipc", "ddim", "euler_maruyama")
COLUMNS = ["problem", "sampler", "nfe", "n_steps", "dtype", "median_error", "max_error",
           "discretisation", "time_s"]  # fmt: skip
MNIST_COLUMNS = ["sampler", "nfe", "dtype", "rms_vs_float64", "max_rms_vs_float64",
                 "rms_vs_float32", "max_abs_vs_float64", "time_s"]  # fmt: skip


class Float64Noise(S.NoiseSource):
    """``inner``'s draws made in float64 and rounded to the state's dtype: every precision gets
    the same noise up to its own rounding."""

    def __init__(self, inner: S.NoiseSource):
        self.inner = inner

    def bind(self, ts, like):
        self.inner.bind(ts, torch.empty(like.shape, dtype=torch.float64))

    def __call__(self, t, t_next, like):
        return self.inner(t, t_next, torch.empty(like.shape, dtype=torch.float64)).to(like.dtype)

    def extra(self, like):
        return self.inner.extra(torch.empty(like.shape, dtype=torch.float64)).to(like.dtype)


def rms(x: Tensor, ref: Tensor) -> Tensor:
    """Per-sample ``|x - ref|_2 / sqrt(d)`` in float64."""
    return (x.to(torch.float64) - ref.to(torch.float64)).flatten(1).pow(2).mean(1).sqrt()


def run(key, denoiser, x_T64, dtype, n_steps, seed) -> tuple[Tensor, float]:
    noise = Float64Noise(S.GaussianNoise(torch.Generator().manual_seed(seed)))
    start = time.perf_counter()
    res = S.sample(key, denoiser, x_T=x_T64.to(dtype), grid=S.UniformLambda(), n_steps=n_steps,
                   noise=noise, progress=False)  # fmt: skip
    return res.x, time.perf_counter() - start


def exact_rows(samplers: Sequence[str], problems: Sequence[str], nfes: Sequence[int], n: int,
               seed: int) -> list[dict]:  # fmt: skip
    rows = []
    for problem in make_problems(problems):
        sde = problem.sde
        x_T = sde.prior_sample((n, problem.dim), generator=torch.Generator().manual_seed(seed),
                               dtype=torch.float64)  # fmt: skip
        exact = None
        for key in samplers:
            sampler = S.get_sampler(key)
            for nfe in nfes:
                n_steps = steps_for_budget(sampler, nfe)
                if n_steps is None:
                    continue
                den = problem.data.denoiser(sde, "eps")
                x64, _ = run(key, den, x_T, torch.float64, n_steps, seed + 1)
                disc = None
                if not sampler.stochastic:
                    if exact is None:
                        exact = S.reference_solution(problem.data, sde, x_T).x
                    disc = float(rms(x64, exact).median())
                for name, dtype in DTYPES.items():
                    x, secs = run(key, den, x_T, dtype, n_steps, seed + 1)
                    e = rms(x, x64)
                    rows.append({
                        "problem": problem.key, "sampler": key, "nfe": nfe, "n_steps": n_steps,
                        "dtype": name, "median_error": float(e.median()),
                        "max_error": float(e.max()), "discretisation": disc, "time_s": secs,
                    })  # fmt: skip
    return rows


def mnist_rows(ckpt: Path, samplers: Sequence[str], nfe: int, n: int, seed: int) -> list[dict]:
    from benchmarks.fid_inputs import load_checkpoint

    model = load_checkpoint(ckpt, "cpu")
    base = model.denoiser
    x_T = base.sde.prior_sample((n, *model.shape), generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float64)  # fmt: skip
    dens = {}
    for name, dtype in {"float64": torch.float64, **DTYPES}.items():
        net = copy.deepcopy(base.net).to(dtype)
        dens[name] = S.Denoiser(net, base.sde, base.parameterization, time_input=base.time_input)
    rows = []
    for key in samplers:
        n_steps = steps_for_budget(S.get_sampler(key), nfe)
        out, secs = {}, {}
        for name, den in dens.items():
            out[name], secs[name] = run(key, den, x_T, den.net.parameters().__next__().dtype,
                                        n_steps, seed + 1)  # fmt: skip
        for name in DTYPES:
            e64, e32 = rms(out[name], out["float64"]), rms(out[name], out["float32"])
            diff = (out[name].to(torch.float64) - out["float64"]).abs().max()
            rows.append({
                "sampler": key, "nfe": nfe, "dtype": name, "rms_vs_float64": float(e64.median()),
                "max_rms_vs_float64": float(e64.max()), "rms_vs_float32": float(e32.median()),
                "max_abs_vs_float64": float(diff), "time_s": secs[name],
            })  # fmt: skip
    return rows


def markdown(rows: list[dict], mnist: list[dict]) -> str:
    """The tables of ``precision.md``: per exact problem, each sampler's median error against the
    float64 run at every NFE, beside the float64 run's discretisation error; then MNIST."""
    lines = ["### Exact problems (median RMS difference to the float64 run)", ""]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == problem]
        lines += [f"`{problem}`:", "",
                  "| sampler | NFE | float32 | bfloat16 | float16 | float64 discretisation |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for key, nfe in dict.fromkeys((r["sampler"], r["nfe"]) for r in sub):
            cells = {r["dtype"]: r for r in sub if r["sampler"] == key and r["nfe"] == nfe}
            vals = [_fmt(cells[d]["median_error"]) for d in DTYPES]
            disc = _fmt(cells["float32"]["discretisation"])
            lines.append(f"| `{key}` | {nfe} | " + " | ".join(vals) + f" | {disc} |")
        lines.append("")
    if mnist:
        nfe = mnist[0]["nfe"]
        lines += [f"### MNIST UNet, {nfe} NFE (pixels in [-1, 1])", "",
                  "| sampler | dtype | median RMS vs float64 | max RMS vs float64 | "
                  "median RMS vs float32 | max abs vs float64 |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in mnist:
            vs32 = "—" if r["dtype"] == "float32" else _fmt(r["rms_vs_float32"])
            lines.append(
                f"| `{r['sampler']}` | {r['dtype']} | {_fmt(r['rms_vs_float64'])} | "
                f"{_fmt(r['max_rms_vs_float64'])} | {vs32} | {_fmt(r['max_abs_vs_float64'])} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "—"
    return "nan" if math.isnan(v) else f"{v:.2g}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samplers", default=",".join(EXACT_SAMPLERS))
    p.add_argument("--problems", default=",".join(EXACT_PROBLEMS))
    p.add_argument("--nfe", default="10,50", help="NFE budgets on the exact problems")
    p.add_argument("--n", type=int, default=256, help="samples per exact problem")
    p.add_argument("--ckpt", default=str(REPO / "benchmarks/checkpoints/mnist_vp_unet.pt"),
                   help="image checkpoint ('' to skip)")  # fmt: skip
    p.add_argument("--mnist-samplers", default=",".join(MNIST_SAMPLERS))
    p.add_argument("--mnist-nfe", type=int, default=10)
    p.add_argument("--mnist-n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sha = git_revision()
    start = time.perf_counter()
    nfes = [int(v) for v in args.nfe.split(",")]
    rows = exact_rows(args.samplers.split(","), args.problems.split(","), nfes, args.n, args.seed)
    mnist = []
    if args.ckpt:
        mnist = mnist_rows(Path(args.ckpt), args.mnist_samplers.split(","), args.mnist_nfe,
                           args.mnist_n, args.seed)  # fmt: skip
    folder = result_dir("cpu", out=args.out)
    write_tsv(folder / "precision.tsv", rows, COLUMNS)
    if mnist:
        write_tsv(folder / "precision_mnist.tsv", mnist, MNIST_COLUMNS)
    (folder / "precision.md").write_text(markdown(rows, mnist))
    write_env(folder, device="cpu", seeds={"seed": args.seed}, git_sha=sha, name="env_precision.txt",
              extra={"wall_s": f"{time.perf_counter() - start:.0f}"})  # fmt: skip
    print((folder / "precision.md").read_text())
    print(f"wrote {folder} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
