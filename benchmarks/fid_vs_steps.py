r"""Steps-vs-FID with a trained checkpoint: samplers and peers x NFE budgets x seeds, plus long
reference runs.

For every sampler and NFE budget (default {5, 10, 20, 50}), ``--n`` samples (default 1000) are
drawn through ``scoresde.sample`` from the same prior draws (batch ``b`` is seeded from
``(seed, b)``, so every sampler starts from the same ``x_T`` and stochastic samplers get the same
noise streams), mapped to ``[0, 1]``, and scored by FID against the statistics of the first
``--ref-n`` MNIST training images (cached as ``.npz`` under ``--cache-dir``). Each cell runs at
every ``--seeds`` seed (the tables give mean ± standard deviation; a one-seed cell's ± is the
bootstrap standard deviation over its features, ``fid_sd``) and ends as ``--ending`` says
(``denoise_final`` by default: the model's x0 at ``t_min``, its call paid from the budget).
``--peers`` adds diffusers' schedulers and k-diffusion's samplers run through their own code on
the same checkpoint, prior draws, ending and NFE count (:mod:`benchmarks.fid_peers`). Long runs of
``--reference-sampler`` (default 1000 steps of ``ancestral``, else ``euler_maruyama``; several
may be given, e.g. ``ancestral unipc`` with ``--reference-steps 1000 500`` for the SDE and the
probability-flow limit) give the FID the budgets are heading to; they end with the model's
``x0`` at ``t_min`` (+1 NFE), as Ho et al.'s Algorithm 2 (no noise on the last step) and
score_sde's ``noise_removal`` do. FID is biased upwards at small ``n`` (about +15 for MNIST at
1000 vs 1000 images); compare cells with each other, not with published 50k-sample values.

Generation and Inception features shard over processes with ``torchrun``:

    python -m benchmarks.fid_vs_steps --ckpt benchmarks/checkpoints/<file> --data-dir ../shared/data
    torchrun --nproc_per_node=2 -m benchmarks.fid_vs_steps --ckpt ... --device cuda

Outputs ``fid_vs_steps.tsv``, ``fid_vs_steps.png``, ``fid_vs_steps.md`` (sampler x NFE table,
best per budget) and ``env_fid.txt`` in ``benchmarks/results/<date>_<device>/``; the first three
are rewritten after every cell and show every cell run into the folder with the same
checkpoint, reference statistics and ``n`` (so one table is built by several commands: grids,
endings, sampler families, peers; the run ends by counting the folder's cells made with another
setting, which the table leaves out). Finished cells are kept in ``fid_vs_steps.cells.jsonl``
there, keyed by everything that determines them (checkpoint, Inception and reference-statistics
hashes, sampler, grid, ending, steps, n, batch size, seed), so a run that is stopped resumes
where it was with the same command. The generated features of each cell are kept in
``fid_cells/`` there (:mod:`benchmarks.fid_cache`), so scoring the same cells against other
reference statistics (another ``--ref-n``) reads them instead of sampling. Each run first gives
``fid_sd`` to the folder's cells that lack it, from their kept features.

This module is the command line; the cells run in :mod:`benchmarks.fid_table`, the checkpoint,
images and reference statistics load in :mod:`benchmarks.fid_inputs`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

import scoresde as S
from benchmarks.common import REPO, git_revision, result_dir, write_env, write_tsv
from benchmarks.exact_error import GRIDS, is_adaptive
from benchmarks.fid_inputs import (
    flag_errors,
    int_at_least,
    load_checkpoint,
    read_mnist_images,
    reference_stats,
)
from benchmarks.fid_peers import PEERS, check_peers
from benchmarks.fid_summary import summary
from benchmarks.fid_table import (
    COLUMNS,
    ENDINGS,
    fid_table,
    fill_fid_sd,
    folder_rows,
    hidden_cells,
    sampler_of,
    smallest_budget,
)
from scoresde.cli import OneLineErrors
from scoresde.metrics import InceptionFeatures, file_sha256, rank_and_world
from scoresde.utils import check_device

NFES = (5, 10, 20, 50)
# in order of preference; the first N_DEFAULT registered ones are used (--samplers for others)
N_DEFAULT = 8
DEFAULT_SAMPLERS = (
    "ddim",
    "dpm_solver_2s",
    "dpm_solver_pp_2m",
    "dpm_solver_pp_3m",
    "unipc",
    "deis_3",
    "pndm",
    "pf_heun",
    "pf_rk4",
    "dpm_solver_3s",
    "pf_euler",
    "euler_maruyama",
    "ancestral",
    "sde_dpm_solver_pp_2m",
    "edm_stochastic",
    "reverse_diffusion",
)
REFERENCE_SAMPLERS = ("ancestral", "euler_maruyama")


def pick_samplers(parser: argparse.ArgumentParser, requested: Sequence[str] | None) -> list[str]:
    """The requested registry keys (``[]``: none, e.g. a run of peers only), each built once to
    check it, or by default the first ``N_DEFAULT`` registered of ``DEFAULT_SAMPLERS``."""
    if requested is None:
        return [k for k in DEFAULT_SAMPLERS if k in S.SAMPLERS][:N_DEFAULT]
    for spec in requested:
        if spec in PEERS:
            parser.error(f"--samplers: {spec!r} is a peer (another library's code); pass it "
                         f"with --peers")  # fmt: skip
        with flag_errors(parser, "--samplers"):
            sampler_of(spec)
    return list(requested)


def check_budgets(
    parser: argparse.ArgumentParser, samplers: list[str], peers: list[str], nfes: list[int],
    ending: str,
) -> None:  # fmt: skip
    """Every budget of ``--nfe`` gives some sampler or peer a cell, and every sampler and peer
    has a cell at some budget; a sampler whose steps cost more than a budget (pf_rk4 at 3) skips
    that budget only, as the table's cells do (:func:`benchmarks.fid_table.cell_steps`)."""
    budgeted = {k: smallest_budget(k, ending) for k in samplers if not is_adaptive(sampler_of(k))}
    budgeted |= {k: smallest_budget(k, ending, peer=True) for k in peers}
    if not budgeted:
        return  # only adaptive samplers, which pick their own steps: no budget is used
    final = ending == "denoise_final"
    paid = " + the final x0 call of --ending denoise_final" if final else ""
    for key, least in budgeted.items():
        if least is None:
            parser.error(f"--ending {ending}: peer {key!r} cannot end that way; leave it out")
    key, least = min(budgeted.items(), key=lambda item: item[1])
    for budget in nfes:
        if budget < least:
            parser.error(f"--nfe {budget}: expected budgets >= {least}, the smallest any "
                         f"sampler or peer here can spend ({key}: one step of {least - final} "
                         f"NFE{paid})")  # fmt: skip
    for key, least in budgeted.items():
        if least > max(nfes):
            parser.error(f"--nfe {' '.join(map(str, nfes))}: {key} needs a budget >= {least} "
                         f"with --ending {ending}; add one or leave {key} out")  # fmt: skip


