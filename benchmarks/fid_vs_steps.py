r"""Steps-vs-FID with a trained checkpoint: samplers and peers x NFE budgets x seeds, plus long
reference runs.

For every sampler and NFE budget (default {5, 10, 20, 50}), ``--n`` samples (default 1000) are
drawn through ``scoresde.sample`` from the same prior draws (batch ``b`` is seeded from
``(seed, b)``, so every sampler starts from the same ``x_T`` and stochastic samplers get the same
noise streams), mapped to ``[0, 1]``, and scored by FID against the statistics of the first
``--ref-n`` MNIST training images (cached as ``.npz`` under ``--cache-dir``). Each cell runs at
every ``--seeds`` seed (the tables give mean ± standard deviation) and ends as ``--ending`` says
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
endings, sampler families, peers). Finished cells are kept in ``fid_vs_steps.cells.jsonl``
there, keyed by everything that determines them (checkpoint, Inception and reference-statistics
hashes, sampler, grid, ending, steps, n, batch size, seed), so a run that is stopped resumes
where it was with the same command. The generated features of each cell are kept in
``fid_cells/`` there (:mod:`benchmarks.fid_cache`), so scoring the same cells against other
reference statistics (another ``--ref-n``) reads them instead of sampling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

import scoresde as S
from benchmarks.common import REPO, git_revision, result_dir, write_env, write_tsv
from benchmarks.exact_error import GRIDS, steps_for_budget
from benchmarks.fid_cache import append_cell, load_features, read_cells, save_features
from benchmarks.fid_peers import PEERS, check_peers, peer_grid, peer_run, peer_steps
from benchmarks.fid_summary import summary
from scoresde.metrics import (
    PREPROCESSING,
    FeatureStats,
    InceptionFeatures,
    cached_stats,
    extract_features,
    fid,
    file_sha256,
    generated_features,
    rank_and_world,
)

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
ENDINGS = ("denoise_final", "t_min")
# context entries that change a cell's score but not its samples (its features are reused)
SCORING_CONTEXT = ("reference",)
COLUMNS = [
    "role",
    "family",
    "sampler",
    "grid",
    "ending",
    "seed",
    "nfe_budget",
    "nfe",
    "n_steps",
    "fid",
    "n_samples",
    "time_s",
    "note",
]


@dataclass
class Model:
    """What the benchmark needs from a checkpoint."""

    denoiser: S.Denoiser
    shape: tuple[int, ...]  # (C, H, W) of one sample
    to_unit: Callable[[Tensor], Tensor]  # model space -> images in [0, 1]


def load_checkpoint(path: str | Path, device: str | torch.device) -> Model:
    """The :class:`Model` of a scoresde image checkpoint: its EMA denoiser on ``device``, the
    sample shape ``(C, H, W)`` from the model config, and the map from model space (``[-1, 1]``,
    :func:`scoresde.data.images_to_float`) to ``[0, 1]``."""
    from scoresde.checkpoint import load, load_denoiser

    ckpt = load(path, map_location=device)
    cfg = ckpt["model_config"]
    if "image_size" not in cfg:
        raise ValueError(f"{str(path)!r} is not an image model (model config {cfg})")
    denoiser = load_denoiser(ckpt, map_location=device)
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    return Model(denoiser, shape, lambda x: (x + 1) / 2)


def read_mnist_images(data_dir: str | Path, n: int, *, split: str = "train") -> Tensor:
    """The first ``n`` images of MNIST (``data_dir`` or its ``mnist/`` folder) as uint8
    ``(n, 1, 28, 28)``, through :func:`scoresde.data.load_images`."""
    from scoresde.data import load_images

    folder = Path(data_dir)
    if not any(folder.glob("*-images-idx3-ubyte*")) and (folder / "mnist").is_dir():
        folder = folder / "mnist"
    images = load_images(folder, split).images
    if n > images.shape[0]:
        raise ValueError(f"n must be <= {images.shape[0]} for MNIST {split}; got {n}")
    return images[:n]


def reference_stats(
    images: Tensor, extractor: InceptionFeatures, cache: Path, label: str, batch_size: int
) -> FeatureStats:
    """Statistics of real images, cached in ``cache`` under a key of the network file's sha256,
    the images' sha256, their count and the preprocessing."""
    key = {
        "network_sha256": extractor.sha256,
        "data": label,
        "data_sha256": hashlib.sha256(images.numpy().tobytes()).hexdigest(),
        "n": len(images),
        "preprocessing": PREPROCESSING,
    }
    return cached_stats(
        cache,
        key,
        lambda: FeatureStats.of(extract_features(images, extractor, batch_size=batch_size)),
    )


