"""Grids fitted to a model and a sampler by running the sampler: :class:`Optimized`.

This lives beside the driver, not in :mod:`scoresde.grids`: a fitted grid runs samplers, and the
samplers import the grids.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .denoiser import Denoiser
from .grids import Explicit, TimeGrid, UniformLambda
from .samplers import Sampler, UniPC, get_sampler, sample
from .sde import SDE
from .utils import check_bool, check_int

__all__ = ["Optimized"]


class _Stop(Exception):
    """Raised inside the objective to end the search (budget spent or no progress)."""


def _net_dtype_device(denoiser: Denoiser) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the network's first parameter or buffer; float64 on the CPU
    for a network without any (a closed-form model)."""
    net = denoiser.net
    if isinstance(net, torch.nn.Module):
        for t in (*net.parameters(), *net.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return torch.float64, torch.device("cpu")


class Optimized(TimeGrid):
    r"""A grid fitted for one model, sampler and step count, from a handful of reference
    trajectories (in the spirit of Sabour et al. 2024, "Align Your Steps", and Xue et al. 2024,
    "Accelerating Diffusion Sampling with Optimized Time Steps").

    The interior times are parameterised in ``lambda_``:
    ``lambda_k = lambda_0 + (lambda_n - lambda_0) sum_{j<=k} softmax(theta)_j``, strictly
    monotone for every ``theta`` (``theta = 0`` is :class:`UniformLambda`), with the endpoints
    fixed. ``theta`` minimises the mean over ``shape[0]`` fixed prior draws of
    ``|x_sampler(grid) - x_ref|``, where ``x_ref`` comes from ``reference_sampler`` on a fine
    logSNR-uniform grid. The minimiser is scipy's Nelder–Mead started at the ``start`` grid
    (a warm start): derivative-free, so it works for samplers whose coefficients are not
    differentiable in the grid (e.g. DEIS's quadrature), and it never returns a grid worse on the
    fitting draws than its start.

    Cost, in network calls on batches of ``shape[0]`` draws:
    ``reference_sampler.nfe(reference_steps)`` once, then ``sampler.nfe(n_steps)`` per objective
    evaluation (each +1 with ``denoise_final``), at most ``max_evals`` evaluations and at most
    ``max_nfe`` calls in all; the search also stops after ``patience`` evaluations without a 0.1 %
    improvement. :meth:`cost` gives the bound, ``last_fit`` what a fit spent. Measured
    (``docs/benchmarks.md``): on the MNIST checkpoint of ``benchmarks/checkpoints`` (1.1 M-parameter
    UNet), ``unipc`` at 10 NFE with 8 draws, a 50-step reference and 200 evaluations (2050 network
    calls on batches of 8) took 113 s of CPU time on one thread; a closed-form 2-D model fits in
    seconds.

    Use it as any grid (``sample(..., grid=Optimized(...), n_steps=10)`` fits on first use and
    caches the result per SDE and step count), or call :meth:`fit` for the :class:`Explicit`
    grid and save it with :meth:`Explicit.save` (``python -m scoresde sample --grid FILE.pt``
    reads it).

    Args:
        sampler: the deterministic sampler (instance or registry key) the grid is for.
        denoiser: the model the grid is for.
        shape: ``(n_draws, *dims)`` of the prior draws the objective averages over.
        seed: seed of those draws.
        start: the grid the search starts from (default :class:`UniformLambda`), e.g. the grid
            the sampler is used with today or an earlier fit.
        reference_sampler: sampler of the reference solution (default UniPC with solver order 3
            and no lower-order final steps: order 4).
        reference_steps: steps of the reference solution on a logSNR-uniform grid.
        denoise_final: fit the grid for sampling with ``denoise_final=True``.
        max_evals: most objective evaluations (each one sampling run of ``n_steps``).
        max_nfe: most network calls of the whole fit, reference included (``None``: no bound).
        patience: stop after this many evaluations without a 0.1 % better loss (``None``: never).
        dtype, device: of the prior draws and every run (default: the network's parameters',
            float64 on the CPU for a network without parameters).
        progress: show a tqdm bar over the evaluations.
        t_start, t_end: endpoints (default ``T`` and ``t_min``).
    """

    name = "optimized"

    def __init__(
        self,
        sampler,
        denoiser,
        *,
        shape: tuple[int, ...],
        seed: int = 0,
        start: TimeGrid | None = None,
        reference_sampler=None,
        reference_steps: int = 512,
        denoise_final: bool = False,
        max_evals: int = 2000,
        max_nfe: int | None = None,
        patience: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        progress: bool = True,
        t_start: float | None = None,
        t_end: float | None = None,
    ):
        super().__init__(t_start=t_start, t_end=t_end)
        sampler = get_sampler(sampler) if isinstance(sampler, str) else sampler
        if not isinstance(sampler, Sampler) or sampler.stochastic or sampler.nfe(1) is None:
            raise ValueError(
                f"sampler must be a deterministic fixed-step Sampler or its registry key (the "
                f"objective compares final states); got {sampler!r}"
            )
        if reference_sampler is not None:
            if isinstance(reference_sampler, str):
                reference_sampler = get_sampler(reference_sampler)
            if not isinstance(reference_sampler, Sampler) or reference_sampler.stochastic:
                raise ValueError(
                    f"reference_sampler must be None or a deterministic Sampler or its registry "
                    f"key; got {reference_sampler!r}"
                )
        if not isinstance(denoiser, Denoiser):
            raise ValueError(f"denoiser must be a scoresde.Denoiser; got {type(denoiser).__name__}")
        shape = tuple(shape)
        if len(shape) < 1 or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ValueError(
                f"shape must be a tuple of positive ints (n_draws, *dims); got {shape!r}"
            )
        if start is not None and (not isinstance(start, TimeGrid) or isinstance(start, Explicit)):
            raise ValueError(
                f"start must be None or a TimeGrid that builds any step count (not Explicit) "
                f"with the same endpoints; got {start!r}"
            )
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be None or a floating torch.dtype; got {dtype!r}")
        self.sampler = sampler
        self.denoiser = denoiser
        self.shape = shape
        self.seed = check_int("seed", seed, low=0)
        self.start = UniformLambda() if start is None else start
        self.reference_sampler = (
            UniPC(solver_order=3, lower_order_final=False)
            if reference_sampler is None
            else reference_sampler
        )
        self.reference_steps = check_int("reference_steps", reference_steps, low=2)
        self.denoise_final = check_bool("denoise_final", denoise_final)
        self.max_evals = check_int("max_evals", max_evals, low=1)
        self.max_nfe = None if max_nfe is None else check_int("max_nfe", max_nfe, low=1)
        self.patience = None if patience is None else check_int("patience", patience, low=1)
        self.dtype = dtype
        self.device = None if device is None else torch.device(device)
        self.progress = check_bool("progress", progress)
        self._fitted: dict = {}
        self.last_fit: dict | None = None

    def __repr__(self) -> str:
        return f"Optimized(sampler={self.sampler!r}, shape={self.shape}, seed={self.seed})"

    def to_config(self) -> dict:
        raise TypeError(
            "an Optimized grid holds a model, which has no JSON form; save the fitted grid "
            "instead: grid.fit(sde, n_steps).to_config() (an Explicit grid)"
        )

    def grid(self, sde: SDE, n_steps: int) -> Tensor:
        n_steps = check_int("n_steps", n_steps, low=1)
        fitted = self._fitted.get((sde, n_steps)) or self.fit(sde, n_steps)
        return fitted.grid(sde)

    def _run_nfe(self, sampler: Sampler, n_steps: int) -> int:
        return sampler.nfe(n_steps) + int(self.denoise_final)

    def reference_nfe(self) -> int | None:
        """Network calls of the reference run (``None`` for an adaptive reference sampler)."""
        n = self.reference_sampler.nfe(self.reference_steps)
        return None if n is None else n + int(self.denoise_final)

    def cost(self, n_steps: int) -> int | None:
        """The most network calls a fit of ``n_steps`` steps spends (reference included), on
        batches of ``shape[0]`` draws; ``None`` if the reference sampler is adaptive."""
        ref = self.reference_nfe()
        if ref is None:
            return self.max_nfe
        total = ref + self.max_evals * self._run_nfe(self.sampler, n_steps)
        return total if self.max_nfe is None else min(total, self.max_nfe)

    def fit(self, sde: SDE, n_steps: int) -> Explicit:
        """Fit (or refit) the grid of ``n_steps`` steps under ``sde``; diagnostics land in
        ``last_fit`` (losses, evaluations, network calls, seconds), and :meth:`grid` returns
        this fit from now on."""
        from scipy.optimize import minimize

        n_steps = check_int("n_steps", n_steps, low=1)
        t_start, t_end = self.endpoints(sde)
        per_eval = self._run_nfe(self.sampler, n_steps)
        ref_nfe = self.reference_nfe()
        if self.max_nfe is not None and ref_nfe is not None and ref_nfe + per_eval > self.max_nfe:
            raise ValueError(
                f"max_nfe={self.max_nfe} cannot pay for the reference ({ref_nfe} NFE) and one "
                f"evaluation ({per_eval} NFE); raise max_nfe or lower reference_steps"
            )
        began = time.perf_counter()
        net_dtype, net_device = _net_dtype_device(self.denoiser)
        dtype = self.dtype or net_dtype
        device = self.device or net_device
        gen = torch.Generator().manual_seed(self.seed)
        x_T = sde.prior_sample(self.shape, generator=gen, dtype=dtype).to(device)
        base = UniformLambda(t_start=t_start, t_end=t_end)
        ref = sample(self.reference_sampler, self.denoiser, sde, x_T=x_T, grid=base,
                     n_steps=self.reference_steps, denoise_final=self.denoise_final,
                     progress=False)  # fmt: skip
        x_ref, spent = ref.x, ref.nfe
        lam0, lam1 = float(sde.lambda_(t_start)), float(sde.lambda_(t_end))

        def times(theta: np.ndarray) -> Tensor:
            logits = torch.from_numpy(np.append(theta, 0.0))
            frac = torch.cumsum(torch.softmax(logits, 0), 0)
            lam = torch.cat([torch.zeros(1, dtype=torch.float64), frac]) * (lam1 - lam0) + lam0
            ts = sde.inverse_lambda(lam)
            ts[0], ts[-1] = t_start, t_end
            return ts

        # the start grid's lambda increments as logits (the last one is the reference, 0)
        ts0 = self.start.grid(sde, n_steps)
        if (float(ts0[0]), float(ts0[-1])) != (t_start, t_end):
            raise ValueError(
                f"start={self.start!r} must span the fitted interval [{t_end}, {t_start}]; it "
                f"spans [{float(ts0[-1])}, {float(ts0[0])}]"
            )
        dlam = torch.diff(sde.lambda_(ts0)).abs().numpy()
        theta0 = np.log(dlam[:-1] / dlam[-1])

        pbar = tqdm(total=self.max_evals, desc=f"Optimized({self.sampler.name}, {n_steps})",
                    disable=not self.progress, leave=False)  # fmt: skip
        best = {"loss": math.inf, "theta": theta0, "since": 0, "evals": 0}

        def loss(theta: np.ndarray) -> float:
            nonlocal spent
            if best["evals"] >= self.max_evals or (
                self.max_nfe is not None and spent + per_eval > self.max_nfe
            ):
                raise _Stop
            if self.patience is not None and best["since"] >= self.patience:
                raise _Stop
            best["evals"] += 1
            try:
                res = sample(self.sampler, self.denoiser, sde, x_T=x_T, grid=Explicit(times(theta)),
                             denoise_final=self.denoise_final, progress=False)  # fmt: skip
                spent += res.nfe
                value = float((res.x - x_ref).flatten(1).norm(dim=1).mean())
            except (ValueError, FloatingPointError):
                spent += per_eval
                value = math.inf  # a grid too fine for the schedule, or a diverging sampler
            if value < best["loss"] * (1 - 1e-3):
                best["since"] = 0
            else:
                best["since"] += 1
            if value < best["loss"]:
                best["loss"], best["theta"] = value, np.array(theta)
            pbar.update(1)
            pbar.set_postfix(loss=f"{best['loss']:.4g}", nfe=spent)
            return value

        try:
            loss0 = loss(theta0)
            if n_steps > 1:
                simplex = np.vstack([theta0, theta0 + np.eye(n_steps - 1) * 0.5])
                minimize(loss, theta0, method="Nelder-Mead", options={
                    "initial_simplex": simplex, "maxfev": self.max_evals, "xatol": 1e-4,
                    "fatol": 0.0,
                })  # fmt: skip
        except _Stop:
            pass
        finally:
            pbar.close()
        theta, loss1 = (best["theta"], best["loss"]) if best["loss"] <= loss0 else (theta0, loss0)
        self.last_fit = {"n_steps": n_steps, "loss_start": loss0, "loss": loss1,
                         "n_evals": best["evals"], "nfe": spent,
                         "seconds": time.perf_counter() - began}  # fmt: skip
        self._fitted[(sde, n_steps)] = Explicit(times(theta))
        return self._fitted[(sde, n_steps)]
