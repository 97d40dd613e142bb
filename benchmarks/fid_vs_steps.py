r"""Steps-vs-FID with a trained checkpoint: samplers x NFE budgets, plus a 1000-step reference.

For every sampler and NFE budget (default {5, 10, 20, 50}), ``--n`` samples (default 1000) are
drawn through ``scoresde.sample`` from the same prior draws (batch ``b`` is seeded from
``(seed, b)``, so every sampler starts from the same ``x_T`` and stochastic samplers get the same
noise streams), mapped to ``[0, 1]``, and scored by FID against the statistics of the first
``--ref-n`` MNIST training images (cached as ``.npz`` under ``--cache-dir``). A long run of a
reference sampler (default 1000 steps of ``ancestral``, else ``euler_maruyama``) gives the FID
the budgets are heading to; it ends with the model's ``x0`` at ``t_min`` (``denoise_final``, +1
NFE), as Ho et al.'s Algorithm 2 (no noise on the last step) and score_sde's ``noise_removal``
do. FID is biased upwards at small ``n`` (about +15 for MNIST at 1000 vs 1000 images); compare
cells with each other, not with published 50k-sample values.

Generation and Inception features shard over processes with ``torchrun``:

    python -m benchmarks.fid_vs_steps --ckpt benchmarks/checkpoints/<file> --data-dir ../shared/data
    torchrun --nproc_per_node=2 -m benchmarks.fid_vs_steps --ckpt ... --device cuda

Outputs ``fid_vs_steps.tsv``, ``fid_vs_steps.png``, ``fid_vs_steps.md`` (sampler x NFE table,
best per budget) and ``env_fid.txt`` in ``benchmarks/results/<date>_<device>/``; the first three
are rewritten after every cell. Finished cells are
kept in ``fid_vs_steps.cells.jsonl`` there, keyed by everything that determines them (checkpoint,
Inception and reference-statistics hashes, sampler, grid, steps, n, batch size, seed), so a run
that is stopped resumes where it was with the same command.
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
COLUMNS = [
    "role",
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
    nfe = []

    def sample_batch(size: int, generator: torch.Generator) -> Tensor:
        x_T = model.denoiser.sde.prior_sample((size, *model.shape), generator=generator)
        res = S.sample(
            sampler,
            model.denoiser,
            x_T=x_T.to(device),
            grid=grid,
            n_steps=n_steps,
            generator=generator,
            denoise_final=denoise_final,
            progress=False,
        )
        nfe.append(res.nfe)
        return model.to_unit(res.x).clamp(0.0, 1.0)

    start = time.perf_counter()
    feats = generated_features(
        sample_batch, extractor, n, batch_size=batch_size, seed=seed, progress=progress
    )
    value = fid(FeatureStats.of(feats), reference)
    return {
        "nfe": max(nfe) if nfe else None,
        "n_steps": n_steps,
        "fid": value,
        "n_samples": n,
        "time_s": time.perf_counter() - start,
    }


def fid_table(
    model: Model,
    extractor: Callable,
    reference: FeatureStats,
    *,
    samplers: Sequence[str],
    nfes: Sequence[int],
    grid: str,
    reference_sampler: str,
    reference_steps: int,
    n: int,
    batch_size: int,
    seed: int | Sequence[int],
    device: torch.device,
    ending: str = "denoise_final",
    log: Callable[[str], None] = print,
    progress: bool = False,
    cache: Path | None = None,
    context: dict | None = None,
    on_row: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Every (NFE, sampler, seed) cell and the reference run, as rows, smallest budgets first.

    ``grid`` is a key of ``GRIDS`` or ``"default"`` (each sampler's own ``default_grid``).
    ``ending`` is ``"denoise_final"`` (the last step is the model's x0, 1 NFE paid from the
    budget: Ho et al. 2020 Alg. 2, score_sde's ``noise_removal``) or ``"t_min"`` (the state at
    ``t_min``, with its residual noise ``sigma(t_min)``). The reference ends with x0 and runs at
    the first seed only; ``reference_steps=0`` leaves it out.

    With ``cache`` (a JSON-lines file), a cell whose key (its labels, ``n``, ``batch_size``,
    ``seed`` and ``context``, e.g. the hashes of the checkpoint and the reference statistics) is
    already there is read back instead of run, and every cell that is run is appended to it;
    ``on_row(rows)`` is called after each cell.
    """
    if ending not in ENDINGS:
        raise ValueError(f"ending must be one of {ENDINGS}; got {ending!r}")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    rows = []
    done = _read_cells(cache)
    cells = [("cell", key, b, s) for b in nfes for key in samplers for s in seeds]
    if reference_steps:
        cells.append(("reference", reference_sampler, None, seeds[0]))
    for role, key, budget, cell_seed in cells:
        sampler = S.get_sampler(key)
        cell_ending = "denoise_final" if budget is None else ending
        if budget is None:
            n_steps, grid_obj, grid_name = reference_steps, S.UniformTime(), "uniform_time"
        else:
            paid = budget - (cell_ending == "denoise_final")
            n_steps = steps_for_budget(sampler, paid) if paid > 0 else None
            grid_obj = sampler.default_grid if grid == "default" else GRIDS[grid]()
            grid_name = f"default: {grid_obj!r}" if grid == "default" else grid
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
        cell_key = json.dumps(
            {**label, "n_steps": n_steps, "n": n, "batch_size": batch_size,
             "context": context or {}},
            sort_keys=True,
        )  # fmt: skip
        if cell_key in done:
            rows.append(done[cell_key])
            log(
                f"{role} {key} nfe<={budget} seed {cell_seed}: "
                f"FID {done[cell_key].get('fid', float('nan')):.3f} (from {cache})"
            )
            continue
        try:
            row = {
                **label,
                **fid_cell(
                    model,
                    sampler,
                    grid_obj,
                    n_steps,
                    extractor,
                    reference,
                    n=n,
                    batch_size=batch_size,
                    seed=cell_seed,
                    device=device,
                    denoise_final=cell_ending == "denoise_final",
                    progress=progress,
                ),
            }
        except (FloatingPointError, ValueError) as err:
            row = {**label, "n_steps": n_steps, "note": f"{type(err).__name__}: {err}"[:200]}
        rows.append(row)
        if cache is not None and rank_and_world()[0] == 0:
            _append_cell(cache, cell_key, row)
        if on_row is not None:
            on_row(rows)
        log(
            f"{role} {key} nfe<={budget} seed {cell_seed}: FID {row.get('fid', float('nan')):.3f} "
            f"({row.get('time_s', 0):.0f} s)"
        )
    return rows