def cell_features(
    model: Model,
    run: Callable[[Tensor, torch.Generator], tuple[Tensor, int]],
    extractor: Callable,
    *,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> tuple[Tensor, int | None, float]:
    """``(features, nfe, seconds)`` of ``n`` samples of ``run(x_T, generator) -> (x, nfe)``, the
    prior draws ``x_T`` and the generator of batch ``b`` seeded from ``(seed, b)``."""
    nfe = []

    def sample_batch(size: int, generator: torch.Generator) -> Tensor:
        x_T = model.denoiser.sde.prior_sample((size, *model.shape), generator=generator)
        x, calls = run(x_T.to(device), generator)
        nfe.append(calls)
        return model.to_unit(x).clamp(0.0, 1.0)

    start = time.perf_counter()
    feats = generated_features(
        sample_batch, extractor, n, batch_size=batch_size, seed=seed, progress=progress
    )
    return feats, (max(nfe) if nfe else None), time.perf_counter() - start


def ours(
    sampler: S.Sampler, denoiser: S.Denoiser, grid: S.TimeGrid, n_steps: int, denoise_final: bool
) -> Callable[[Tensor, torch.Generator], tuple[Tensor, int]]:
    """A scoresde sampler as ``run(x_T, generator) -> (x, nfe)``."""

    def run(x_T: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
        res = S.sample(sampler, denoiser, x_T=x_T, grid=grid, n_steps=n_steps,
                       generator=generator, denoise_final=denoise_final, progress=False)  # fmt: skip
        return res.x, res.nfe

    return run


def fid_cell(
    model: Model,
    sampler: S.Sampler,
    grid: S.TimeGrid,
    n_steps: int,
    extractor: Callable,
    reference: FeatureStats,
    *,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    denoise_final: bool = False,
    progress: bool = False,
) -> dict:
    """FID of ``n`` samples of one sampler on one grid; returns a row (without role/labels)."""
    run = ours(sampler, model.denoiser, grid, n_steps, denoise_final)
    feats, nfe, seconds = cell_features(model, run, extractor, n=n, batch_size=batch_size,
                                        seed=seed, device=device, progress=progress)  # fmt: skip
    return {"nfe": nfe, "n_steps": n_steps, "fid": fid(FeatureStats.of(feats), reference),
            "n_samples": n, "time_s": seconds}  # fmt: skip


def _as_list(value) -> list:
    return [value] if isinstance(value, (int, str)) else list(value)


def fid_table(
    model: Model,
    extractor: Callable,
    reference: FeatureStats,
    *,
    samplers: Sequence[str],
    nfes: Sequence[int],
    grid: str,
    reference_sampler: str | Sequence[str],
    reference_steps: int | Sequence[int],
    n: int,
    batch_size: int,
    seed: int | Sequence[int],
    device: torch.device,
    ending: str = "denoise_final",
    peers: Sequence[str] = (),
    log: Callable[[str], None] = print,
    progress: bool = False,
    cache: Path | None = None,
    features: Path | None = None,
    context: dict | None = None,
    on_row: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Every (NFE, sampler or peer, seed) cell and the reference runs, as rows, smallest budgets
    first.

    ``grid`` is a key of ``GRIDS`` or ``"default"`` (each sampler's own ``default_grid``).
    ``ending`` is ``"denoise_final"`` (the last step is the model's x0, 1 NFE paid from the
    budget: Ho et al. 2020 Alg. 2, score_sde's ``noise_removal``) or ``"t_min"`` (the state at
    ``t_min``, with its residual noise ``sigma(t_min)``). ``peers`` are keys of
    :data:`benchmarks.fid_peers.PEERS` (their own code and grids, the same ending and prior
    draws; rows with role ``peer``). Each reference sampler (paired with its
    ``reference_steps``; one count serves all) runs at the first seed on ``UniformTime`` if it
    is stochastic, else on its ``default_grid``, and ends with x0; 0 steps leave it out.

    With ``cache`` (a JSON-lines file), a cell whose key (its labels, ``n``, ``batch_size``,
    ``seed`` and ``context``, e.g. the hashes of the checkpoint and the reference statistics) is
    already there is read back instead of run, and every cell that is run is appended to it;
    ``on_row(rows)`` is called after each cell. With ``features`` (a folder), each cell's
    generated features are kept there (:mod:`benchmarks.fid_cache`) under its key without the
    ``context`` entries in :data:`SCORING_CONTEXT`, and a cell whose features are there is
    scored from them without sampling (e.g. against other reference statistics).
    """
    if ending not in ENDINGS:
        raise ValueError(f"ending must be one of {ENDINGS}; got {ending!r}")
    peers = check_peers(peers)
    seeds = _as_list(seed)
    ref_keys, ref_steps = _as_list(reference_sampler), _as_list(reference_steps)
    if len(ref_steps) == 1:
        ref_steps *= len(ref_keys)
    if len(ref_steps) != len(ref_keys):
        raise ValueError(f"reference_steps must give one count, or one per reference sampler "
                         f"{ref_keys}; got {ref_steps}")  # fmt: skip
    rows = []
    done = read_cells(cache)
    sample_context = {k: v for k, v in (context or {}).items() if k not in SCORING_CONTEXT}
    cells = [
        (role, key, b, s)
        for b in nfes
        for role, keys in (("cell", samplers), ("peer", peers))
        for key in keys
        for s in seeds
    ]
    cells += [("reference", k, steps, seeds[0]) for k, steps in zip(ref_keys, ref_steps, strict=True)
              if steps]  # fmt: skip
    for role, key, budget, cell_seed in cells:
        cell_ending = "denoise_final" if role == "reference" else ending
        family = PEERS[key].family if role == "peer" else "scoresde"
        if role == "peer":
            n_steps, grid_name = peer_steps(key, budget, cell_ending), peer_grid(key)
        else:
            sampler = S.get_sampler(key)
            if role == "reference":
                n_steps, budget = budget, None
                grid_obj = S.UniformTime() if sampler.stochastic else sampler.default_grid
            else:
                paid = budget - (cell_ending == "denoise_final")
                n_steps = steps_for_budget(sampler, paid) if paid > 0 else None
                grid_obj = sampler.default_grid if grid == "default" else GRIDS[grid]()
            default = grid == "default" or role == "reference"
            grid_name = f"default: {grid_obj!r}" if default else grid
            if isinstance(grid_obj, S.UniformTime) and role == "reference":
                grid_name = "uniform_time"
        label = {
            "role": role,
            "sampler": key,
            "grid": grid_name,
            "ending": cell_ending,
            "seed": cell_seed,
            "nfe_budget": budget,
        }
        if n_steps is None:
            continue
        keyed = {**label, "n_steps": n_steps, "n": n, "batch_size": batch_size}
        cell_key = json.dumps({**keyed, "context": context or {}}, sort_keys=True)
        feature_key = json.dumps({**keyed, "context": sample_context}, sort_keys=True)
        if cell_key in done:
            rows.append({"family": family, **done[cell_key]})
            log(
                f"{role} {key} nfe<={budget} seed {cell_seed}: "
                f"FID {done[cell_key].get('fid', float('nan')):.3f} (from {cache})"
            )
            continue
        try:
            stored = load_features(features, feature_key)
            if stored is None:
                if role == "peer":
                    run = peer_run(key, model.denoiser, n_steps, cell_ending)
                else:
                    run = ours(sampler, model.denoiser, grid_obj, n_steps,
                               cell_ending == "denoise_final")  # fmt: skip
                stored = cell_features(model, run, extractor, n=n, batch_size=batch_size,
                                       seed=cell_seed, device=device, progress=progress)  # fmt: skip
                if features is not None and rank_and_world()[0] == 0:
                    save_features(features, feature_key, *stored)
            feats, nfe, seconds = stored
            row = {**label, "family": family, "nfe": nfe, "n_steps": n_steps,
                   "fid": fid(FeatureStats.of(feats), reference), "n_samples": n,
                   "time_s": seconds}  # fmt: skip
        except (FloatingPointError, ValueError) as err:
            row = {**label, "family": family, "n_steps": n_steps,
                   "note": f"{type(err).__name__}: {err}"[:200]}  # fmt: skip
        rows.append(row)
        if cache is not None and rank_and_world()[0] == 0:
            append_cell(cache, cell_key, row)
        if on_row is not None:
            on_row(rows)
        log(
            f"{role} {key} nfe<={budget} seed {cell_seed}: FID {row.get('fid', float('nan')):.3f} "
            f"({row.get('time_s', 0):.0f} s)"
        )
    return rows


def folder_rows(cache: Path, context: dict, n: int) -> list[dict]:
    """Every finished cell of ``cache`` with this ``context`` and ``n``, from any command run
    into the folder (other samplers, grids, endings, seeds, peers), in the order they ran: the
    folder's table shows them all."""
    context = json.loads(json.dumps(context, sort_keys=True))
    rows = []
    for key, row in read_cells(cache).items():
        k = json.loads(key)
        if k.get("context") == context and k.get("n") == n:
            peer = row.get("role") == "peer" and row.get("sampler") in PEERS
            rows.append({"family": PEERS[row["sampler"]].family if peer else "scoresde", **row})
    return rows


def pick_samplers(requested: Sequence[str] | None) -> list[str]:
    """The requested registry keys (``[]``: none, e.g. a run of peers only), or by default the
    first ``N_DEFAULT`` registered of ``DEFAULT_SAMPLERS``."""
    if requested is not None:
        unknown = sorted(set(requested) - set(S.SAMPLERS))
        if unknown:
            raise ValueError(f"unknown sampler(s) {unknown}; registered: {sorted(S.SAMPLERS)}")
        return list(requested)
    return [k for k in DEFAULT_SAMPLERS if k in S.SAMPLERS][:N_DEFAULT]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
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
        type=int,
        default=1000,
        help="samples per cell (default 1000); spell it --n-samples under torchrun, which takes "
        "--n for an abbreviation of its own options",
    )
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--nfe", nargs="+", type=int, default=list(NFES))
    parser.add_argument(
        "--samplers",
        nargs="*",
        help=f"registry keys; none after the flag runs no sampler (e.g. peers only) (default: "
        f"the first {N_DEFAULT} registered of {DEFAULT_SAMPLERS})",
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
        type=int,
        default=[1000],
        help="steps of each reference sampler, or one count for all (default 1000); 0 leaves a "
        "reference out",
    )
    parser.add_argument(
        "--ref-n", type=int, default=10000, help="MNIST train images for the reference statistics"
    )
    parser.add_argument("--cache-dir", default=str(REPO / "benchmarks" / "cache"))
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="one cell per seed (default 0)"
    )
    parser.add_argument("--out", help="result folder (default benchmarks/results/<date>_<device>)")
    args = parser.parse_args(argv)

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
    samplers = pick_samplers(args.samplers)
    ref_keys = args.reference_sampler or [next(k for k in REFERENCE_SAMPLERS if k in S.SAMPLERS)]
    unknown = sorted(set(ref_keys) - set(S.SAMPLERS))
    if unknown:
        parser.error(f"unknown reference sampler(s) {unknown}; registered: {sorted(S.SAMPLERS)}")
    if len(args.reference_steps) not in (1, len(ref_keys)):
        parser.error(f"--reference-steps takes one count or one per reference sampler {ref_keys}")
    try:
        peers = check_peers(args.peers)
    except ValueError as err:
        parser.error(str(err))
    inception = args.inception or str(Path(args.data_dir) / "fid-inception" / "default_1.pt")

    start = time.perf_counter()
    model = load_checkpoint(args.ckpt, device)
    extractor = InceptionFeatures(inception, device=device)
    real = read_mnist_images(Path(args.data_dir) / "mnist", args.ref_n)
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

        rows = folder_rows(folder / "fid_vs_steps.cells.jsonl", context, args.n) or rows
        write_tsv(folder / "fid_vs_steps.tsv", rows, COLUMNS)
        plot_fid(rows, folder / "fid_vs_steps.png")
        (folder / "fid_vs_steps.md").write_text(summary(rows) + "\n")

    context = {
        "checkpoint_sha256": file_sha256(args.ckpt),
        "inception_sha256": extractor.sha256,
        "reference": f"mnist train[0:{args.ref_n}]",
    }
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
        cache=folder / "fid_vs_steps.cells.jsonl",
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
        log(f"wrote {folder} in {wall:.0f} s")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
