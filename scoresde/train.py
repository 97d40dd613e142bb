"""The training loop: AdamW, EMA, gradient clipping, warm-up, atomic checkpoints, exact resume, DDP.

``train(denoiser, data, config, out_dir=...)`` minimises :func:`scoresde.losses.dsm_loss` of the
denoiser's network. Everything random is a function of ``config.seed`` and the step:

- the batch order is a permutation per epoch drawn from ``seed`` and the epoch number (so the
  data position is the step count alone; the last partial batch of an epoch is dropped);
- ``t`` and ``eps`` come from one ``torch.Generator`` whose state is checkpointed, drawn for the
  *global* batch on every process (each process keeps its slice), so ``world_size`` processes see
  exactly the samples one process would;
- torch's global RNG (dropout), Python's and NumPy's states are checkpointed too.

Resuming therefore continues to bit-identical parameters, and a DDP run matches a one-process run
on the same global batch up to the order of floating-point reductions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .data import images_to_float
from .denoiser import Denoiser
from .losses import WEIGHTINGS, TimeSampler, dsm_loss, ssm_loss
from .utils import check_int, check_real

__all__ = ["TrainConfig", "TrainResult", "train", "CHECKPOINT_NAME", "EMA_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"  # full state, for resuming
EMA_NAME = "ema.pt"  # EMA weights + how to rebuild the Denoiser, for sampling


@dataclass
class TrainConfig:
    """Optimisation settings (keyword arguments, validated).

    Args:
        steps: optimizer steps in total (a resumed run stops at the same total).
        batch_size: the global batch (split evenly over DDP processes).
        lr: AdamW peak learning rate, reached linearly over ``warmup`` steps.
        weight_decay: AdamW's decoupled weight decay.
        warmup: linear warm-up steps (0: none).
        grad_clip: maximum global gradient norm (``None``: no clipping).
        ema_decay: EMA decay; the effective decay ``min(ema_decay, (1 + n) / (10 + n))`` warms up
            so that early averages are not dominated by the random initialisation.
        loss: ``"dsm"`` (denoising score matching, :func:`~scoresde.losses.dsm_loss`) or
            ``"ssm"`` (sliced score matching, :func:`~scoresde.losses.ssm_loss`, with
            variance reduction and one projection; its ``"sigma2"`` weighting replaces
            ``weighting``, and it cannot train a class-conditional network).
        weighting: ``"none" | "snr" | "likelihood"`` (see :mod:`scoresde.losses`).
        t_sampler: ``"uniform"`` or ``"lambda"`` (importance sampling of t).
        label_dropout: probability of training a labelled example as unconditional (its label
            replaced by the network's ``num_classes``, the "no class" label), so that the network
            learns both models classifier-free guidance combines (Ho & Salimans 2022, Alg. 1;
            0.1 there).
        seed: seeds the batch order and the ``t`` / ``eps`` generator.
        ckpt_every: write a checkpoint every this many steps (and at the end).
        log_every: append a line to ``log.jsonl`` every this many steps.
        keep_last: checkpoints kept (``checkpoint.pt``, then ``checkpoint.1.pt``, ...); resuming
            falls back to an older one when the newest cannot be read.
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    loss: str = "dsm"
    weighting: str = "none"
    t_sampler: str = "uniform"
    label_dropout: float = 0.0
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 50
    keep_last: int = 2

    def __post_init__(self):
        check_int("steps", self.steps, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_int("warmup", self.warmup, low=0)
        if self.grad_clip is not None:
            check_real("grad_clip", self.grad_clip, low=0.0, low_open=True)
        check_real("ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True)
        if self.loss not in ("dsm", "ssm"):
            raise ValueError(f"loss must be 'dsm' or 'ssm'; got {self.loss!r}")
        if self.loss == "ssm" and self.weighting != "none":
            raise ValueError(
                f"weighting={self.weighting!r} is a dsm option; loss='ssm' weights each noise "
                "level by sigma^2 (ssm_loss's default)"
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}; got {self.weighting!r}")
        TimeSampler.parse(self.t_sampler)
        check_real("label_dropout", self.label_dropout, low=0.0, high=1.0, high_open=True)
        check_int("seed", self.seed, low=0)
        check_int("ckpt_every", self.ckpt_every, low=1)
        check_int("log_every", self.log_every, low=1)
        check_int("keep_last", self.keep_last, low=1)


@dataclass
class TrainResult:
    """``losses[n]`` is the (global-batch) loss of step ``n``, over all sessions of a resumed run;
    ``timing`` holds seconds spent per phase in *this* session."""

    step: int
    losses: list[float]
    timing: dict[str, float]
    images_per_s: float
    checkpoint: Path | None = None
    ema: nn.Module | None = field(default=None, repr=False)


# TrainConfig fields that may change on resume: how long and how often, not what is optimised
_SCHEDULE_FIELDS = ("steps", "ckpt_every", "log_every", "keep_last")


def _recipe(config: TrainConfig, data: Tensor, data_info: dict | None) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: the optimisation settings and
    the data (its shape, dtype and sha256), so that resuming on other data, another batch size,
    learning rate or seed is caught."""
    settings = {k: v for k, v in asdict(config).items() if k not in _SCHEDULE_FIELDS}
    raw = data.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    fingerprint = {
        "shape": list(data.shape),
        "dtype": str(data.dtype),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return {"train_config": settings, "data": {**dict(data_info or {}), "fingerprint": fingerprint}}


def _recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (a checkpoint written before the data
    fingerprint was recorded is compared on its settings only)."""
    changes = [
        f"{k}: {old['train_config'].get(k)!r} -> {v!r}"
        for k, v in new["train_config"].items()
        if old["train_config"].get(k, v) != v
    ]
    old_data, new_data = dict(old["data"]), dict(new["data"])
    if "fingerprint" not in old_data:
        new_data.pop("fingerprint")
    if old_data != new_data:
        changes.append(f"data: {old_data!r} -> {new_data!r}")
    return changes


def _checkpoint_paths(ckpt_path: Path, keep_last: int) -> list[Path]:
    """``checkpoint.pt`` (newest), ``checkpoint.1.pt``, ... ``checkpoint.{keep_last-1}.pt``."""
    return [ckpt_path] + [
        ckpt_path.with_name(f"{ckpt_path.stem}.{i}{ckpt_path.suffix}") for i in range(1, keep_last)
    ]


def _rotate(paths: list[Path]) -> None:
    """Shift the kept checkpoints down one place before the newest is written. The newest moves
    by a hard link (a copy where links are not supported), so ``checkpoint.pt`` stays in place
    until :func:`~scoresde.checkpoint.atomic_save` replaces it: a kill at any moment leaves a
    readable checkpoint under the usual name."""
    for older, newer in zip(paths[:0:-1], paths[-2::-1], strict=True):
        if not newer.is_file():
            continue
        if newer != paths[0]:
            os.replace(newer, older)
            continue
        tmp = older.with_name(f".{older.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(newer, tmp)
        except OSError:
            shutil.copy2(newer, tmp)
        os.replace(tmp, older)


def _load_newest_readable(paths: list[Path], device) -> dict[str, Any]:
    """The newest checkpoint that loads; the ones skipped are named in a warning."""
    skipped = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            state = ckpt_io.load(path, map_location=device)
        except ValueError as err:
            skipped.append(str(err))
            continue
        if skipped:
            warnings.warn(
                f"resuming from the older {str(path)!r}; skipped: {'; '.join(skipped)}",
                stacklevel=3,
            )
        return state
    raise FileNotFoundError(
        f"resume=True but there is no readable checkpoint at {str(paths[0])!r}"
        + (f" nor at the older {[str(p) for p in paths[1:]]}" if len(paths) > 1 else "")
        + (f" ({'; '.join(skipped)})" if skipped else "")
    )


def _clean_stale_temp_files(out_dir: Path) -> None:
    """Remove the temporary files that a killed ``atomic_save`` leaves (``.NAME.xxxx.tmp``)."""
    for path in out_dir.glob(".*.pt.*.tmp"):
        path.unlink(missing_ok=True)


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resume starts from), so the
    resumed run does not log those steps twice."""
    if not log_path.is_file():
        return
    lines = log_path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a torn last line of a killed run
            continue
    if len(kept) != len(lines):
        tmp = log_path.with_name(log_path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, log_path)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "generator": gen.get_state(),
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


@torch.no_grad()
def _ema_update(ema: list[Tensor], params: list[Tensor], decay: float) -> None:
    torch._foreach_lerp_(ema, params, 1.0 - decay)


def train(
    denoiser: Denoiser,
    data: Tensor,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    allow_recipe_change: bool = False,
    labels: Tensor | None = None,
    data_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``denoiser.net`` (an ``nn.Module`` with a ``config`` dict) on ``data``.

    Args:
        denoiser: the network with its SDE, parameterization and time input; all four are
            recorded in every checkpoint.
        data: ``(N, *dims)`` training set; ``uint8`` images are mapped to ``[-1, 1]`` per batch.
        config: :class:`TrainConfig`.
        out_dir: where ``checkpoint.pt``, ``ema.pt`` and ``log.jsonl`` go (``None``: nothing is
            written).
        resume: continue from ``out_dir/checkpoint.pt`` (or, if it cannot be read, the newest
            older one kept by ``config.keep_last``). The run must have the checkpoint's data and
            optimisation settings (only ``steps``, ``ckpt_every``, ``log_every`` and
            ``keep_last`` may change), else ``ValueError`` lists what differs.
        allow_recipe_change: resume although the data or settings differ; the checkpoint then
            records every earlier recipe under ``"recipe_history"``.
        labels: ``(N,)`` class labels for a class-conditional network.
        data_info: free-form description of the data stored in checkpoints.
        progress: tqdm bar with the running loss (rank 0 only).

    Under ``torch.distributed`` (initialised by the caller, e.g. via ``torchrun``) the network is
    wrapped in ``DistributedDataParallel``; ``batch_size`` must be divisible by the world size,
    and rank 0 writes the files.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    model = denoiser.net
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "config", None), dict):
        raise TypeError("denoiser.net must be an nn.Module with a config dict (scoresde.models)")
    if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] < config.batch_size:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ValueError(
            f"data must be a tensor (N, *dims) with N >= batch_size={config.batch_size}; "
            f"got {shape}"
        )
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != data.shape[0]):
        raise ValueError(f"labels must have shape ({data.shape[0]},); got {tuple(labels.shape)}")
    num_classes = getattr(model, "num_classes", None)
    if config.label_dropout > 0 and (labels is None or num_classes is None):
        raise ValueError(
            f"label_dropout={config.label_dropout} needs labels and a class-conditional network "
            "(num_classes set); got "
            + ("no labels" if labels is None else "a network without num_classes")
        )
    if config.loss == "ssm" and labels is not None:
        raise ValueError("loss='ssm' trains unconditional networks only; got labels")
    rank, world = _world()
    if config.batch_size % world:
        raise ValueError(
            f"batch_size={config.batch_size} must be divisible by the world size {world}"
        )
    out_dir = None if out_dir is None else Path(out_dir)
    ckpt_path = None if out_dir is None else out_dir / CHECKPOINT_NAME
    if resume and ckpt_path is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    ckpt_paths = [] if ckpt_path is None else _checkpoint_paths(ckpt_path, config.keep_last)

    device = next(model.parameters()).device
    model.train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # foreach: one kernel per op over all parameters (the default only on GPUs)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    gen = torch.Generator().manual_seed(config.seed)
    header = {
        "format": ckpt_io.FORMAT,
        "sde": ckpt_io.sde_to_dict(denoiser.sde),
        "parameterization": denoiser.parameterization.value,
        "time_input": ckpt_io.time_input_to_dict(denoiser.time_input),
        "model_config": model.config,
        **_recipe(config, data, data_info),
        "recipe_history": [],
    }
    step, losses, train_time = 0, [], 0.0
    if resume:
        state = _load_newest_readable(ckpt_paths, device)
        for key in ("sde", "parameterization", "time_input", "model_config"):
            if state[key] != header[key]:
                raise ValueError(
                    f"cannot resume: the checkpoint's {key} {state[key]!r} differs from this "
                    f"run's {header[key]!r}"
                )
        changes = _recipe_changes(state, header)
        if changes and not allow_recipe_change:
            raise ValueError(
                "cannot resume with another recipe (" + "; ".join(changes) + "); pass "
                "allow_recipe_change=True (--allow-recipe-change) to continue anyway"
            )
        history = list(state.get("recipe_history", []))
        if changes:
            old = {k: state[k] for k in ("train_config", "data")}
            history.append({**old, "until_step": state["step"]})
        header["recipe_history"] = history
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], gen)
        step, losses, train_time = state["step"], list(state["losses"]), state["train_time_s"]

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    train_denoiser = Denoiser(
        net, denoiser.sde, denoiser.parameterization, time_input=denoiser.time_input
    )
    t_sampler = TimeSampler.parse(config.t_sampler)
    local = slice(rank * config.batch_size // world, (rank + 1) * config.batch_size // world)
    per_epoch = data.shape[0] // config.batch_size
    params, ema_params = list(model.parameters()), list(ema.parameters())
    timing = dict.fromkeys(("data", "forward", "backward", "optimizer", "checkpoint"), 0.0)

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        start = time.perf_counter()
        if rank == 0:
            full = {
                **header,
                "step": step,
                "losses": losses,
                "train_time_s": train_time,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(gen),
                "timing": timing,
            }
            _rotate(ckpt_paths)
            ckpt_io.atomic_save(full, ckpt_path)
            slim = {k: v for k, v in full.items() if k not in ("model", "optimizer", "rng")}
            ckpt_io.atomic_save(slim, out_dir / EMA_NAME)
        if world > 1:
            dist.barrier()
        timing["checkpoint"] += time.perf_counter() - start

    if out_dir is not None and rank == 0:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=out_dir).close()
        except OSError as err:
            raise ValueError(
                f"out_dir {str(out_dir)!r} is not a writable directory ({err.strerror})"
            ) from err
        _clean_stale_temp_files(out_dir)
        _truncate_log(out_dir / "log.jsonl", step)
    log = None if (out_dir is None or rank != 0) else open(out_dir / "log.jsonl", "a")  # noqa: SIM115
    bar = tqdm(total=config.steps, initial=step, disable=not progress or rank != 0, desc="train")
    session_steps, window, perm, perm_epoch = 0, [], None, -1
    try:
        while step < config.steps:
            t0 = time.perf_counter()
            epoch, j = divmod(step, per_epoch)
            if perm_epoch != epoch:
                perm, perm_epoch = _epoch_permutation(data.shape[0], config.seed, epoch), epoch
            idx = perm[j * config.batch_size : (j + 1) * config.batch_size]
            x0 = data[idx]
            x0 = images_to_float(x0) if x0.dtype == torch.uint8 else x0
            t = t_sampler.sample(denoiser.sde, config.batch_size, generator=gen)
            noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
            # SSM's projection, drawn for the global batch like t and eps (DDP sees the same)
            v = (
                torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
                if config.loss == "ssm"
                else None
            )
            y = None if labels is None else labels[idx]
            if y is not None and config.label_dropout > 0:
                drop = torch.rand(y.shape, generator=gen) < config.label_dropout
                y = torch.where(drop, num_classes, y)
            y = None if y is None else y[local].to(device)
            x0, t, noise = x0[local].to(device), t[local], noise[local].to(device)
            v = None if v is None else v[local].to(device)
            t1 = time.perf_counter()
            if config.loss == "dsm":
                loss = dsm_loss(
                    train_denoiser,
                    x0,
                    weighting=config.weighting,
                    t_sampler=t_sampler,
                    t=t,
                    noise=noise,
                    class_labels=y,
                )
            else:
                loss = ssm_loss(
                    train_denoiser, x0, t_sampler=t_sampler, t=t, noise=noise, projections=v[None]
                )
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
            lr = config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            _ema_update(ema_params, params, min(config.ema_decay, (1 + step) / (10 + step)))
            value = loss.detach()
            if world > 1:
                dist.all_reduce(value)
                value /= world
            value = float(value)
            if not math.isfinite(value):
                raise FloatingPointError(f"non-finite training loss {value} at step {step}")
            losses.append(value)
            step += 1
            session_steps += 1
            t4 = time.perf_counter()
            for key, a, b in (
                ("data", t0, t1),
                ("forward", t1, t2),
                ("backward", t2, t3),
                ("optimizer", t3, t4),
            ):
                timing[key] += b - a
            train_time += t4 - t0
            window.append(value)
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                mean = sum(window) / len(window)
                bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
                if log is not None:
                    log.write(
                        json.dumps(
                            {
                                "step": step,
                                "loss": mean,
                                "lr": lr,
                                "train_time_s": round(train_time, 2),
                            }
                        )
                        + "\n"
                    )
                    log.flush()
                window = []
            if step % config.ckpt_every == 0 or step == config.steps:
                save(step)
    finally:
        bar.close()
        if log is not None:
            log.close()
    elapsed = sum(timing[k] for k in ("data", "forward", "backward", "optimizer"))
    return TrainResult(
        step=step,
        losses=losses,
        timing=timing,
        images_per_s=session_steps * config.batch_size / elapsed if elapsed else 0.0,
        checkpoint=ckpt_path,
        ema=ema,
    )