def _append_cell(cache: Path, key: str, row: dict) -> None:
    """Append one finished cell, on a line of its own even after a torn last line, and fsync it."""
    with open(cache, "a+b") as f:
        torn = False
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps({"key": key, "row": row}) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _read_cells(cache: Path | None) -> dict[str, dict]:
    """The finished cells of a JSON-lines cache by key (the last one wins); a torn last line
    (a run killed while writing it) is skipped."""
    if cache is None or not Path(cache).exists():
        return {}
    done = {}
    for line in Path(cache).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[entry["key"]] = entry["row"]
    return done


def summary(rows: list[dict]) -> str:
    """A markdown table of FID by sampler and ending (rows) and NFE budget (columns, with the
    measured NFE where it is smaller; mean ± standard deviation over seeds where there are
    several), then the best sampler per budget and the reference runs."""
    cells = [r for r in rows if r.get("role") == "cell"]
    budgets = sorted({r["nfe_budget"] for r in cells})
    groups: dict[tuple, list[dict]] = {}
    for r in cells:
        groups.setdefault((r["sampler"], r.get("ending") or "t_min", r["nfe_budget"]), []).append(r)

    def stats(rs: list[dict]) -> tuple[float, float, int] | None:
        values = [r["fid"] for r in rs if r.get("fid") is not None]
        if not values:
            return None
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
        return mean, var**0.5, len(values)

    def show(rs: list[dict] | None) -> str:
        if not rs:
            return "–"
        st = stats(rs)
        if st is None:
            return "failed"
        nfe = {r.get("nfe") for r in rs} - {None, rs[0]["nfe_budget"]}
        spread = f" ± {st[1]:.1f}" if st[2] > 1 else ""
        return f"{st[0]:.1f}{spread}" + (f" ({max(nfe)})" if nfe else "")

    lines = [
        "| sampler | ending | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
        "| --- | --- |" + " --- |" * len(budgets),
    ]
    for key, ending in dict.fromkeys((s, e) for s, e, _ in groups):
        lines.append(
            f"| `{key}` | {ending} | "
            + " | ".join(show(groups.get((key, ending, b))) for b in budgets)
            + " |"
        )
    best = []
    for b in budgets:
        scored = [(st[0], k[0]) for k, rs in groups.items() if k[2] == b and (st := stats(rs))]
        best.append(min(scored, default=None))
    lines.append(
        "| **best** | | "
        + " | ".join("–" if t is None else f"`{t[1]}` {t[0]:.1f}" for t in best)
        + " |"
    )
    seeds = sorted({r.get("seed") for r in cells if r.get("seed") is not None})
    if len(seeds) > 1:
        lines.append(f"\nMean ± standard deviation over seeds {seeds}.")
    for r in rows:
        if r.get("role") == "reference":
            lines.append(
                f"\nReference: `{r['sampler']}`, {r['n_steps']} steps on `{r['grid']}` "
                f"({r.get('nfe')} NFE, ending {r.get('ending') or 'denoise_final'}): FID "
                + (f"{r['fid']:.1f}" if r.get("fid") is not None else "failed")
                + f", {r.get('n_samples')} samples."
            )
    return "\n".join(lines)


def pick_samplers(requested: Sequence[str] | None) -> list[str]:
    if requested:
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
    parser.add_argument("--n", type=int, default=1000, help="samples per cell (default 1000)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--nfe", nargs="+", type=int, default=list(NFES))
    parser.add_argument(
        "--samplers",
        nargs="+",
        help=f"registry keys (default: the first {N_DEFAULT} registered of {DEFAULT_SAMPLERS})",
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
        "--reference-sampler", help=f"default: the first registered of {REFERENCE_SAMPLERS}"
    )
    parser.add_argument(
        "--reference-steps", type=int, default=1000, help="0 leaves the reference run out"
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
    ref_key = args.reference_sampler or next(k for k in REFERENCE_SAMPLERS if k in S.SAMPLERS)
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
        reference_sampler=ref_key,
        reference_steps=args.reference_steps,
        n=args.n,
        batch_size=args.batch_size,
        seed=args.seeds,
        device=device,
        ending=args.ending,
        log=log,
        cache=folder / "fid_vs_steps.cells.jsonl",
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
