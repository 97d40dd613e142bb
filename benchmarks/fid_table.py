"""The cells of the steps-vs-FID table (:mod:`benchmarks.fid_vs_steps`): one cell is the FID of
``n`` samples of one sampler or peer at one NFE budget, grid, ending and seed, all cells drawn
from the same prior draws; :func:`fid_table` runs them, reads finished ones back from the
folder's caches (:mod:`benchmarks.fid_cache`) and returns them as rows of :data:`COLUMNS`."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

import scoresde as S
from benchmarks.exact_error import GRIDS, is_adaptive, steps_for_budget
from benchmarks.fid_bootstrap import fid_sd
from benchmarks.fid_cache import append_cell, load_features, read_cells, save_features
from benchmarks.fid_inputs import Model
from benchmarks.fid_peers import PEERS, check_peers, peer_grid, peer_run, peer_steps
from scoresde.metrics import FeatureStats, fid, generated_features, rank_and_world
from scoresde.recommend.fid_rows import FID_ENDINGS
from scoresde.recommend.tables import split_spec

__all__ = ["ENDINGS", "SCORING_CONTEXT", "COLUMNS", "sampler_of", "cell_features", "ours",
           "fid_cell", "cell_steps", "smallest_budget", "fid_table", "folder_rows",
           "hidden_cells", "fill_fid_sd"]  # fmt: skip

ENDINGS = FID_ENDINGS  # the table's endings, as scoresde recommend reads them
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
    "fid_sd",
    "n_samples",
    "time_s",
    "note",
]


def sampler_of(spec: str) -> S.Sampler:
    """The sampler of a table row's name: a registry key, or ``key:option=value,...`` with
    Python literals as values (``adaptive_sde:rel_tol=0.2``, ``restart:K=1``); the name with its
    options is the row's label (and cache key). Raises ``ValueError`` naming the spec."""
    key, options = split_spec(spec)
    if key not in S.SAMPLERS:
        raise ValueError(f"unknown sampler {key!r} in {spec!r}; registered: {sorted(S.SAMPLERS)}")
    return S.get_sampler(key, **options)


def cell_steps(key: str, budget: int, ending: str, *, peer: bool = False) -> int | None:
    """The step count of a sampler (or ``peer``) cell at an NFE budget: the most steps whose
    model calls fit it, ``denoise_final`` paying 1 of them for the final x0; ``None`` when
    none fit (the cell is skipped)."""
    if peer:
        return peer_steps(key, budget, ending)
    paid = budget - (ending == "denoise_final")
    return steps_for_budget(sampler_of(key), paid) if paid > 0 else None


