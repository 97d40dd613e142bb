r"""Path error of the samplers on a trained image model, next to what FID is sensitive to.

``fid_vs_steps.py`` ranks samplers by FID; this script says how far each sample is from the
probability-flow ODE's solution for the *same* network and prior draw, and describes the error in
two numbers that FID on MNIST reacts to:

* ``rms_error``: median over samples of ``|x - x_ref|_2 / sqrt(d)`` in model space (``[-1, 1]``),
  against the converged ODE solution ``x_ref`` (``--reference`` at ``--reference-steps``);
* ``background_mean``: the mean of the pixels that are background (``x_ref < -0.9``) in the
  reference; MNIST's background is exactly ``-1``, and a sample's clamp to ``[-1, 1]`` leaves a
  background above it grey;
* ``clipped_fraction``: the fraction of pixels outside ``[-1, 1]`` (clamped to black or white
  before FID).

The reference's own error is bounded by ``reference_spread``: the RMS distance between it and a
second high-order solver (``--check``) at the same step count (in ``env_image_path_error.txt``).

    python -m benchmarks.image_path_error --ckpt benchmarks/checkpoints/mnist_vp_unet.pt

Outputs ``image_path_error.tsv`` and ``env_image_path_error.txt`` in
``benchmarks/results/<date>_<device>/``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import Tensor

import scoresde as S
from benchmarks.common import git_revision, result_dir, write_env, write_tsv
from benchmarks.exact_error import GRIDS, steps_for_budget
from benchmarks.fid_inputs import Model, load_checkpoint
from benchmarks.fid_vs_steps import NFES, pick_samplers

COLUMNS = [
    "sampler",
    "grid",
    "nfe_budget",
    "nfe",
    "n_steps",
    "rms_error",
    "background_mean",
    "clipped_fraction",
    "time_s",
]


def solve(model: Model, key: str, grid: S.TimeGrid, n_steps: int, x_T: Tensor) -> S.SampleResult:
    return S.sample(
        S.get_sampler(key), model.denoiser, x_T=x_T, grid=grid, n_steps=n_steps, progress=False
    )


def rms(x: Tensor, ref: Tensor) -> Tensor:
    """Per-sample RMS distance ``|x - ref|_2 / sqrt(d)``."""
    return (x - ref).flatten(1).pow(2).mean(1).sqrt()


def measure(
    model: Model,
    samplers: Sequence[str],
    nfes: Sequence[int],
    *,
    grid: str,
    reference: str,
    check: str,
    reference_steps: int,
    n: int,
    seed: int,
    device: torch.device,
) -> tuple[list[dict], float]:
    """Rows of every (sampler, NFE) cell and the reference spread (max over samples)."""
    generator = torch.Generator().manual_seed(seed)
    x_T = model.denoiser.sde.prior_sample((n, *model.shape), generator=generator).to(device)
    ref = solve(model, reference, GRIDS[grid](), reference_steps, x_T).x
    spread = rms(solve(model, check, GRIDS[grid](), reference_steps, x_T).x, ref).max().item()
    background = ref < -0.9
    rows = []
    for key in samplers:
        for budget in nfes:
            n_steps = steps_for_budget(S.get_sampler(key), budget)
            if n_steps is None:
                continue
            start = time.perf_counter()
            res = solve(model, key, GRIDS[grid](), n_steps, x_T)
            rows.append(
                {
                    "sampler": key,
                    "grid": grid,
                    "nfe_budget": budget,
                    "nfe": res.nfe,
                    "n_steps": n_steps,
                    "rms_error": rms(res.x, ref).median().item(),
                    "background_mean": res.x[background].mean().item(),
                    "clipped_fraction": (res.x.abs() > 1).float().mean().item(),
                    "time_s": time.perf_counter() - start,
                }
            )
    return rows, spread


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.image_path_error", description=__doc__.split("\n\n")[0]
    )
    revision = git_revision()
    parser.add_argument("--ckpt", required=True, help="image checkpoint (benchmarks/checkpoints)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=64, help="prior draws (default 64)")
    parser.add_argument("--nfe", nargs="+", type=int, default=list(NFES))
    parser.add_argument(
        "--samplers", nargs="+", help="registry keys (default: those of fid_vs_steps.py)"
    )
    parser.add_argument("--grid", default="uniform_lambda", choices=sorted(GRIDS))
    parser.add_argument("--reference", default="dpm_solver_pp_3m")
    parser.add_argument("--check", default="unipc", help="second solver bounding the reference")
    parser.add_argument("--reference-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="result folder (default benchmarks/results/<date>_<device>)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    start = time.perf_counter()
    model = load_checkpoint(args.ckpt, device)
    rows, spread = measure(
        model,
        pick_samplers(args.samplers),
        args.nfe,
        grid=args.grid,
        reference=args.reference,
        check=args.check,
        reference_steps=args.reference_steps,
        n=args.n,
        seed=args.seed,
        device=device,
    )
    folder = result_dir(device, out=args.out)
    write_tsv(folder / "image_path_error.tsv", rows, COLUMNS)
    write_env(
        folder,
        git_sha=revision,
        device=device,
        seeds={"x_T": args.seed},
        name="env_image_path_error.txt",
        extra={
            "wall_time_s": f"{time.perf_counter() - start:.0f}",
            "checkpoint": args.ckpt,
            "reference": f"{args.reference}, {args.reference_steps} steps on {args.grid}",
            "reference_spread": f"{spread:.3g} (max RMS vs {args.check}, same steps)",
        },
    )
    for r in rows:
        print(
            f"{r['sampler']:<20} nfe<={r['nfe_budget']:<3} rms {r['rms_error']:.4f}  "
            f"background {r['background_mean']:+.4f}  clipped {r['clipped_fraction']:.3f}"
        )
    print(f"reference spread {spread:.3g}; wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
