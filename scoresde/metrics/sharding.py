"""Spread batched work over ``torch.distributed`` ranks, with results that do not depend on how
many processes ran.

Work is cut into batches indexed globally (batch ``b`` covers items ``[b * batch_size,
(b + 1) * batch_size)``); rank ``r`` of ``W`` computes batches ``r, r + W, r + 2W, ...`` and the
outputs are gathered back in batch order on every rank. Each batch is computed from its global
index alone (its seed comes from :func:`batch_generator`), so one process and ``W`` processes
compute the same batches with the same inputs and return the same tensor. Launch with
``torchrun --nproc_per_node=W script.py`` after ``torch.distributed.init_process_group``; without
an initialised process group everything runs in the calling process.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from ..utils import check_int

__all__ = ["rank_and_world", "batch_slices", "batch_generator", "map_batches"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_slices(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the batches of ``range(n)``; the last one may be short."""
    check_int("n", n, low=1)
    check_int("batch_size", batch_size, low=1)
    return [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


def batch_generator(seed: int, batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for batch ``batch`` of a run seeded with ``seed``.

    The state comes from ``numpy.random.SeedSequence([seed, batch])``, so the streams of different
    ``(seed, batch)`` pairs are independent (``seed + batch`` would make seed 0's batch 1 equal
    seed 1's batch 0)."""
    check_int("seed", seed, low=0)
    check_int("batch", batch, low=0)
    state = int(np.random.SeedSequence([seed, batch]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(state & ((1 << 63) - 1))


def map_batches(
    fn: Callable[[int, int, int], Tensor],
    n: int,
    batch_size: int,
    *,
    progress: bool = False,
    desc: str | None = None,
) -> Tensor:
    """Apply ``fn(batch, start, stop)`` to every batch of ``range(n)`` and concatenate the
    outputs (each ``(stop - start, *shape)``) in batch order.

    With an initialised process group the batches are dealt round-robin over the ranks and the
    result is all-gathered, so every rank returns the full ``(n, *shape)`` tensor (on the CPU).
    """
    slices = batch_slices(n, batch_size)
    rank, world = rank_and_world()
    mine = list(range(rank, len(slices), world))
    outs = []
    for b in tqdm(mine, desc=desc, disable=not progress or rank != 0, leave=False):
        start, stop = slices[b]
        out = fn(b, start, stop)
        if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != stop - start:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"fn({b}, {start}, {stop}) must return a tensor with {stop - start} rows; got {got}"
            )
        outs.append(out.detach().cpu())
    if world == 1:
        return torch.cat(outs)
    return _gather_in_batch_order(outs, slices, rank, world)


def _gather_in_batch_order(outs, slices, rank, world) -> Tensor:
    # Every rank must agree on the trailing shape and dtype, including a rank that had no batch.
    meta = [None] * world
    local_meta = (tuple(outs[0].shape[1:]), outs[0].dtype) if outs else None
    dist.all_gather_object(meta, local_meta)
    known = [m for m in meta if m is not None]
    if any(m != known[0] for m in known):
        raise ValueError(f"ranks returned batches of different trailing shape or dtype: {meta}")
    tail, dtype = known[0]
    rows = [
        sum(slices[b][1] - slices[b][0] for b in range(r, len(slices), world)) for r in range(world)
    ]
    width = max(rows)
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    )
    local = torch.zeros((width, *tail), dtype=dtype, device=device)
    if outs:
        local[: rows[rank]] = torch.cat(outs).to(device)
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    pieces, offsets = [], [0] * world
    for b, (start, stop) in enumerate(slices):
        r = b % world
        pieces.append(gathered[r][offsets[r] : offsets[r] + stop - start])
        offsets[r] += stop - start
    return torch.cat(pieces).cpu()