def smallest_budget(key: str, ending: str, *, peer: bool = False, limit: int = 1000) -> int | None:
    """The smallest NFE budget at which a sampler (or ``peer``) has a cell with ``ending``;
    ``None`` when none up to ``limit`` has (a peer that cannot end that way)."""
    budgets = range(1, limit + 1)
    return next((b for b in budgets if cell_steps(key, b, ending, peer=peer) is not None), None)


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
    draws; rows with role ``peer``). A sampler is a registry key or ``key:option=value,...``
    (:func:`sampler_of`); an adaptive one (``nfe(1) is None``) picks its own steps, so it runs
    once per seed (row role ``adaptive``, no budget, its NFE the largest batch's). Each reference
    sampler (paired with its ``reference_steps``; one count serves all) runs at the first seed
    on ``UniformTime`` if it is stochastic, else on its ``default_grid``, and ends with x0; 0
    steps leave it out.

    With ``cache`` (a JSON-lines file), a cell whose key (its labels, ``n``, ``batch_size``,
    ``seed`` and ``context``, e.g. the hashes of the checkpoint and the reference statistics) is
    already there is read back instead of run, and every cell that is run is appended to it;
    ``on_row(rows)`` is called after each cell. With ``features`` (a folder), each cell's
    generated features are kept there (:mod:`benchmarks.fid_cache`) under its key without the
    ``context`` entries in :data:`SCORING_CONTEXT`, and a cell whose features are there is
    scored from them without sampling (e.g. against other reference statistics).

    Each scored row carries ``fid_sd``, the bootstrap standard deviation of its FID over
    redraws of its features (:func:`benchmarks.fid_bootstrap.fid_sd`): its sampling noise at
    ``n``, the error bar of a one-seed cell.
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
    adaptive = [k for k in samplers if is_adaptive(sampler_of(k))]
    cells = [
        (role, key, b, s)
        for b in nfes
        for role, keys in (("cell", [k for k in samplers if k not in adaptive]), ("peer", peers))
        for key in keys
        for s in seeds
    ]
    cells += [("adaptive", k, None, s) for k in adaptive for s in seeds]
    cells += [("reference", k, steps, seeds[0]) for k, steps in zip(ref_keys, ref_steps, strict=True)
              if steps]  # fmt: skip
    for role, key, budget, cell_seed in cells:
        cell_ending = "denoise_final" if role == "reference" else ending
        family = PEERS[key].family if role == "peer" else "scoresde"
        if role == "peer":
            n_steps, grid_name = cell_steps(key, budget, cell_ending, peer=True), peer_grid(key)
        else:
            sampler = sampler_of(key)
            if role == "reference":
                n_steps, budget = budget, None
                grid_obj = S.UniformTime() if sampler.stochastic else sampler.default_grid
            else:
                grid_obj = sampler.default_grid if grid == "default" else GRIDS[grid]()
                if role == "adaptive":  # output times t_max -> t_min; it picks its own steps
                    n_steps = 1
                else:
                    n_steps = cell_steps(key, budget, cell_ending)
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
        feature_key = _feature_key(cell_key)
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
                   "fid": fid(FeatureStats.of(feats), reference),
                   "fid_sd": fid_sd(feats, reference), "n_samples": n,
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


def hidden_cells(cache: Path, context: dict, n: int) -> str | None:
    """A line saying how many cells of ``cache`` the folder's table leaves out
    (:func:`folder_rows` shows only those with this ``context`` and ``n``: a table compares like
    with like) and what they were made with; ``None`` when it shows them all."""
    ours = {"n": n, **json.loads(json.dumps(context, sort_keys=True))}
    groups: Counter[str] = Counter()
    names = {}  # the settings that differ, in a stable order
    for key in read_cells(cache):
        k = json.loads(key)
        theirs = {"n": k.get("n"), **k.get("context", {})}
        differ = [x for x in {**ours, **theirs} if theirs.get(x) != ours.get(x)]
        if differ:
            names.update(dict.fromkeys(differ))
            groups[", ".join(_setting(x, theirs.get(x)) for x in differ)] += 1
    if not groups:
        return None
    made = "; ".join(f"{g} ({c})" if len(groups) > 1 else g for g, c in groups.items())
    shown = ", ".join(_setting(x, ours.get(x)) for x in names)
    count = sum(groups.values())
    return (f"{count} cell{'s' * (count != 1)} in {cache.parent} {'were' if count != 1 else 'was'} "
            f"made with {made}; this table shows the {shown} cells only")  # fmt: skip


def _setting(name: str, value) -> str:
    # a hash is shown by its first digits: enough to tell two files apart
    return f"{name}={value[:12] if name.endswith('_sha256') and value else value}"


def _feature_key(cell_key: str) -> str:
    """The key of a cell's kept features: its cell key without the :data:`SCORING_CONTEXT`."""
    keyed = json.loads(cell_key)
    keyed["context"] = {k: v for k, v in keyed["context"].items() if k not in SCORING_CONTEXT}
    return json.dumps(keyed, sort_keys=True)


def fill_fid_sd(
    cache: Path, features: Path, context: dict, n: int, reference: FeatureStats,
    log: Callable[[str], None] = print,
) -> int:  # fmt: skip
    """Give ``fid_sd`` to every scored cell of ``cache`` with this ``context`` and ``n`` that
    lacks it (cells from before the column) and whose features are kept in ``features``,
    appending the completed rows; returns how many were filled."""
    context = json.loads(json.dumps(context, sort_keys=True))
    filled = 0
    for cell_key, row in read_cells(cache).items():
        k = json.loads(cell_key)
        scored_without_sd = row.get("fid") is not None and row.get("fid_sd") is None
        if k.get("context") != context or k.get("n") != n or not scored_without_sd:
            continue
        stored = load_features(features, _feature_key(cell_key))
        if stored is None:
            continue
        row = {**row, "fid_sd": fid_sd(stored[0], reference)}
        append_cell(cache, cell_key, row)
        filled += 1
        log(f"error bar of {row['sampler']} nfe<={row.get('nfe_budget')}: ±{row['fid_sd']:.2f}")
    return filled