def check_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[str], list[str], list[str], Path]:
    """``(samplers, reference samplers, peers, Inception file)`` after checking the arguments
    that ``parse_args`` cannot, before minutes go into loading the model and the statistics."""
    with flag_errors(parser, "--device"):
        check_device("--device", args.device)
    samplers = pick_samplers(parser, args.samplers)
    ref_keys = args.reference_sampler or [next(k for k in REFERENCE_SAMPLERS if k in S.SAMPLERS)]
    unknown = sorted(set(ref_keys) - set(S.SAMPLERS))
    if unknown:
        parser.error(f"unknown reference sampler(s) {unknown}; registered: {sorted(S.SAMPLERS)}")
    if len(args.reference_steps) not in (1, len(ref_keys)):
        parser.error(f"--reference-steps takes one count or one per reference sampler {ref_keys}")
    with flag_errors(parser, "--peers"):
        peers = check_peers(args.peers)
    check_budgets(parser, samplers, peers, args.nfe, args.ending)
    if not samplers and not peers and not any(args.reference_steps):
        parser.error("nothing to run: no --samplers, no --peers and --reference-steps 0")
    if not Path(args.ckpt).is_file():
        parser.error(f"--ckpt: no file {args.ckpt!r}; expected a scoresde checkpoint (.pt)")
    data = Path(args.data_dir)
    if not data.is_dir():
        parser.error(f"--data-dir: no folder {args.data_dir!r}; expected one with mnist/ and "
                     f"fid-inception/")  # fmt: skip
    inception = Path(args.inception or data / "fid-inception" / "default_1.pt")
    if not inception.is_file():
        flag = "--inception" if args.inception else "--data-dir"
        parser.error(f"{flag}: no Inception file {str(inception)!r}; expected the FID "
                     f"Inception-v3 TorchScript (pass --inception)")  # fmt: skip
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out: {args.out!r} is a file; expected a result folder (made if missing)")
    return samplers, ref_keys, peers, inception


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrors(
        prog="python -m benchmarks.fid_vs_steps", description=__doc__.split("\n\n")[0]
    )
    revision = git_revision()
    parser.add_argument(
        "--ckpt", required=True, help="training checkpoint (benchmarks/checkpoints/...)"
    )
    parser.add_argument(
        "--data-dir",
        default=str(REPO.parent / "shared" / "data"),
        help="folder with mnist/ and fid-inception/ (default ../shared/data)",
    )
    parser.add_argument(
        "--inception",
        help="FID Inception TorchScript (default <data-dir>/fid-inception/default_1.pt)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--n",
        "--n-samples",
        dest="n",
        type=int_at_least(2, " (FID needs the covariance of the samples)"),
        default=1000,
        help="samples per cell (default 1000); spell it --n-samples under torchrun, which takes "
        "--n for an abbreviation of its own options",
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=250)
    # budgets are checked against the samplers' smallest ones after parsing (check_budgets)
    parser.add_argument("--nfe", nargs="+", type=int, default=list(NFES))
    parser.add_argument(
        "--samplers",
        nargs="*",
        help=f"registry keys, or key:option=value,... (e.g. adaptive_sde:rel_tol=0.2; an "
        f"adaptive sampler runs once per seed at its own NFE); none after the flag runs no "
        f"sampler (e.g. peers only) (default: the first {N_DEFAULT} registered of "
        f"{DEFAULT_SAMPLERS})",
    )
    parser.add_argument(
        "--grid",
        default="default",
        choices=["default", *sorted(GRIDS)],
        help="'default': each sampler's own default_grid (default)",
    )
    parser.add_argument(
        "--ending",
        default="denoise_final",
        choices=ENDINGS,
        help="denoise_final: the last step returns the model's x0, 1 NFE paid from the budget "
        "(default); t_min: the state at t_min with its residual noise",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        default=[],
        metavar="PEER",
        help=f"peers run through their own code, one of {sorted(PEERS)} each (default none)",
    )
    parser.add_argument(
        "--reference-sampler",
        nargs="+",
        help="registry keys of the long reference runs, e.g. 'ancestral unipc' for the SDE and "
        f"the ODE limit (default: the first registered of {REFERENCE_SAMPLERS})",
    )
    parser.add_argument(
        "--reference-steps",
        nargs="+",
        type=int_at_least(0),
        default=[1000],
        help="steps of each reference sampler, or one count for all (default 1000); 0 leaves a "
        "reference out",
    )
    parser.add_argument(
        "--ref-n",
        type=int_at_least(2, " (FID needs the covariance of the images)"),
        default=10000,
        help="MNIST train images for the reference statistics",
    )
    parser.add_argument("--cache-dir", default=str(REPO / "benchmarks" / "cache"))
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int_at_least(0),
        default=[0],
        help="one cell per seed (default 0)",
    )
    parser.add_argument("--out", help="result folder (default benchmarks/results/<date>_<device>)")
    args = parser.parse_args(argv)
    samplers, ref_keys, peers, inception = check_args(parser, args)

    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(args.device).type == "cuda" else "gloo")
        if torch.device(args.device).type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            args.device = f"cuda:{torch.cuda.current_device()}"
    rank, world = rank_and_world()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    log = print if rank == 0 else (lambda msg: None)

    start = time.perf_counter()
    with flag_errors(parser, "--data-dir"):
        real = read_mnist_images(Path(args.data_dir) / "mnist", args.ref_n)
    with flag_errors(parser, "--ckpt"):
        model = load_checkpoint(args.ckpt, device)
    with flag_errors(parser, "--inception"):
        extractor = InceptionFeatures(inception, device=device)
    reference = reference_stats(
        real,
        extractor,
        Path(args.cache_dir) / f"mnist-train-{args.ref_n}.npz",
        f"mnist train-images-idx3-ubyte[0:{args.ref_n}]",
        args.batch_size,
    )
    log(f"reference statistics ready ({time.perf_counter() - start:.0f} s)")
    folder = result_dir(device, out=args.out)

    def write_table(rows: list[dict]) -> None:
        from benchmarks.plot import plot_fid

        rows = folder_rows(cache, context, args.n) or rows
        write_tsv(folder / "fid_vs_steps.tsv", rows, COLUMNS)
        plot_fid(rows, folder / "fid_vs_steps.png")
        (folder / "fid_vs_steps.md").write_text(summary(rows) + "\n")

    context = {
        "checkpoint_sha256": file_sha256(args.ckpt),
        "inception_sha256": extractor.sha256,
        "reference": f"mnist train[0:{args.ref_n}]",
    }
    cache = folder / "fid_vs_steps.cells.jsonl"
    if rank == 0:  # the tables are rewritten after each new cell and at the end
        fill_fid_sd(cache, folder / "fid_cells", context, args.n, reference, log)
    rows = fid_table(
        model,
        extractor,
        reference,
        samplers=samplers,
        nfes=args.nfe,
        grid=args.grid,
        reference_sampler=ref_keys,
        reference_steps=args.reference_steps,
        n=args.n,
        batch_size=args.batch_size,
        seed=args.seeds,
        device=device,
        ending=args.ending,
        peers=peers,
        log=log,
        cache=cache,
        features=folder / "fid_cells",
        context=context,
        on_row=write_table if rank == 0 else None,
    )
    wall = time.perf_counter() - start
    if rank == 0:
        write_table(rows)
        write_env(
            folder,
            git_sha=revision,
            device=device,
            seeds={"batches": f"SeedSequence([seed, batch]) for seed in {args.seeds}"},
            name="env_fid.txt",
            extra={
                "wall_time_s": f"{wall:.0f}",
                "processes": world,
                "checkpoint": args.ckpt,
                "reference_images": args.ref_n,
            },
        )
        hidden = hidden_cells(cache, context, args.n)
        if hidden:
            log(hidden)
        log(f"wrote {folder} in {wall:.0f} s")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
