"""What an ``Optimized`` grid buys on a trained network: fit time and FID against its start.

Fits ``scoresde.Optimized`` for one sampler at one NFE budget on the MNIST checkpoint (float32
UNet, on the CPU by default) with a budget a user can afford, times the fit, saves the grid,
measures the path error to the converged PF-ODE solution on 32 prior draws the fit never saw,
then scores ``--n`` samples on the start grid and on the fitted grid by FID (as
``benchmarks/fid_vs_steps.py`` does: same prior draws for both grids, reference statistics of
the first ``--ref-n`` MNIST training images, cached). Each ``--seeds`` value draws a fresh set of
samples, so the spread between seeds shows the Monte-Carlo noise of a 1000-sample FID::

    python -m benchmarks.optimized_mnist --ckpt benchmarks/checkpoints/mnist_vp_unet.pt \\
        --data-dir ../shared/data

Writes ``optimized_mnist.tsv`` (one row per grid and seed, rewritten after each), the fitted
grid ``optimized_<sampler>_<nfe>nfe.pt`` (``python -m scoresde sample --grid FILE`` reads it;
``--grid FILE`` here skips the fit and measures a saved grid) and ``env_optimized.txt`` to ``benchmarks/results/<date>_<device>/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import scoresde as S
from benchmarks.common import REPO, git_revision, result_dir, write_env, write_tsv
from benchmarks.exact_error import steps_for_budget
from benchmarks.fid_inputs import load_checkpoint, read_mnist_images, reference_stats
from benchmarks.fid_table import fid_cell
from scoresde.metrics import InceptionFeatures

COLUMNS = ["grid", "seed", "sampler", "nfe", "n_steps", "fid", "n_samples", "time_s", "note"]


def held_out_path_error(model, sampler, n_steps, fitted, *, n=32, seed=7, reference_steps=200):
    """RMS distance per sample (``|x - x_ref| / sqrt(d)``) to the converged PF-ODE solution (UniPC
    order 4 on ``reference_steps`` logSNR-uniform steps) of ``n`` prior draws the fit never saw,
    on ``UniformLambda`` and on the fitted grid: ``{grid: per-draw errors}``."""
    den, sde = model.denoiser, model.denoiser.sde
    x_T = sde.prior_sample((n, *model.shape), generator=torch.Generator().manual_seed(seed))
    ref_sampler = S.get_sampler("unipc", solver_order=3, lower_order_final=False)
    ref = S.sample(ref_sampler, den, x_T=x_T, grid=S.UniformLambda(), n_steps=reference_steps,
                   progress=False).x  # fmt: skip
    out = {}
    for name, grid, steps in (
        ("uniform_lambda", S.UniformLambda(), n_steps),
        ("optimized", fitted, None),
    ):
        x = S.sample(sampler, den, x_T=x_T, grid=grid, n_steps=steps, progress=False).x
        out[name] = (x - ref).flatten(1).norm(dim=1) / x[0].numel() ** 0.5
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.optimized_mnist",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--ckpt", default=str(REPO / "benchmarks/checkpoints/mnist_vp_unet.pt"))
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--sampler", default="unipc")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--draws", type=int, default=8, help="prior draws the fit averages over")
    p.add_argument("--reference-steps", type=int, default=50)
    p.add_argument("--max-evals", type=int, default=200)
    p.add_argument("--patience", type=int, default=40)
    p.add_argument("--n", type=int, default=1000, help="samples per FID")
    p.add_argument("--ref-n", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--cache-dir", default=str(REPO / "benchmarks" / "cache"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="result folder (default benchmarks/results/<date>_<device>)")
    p.add_argument("--grid", help="a fitted grid file: skip the fit, measure path error and FID")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    revision = git_revision()
    folder = result_dir(device, out=args.out)
    model = load_checkpoint(args.ckpt, device)
    sampler = S.get_sampler(args.sampler)
    n_steps = steps_for_budget(sampler, args.nfe)
    start_grid = S.UniformLambda()
    grid = S.Optimized(sampler, model.denoiser, shape=(args.draws, *model.shape), seed=1000,
                       start=start_grid, reference_steps=args.reference_steps,
                       max_evals=args.max_evals, patience=args.patience, progress=False)  # fmt: skip
    began = time.perf_counter()
    rows = []
    if args.grid is not None:
        fitted = S.Explicit.load(args.grid)
    else:
        cpu0 = time.process_time()
        fitted = grid.fit(model.denoiser.sde, n_steps)
        fit = grid.last_fit
        # CPU seconds of this process: the wall time of a shared machine overstates the fit
        fit["cpu_seconds"] = time.process_time() - cpu0
        print(f"fit: {fit['seconds']:.0f} s wall, {fit['cpu_seconds']:.0f} s CPU, {fit['n_evals']} evaluations, {fit['nfe']} NFE "
              f"(x{args.draws} draws); loss {fit['loss_start']:.4f} -> {fit['loss']:.4f}", flush=True)  # fmt: skip
        grid_file = folder / f"optimized_{args.sampler}_{args.nfe}nfe.pt"
        fitted.save(grid_file)
        rows.append({"grid": "fit", "sampler": args.sampler, "nfe": fit["nfe"], "n_steps": n_steps,
                 "time_s": round(fit["seconds"], 1),
                 "note": f"{fit['cpu_seconds']:.0f} s CPU (1 thread); {fit['n_evals']} evals on {args.draws} draws, reference "
                         f"{args.reference_steps} steps; loss {fit['loss_start']:.4f} -> "
                         f"{fit['loss']:.4f}"})  # fmt: skip
    print("ts:", [round(t, 5) for t in fitted.ts.tolist()], flush=True)

    errors = held_out_path_error(model, sampler, n_steps, fitted)
    ratio = errors["optimized"] / errors["uniform_lambda"]
    for label, e in errors.items():
        print(f"held-out path error {label}: mean {e.mean():.4f}, median {e.median():.4f}")
    print(f"optimized / uniform_lambda per draw: median {ratio.median():.3f}, "
          f"better on {int((ratio < 1).sum())}/{len(ratio)}", flush=True)  # fmt: skip

    extractor = InceptionFeatures(Path(args.data_dir) / "fid-inception" / "default_1.pt",
                                  device=device)  # fmt: skip
    real = read_mnist_images(Path(args.data_dir) / "mnist", args.ref_n)
    reference = reference_stats(real, extractor, Path(args.cache_dir) / f"mnist-train-{args.ref_n}.npz",
                                f"mnist train-images-idx3-ubyte[0:{args.ref_n}]", args.batch_size)  # fmt: skip
    for seed in args.seeds:
        for label, g in (("uniform_lambda", start_grid), ("optimized", fitted)):
            cell = fid_cell(model, sampler, g, n_steps, extractor, reference, n=args.n,
                            batch_size=args.batch_size, seed=seed, device=device)  # fmt: skip
            rows.append({"grid": label, "seed": seed, "sampler": args.sampler, **cell})
            print(
                f"seed {seed} {label}: FID {cell['fid']:.2f} ({cell['time_s']:.0f} s)", flush=True
            )
            write_tsv(folder / "optimized_mnist.tsv", rows, COLUMNS)
    write_env(folder, device=device, git_sha=revision, name="env_optimized.txt",
              seeds={"fit draws": 1000, "FID draws": args.seeds},
              extra={"wall_time_s": round(time.perf_counter() - began)})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
