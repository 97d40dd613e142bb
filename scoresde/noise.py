"""Noise sources: which randomness a stochastic sampler consumes.

``noise(t, t_next, like=x)`` returns a standard normal tensor shaped like ``x`` for the step from
``t`` to ``t_next``: for a Brownian source it is ``(W(t) - W(t_next)) / sqrt(t - t_next)``.
``noise.extra(like=x)`` returns an auxiliary standard normal draw, independent of the path and of
earlier auxiliary draws: the noise of Langevin corrector steps, which is not an increment of the
reverse SDE's Brownian motion.

Per-sample randomness: ``GaussianNoise([g_0, ..., g_{B-1}])`` (one ``torch.Generator`` per
sample, as diffusers pipelines accept) and ``BrownianNoise(seed=[s_0, ..., s_{B-1}])`` draw
sample ``i``'s noise from its own generator or Brownian path, so a sample depends only on its own
seed, never on the batch size or the other samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torchsde
from torch import Tensor

from .utils import check_int, check_real

__all__ = ["NoiseSource", "GaussianNoise", "BrownianNoise", "check_generator"]


def check_generator(generator, batch: int | None = None):
    """Validate ``generator``: ``None``, one ``torch.Generator``, or a list (tuple) of them with
    one per sample (``batch`` of them, when ``batch`` is known). Returns it, a list as a list."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if not isinstance(generator, (list, tuple)):
        raise TypeError(
            "generator must be None, a torch.Generator or a list of torch.Generators (one per "
            f"sample); got {type(generator).__name__}"
        )
    for k, g in enumerate(generator):
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator[{k}] must be a torch.Generator (one per sample); got {g!r}")
    if batch is not None and len(generator) != batch:
        raise ValueError(
            f"generator is a list of {len(generator)} torch.Generators but the batch has {batch} "
            f"samples; expected one generator per sample ({batch})"
        )
    return list(generator)


def _per_sample_randn(generators: list, like: Tensor) -> Tensor:
    """One ``(1, *dims)`` draw per sample from its own generator (on the generator's device)."""
    shape = (1, *like.shape[1:])
    draws = [torch.randn(shape, generator=g, dtype=like.dtype, device=g.device) for g in generators]
    return torch.cat([z.to(like.device) for z in draws])


class NoiseSource:
    """Base class. :meth:`bind` is called by the driver with the grid before the first step.

    ``per_sample`` is true when every sample has its own randomness (a list of generators or
    seeds); such a source draws each sample's noise independently of the batch."""

    per_sample: bool = False

    def bind(self, ts: Tensor, like: Tensor) -> None:
        """Prepare for a run over the grid ``ts`` with states shaped like ``like``."""

    def __call__(self, t: float, t_next: float, like: Tensor) -> Tensor:
        raise NotImplementedError

    def extra(self, like: Tensor) -> Tensor:
        """An auxiliary ``N(0, I)`` draw shaped like ``like``, independent of the path's increments
        and of every earlier auxiliary draw (Langevin-corrector noise). Reproducible: the same
        source, bound to the same grid, gives the same sequence of auxiliary draws."""
        raise NotImplementedError(f"{type(self).__name__} provides no auxiliary draws")


class GaussianNoise(NoiseSource):
    """Fresh ``N(0, I)`` draws from ``generator`` (or the global RNG).

    ``generator`` may be a list of ``torch.Generator``, one per sample: sample ``i``'s draws then
    come from ``generator[i]`` alone (shape ``(1, *dims)`` each, as diffusers' ``randn_tensor``
    draws them).
    """

    def __init__(self, generator: torch.Generator | list[torch.Generator] | None = None):
        self.generator = check_generator(generator)
        self.per_sample = isinstance(self.generator, list)

    def bind(self, ts, like):
        if self.per_sample:
            check_generator(self.generator, like.shape[0])

    def __call__(self, t, t_next, like):
        return self._draw(like)

    def extra(self, like):
        # fresh draws are independent of the step noise, so one stream serves both
        return self._draw(like)

    def _draw(self, like: Tensor) -> Tensor:
        if self.per_sample:
            check_generator(self.generator, like.shape[0])
            return _per_sample_randn(self.generator, like)
        if self.generator is None:
            return torch.randn(like.shape, dtype=like.dtype, device=like.device)
        # draw on the generator's device, so a CPU generator reproduces the same noise on a GPU
        z = torch.randn(
            like.shape, generator=self.generator, dtype=like.dtype, device=self.generator.device
        )
        return z.to(like.device)

    def __repr__(self):
        return (
            f"GaussianNoise({len(self.generator)} generators)"
            if self.per_sample
            else ("GaussianNoise()")
        )


class BrownianNoise(NoiseSource):
    """Increments of one Brownian path, the same at every step count (for strong-order tests and
    for samples that are reproducible across step budgets).

    Backed by ``torchsde.BrownianInterval`` with ``halfway_tree=True`` (the construction of
    torchsde's ``BrownianTree``; Kidger et al. 2021, "Efficient and accurate gradients for neural
    SDEs"), whose values at a time do not depend on which other times were queried. Sampling runs
    backward, so the path is indexed by ``s = -t`` on ``[-t_start, -t_end]``;
    :meth:`brownian` exposes it for the torchsde backend. With ``levy_area=True`` the interval also
    carries the space-time Levy area, which torchsde's strong-order-1.5 ``srk`` method needs; it
    is part of the path (the same seed gives a different, equally valid path with and without
    it), so samplers to be compared on one path share one setting. It costs about 60% more per
    query, hence off by default.

    Auxiliary draws (:meth:`extra`) come from a separate CPU generator whose seed is spawned from
    ``seed`` (``numpy.random.SeedSequence(seed, spawn_key=(0,))``, a key no node of torchsde's
    tree uses), restarted at every :meth:`bind`, so one seed fixes the whole run.

    With a list of seeds, one per sample, sample ``i`` has its own path (of shape
    ``(1, *dims)``) and its own auxiliary stream from ``seed[i]``: it is then the same in any
    batch. One int seed spans the whole batch with one path, whose values for a sample change with
    the batch size.

    Args:
        seed: entropy of the path (an int >= 0), or a list of them, one per sample.
        tol: resolution of the halfway tree (queries closer than this may share a node).
        levy_area: also sample the space-time Levy area (for torchsde's ``srk``).
    """

    def __init__(self, seed: int | list[int] = 0, *, tol: float = 1e-7, levy_area: bool = False):
        if isinstance(seed, (list, tuple)):
            if not seed:
                raise ValueError("seed must be an int >= 0 or a non-empty list of them; got []")
            self.seed = [check_int(f"seed[{k}]", s, low=0) for k, s in enumerate(seed)]
        else:
            self.seed = check_int("seed", seed, low=0)
        self.per_sample = isinstance(self.seed, list)
        self.tol = check_real("tol", tol, low=0.0, low_open=True)
        if not isinstance(levy_area, bool):
            raise ValueError(f"levy_area must be a bool; got {levy_area!r}")
        self.levy_area = levy_area
        self._bm: torchsde.BaseBrownian | None = None
        self._key = None
        self._aux: list[torch.Generator] | None = None

    def _interval(self, t0, t1, size, like, seed) -> torchsde.BrownianInterval:
        return torchsde.BrownianInterval(
            t0=t0, t1=t1, size=size, dtype=like.dtype, device=like.device, entropy=seed,
            halfway_tree=True, tol=self.tol,
            levy_area_approximation="space-time" if self.levy_area else "none",
        )  # fmt: skip

    def bind(self, ts, like):
        seeds = self.seed if self.per_sample else [self.seed]
        if self.per_sample and len(seeds) != like.shape[0]:
            raise ValueError(
                f"BrownianNoise has a list of {len(seeds)} seeds but the batch has "
                f"{like.shape[0]} samples; expected one seed per sample ({like.shape[0]})"
            )
        t0, t1 = -float(ts[0]), -float(ts[-1])
        key = (t0, t1, tuple(like.shape), like.dtype, like.device)
        if key != self._key:
            if self.per_sample:
                size = (1, *like.shape[1:])
                self._bm = _PerSampleBrownian(
                    [self._interval(t0, t1, size, like, s) for s in seeds]
                )
            else:
                self._bm = self._interval(t0, t1, tuple(like.shape), like, self.seed)
            self._key = key
        self._aux = [torch.Generator().manual_seed(_aux_seed(s)) for s in seeds]

    def brownian(self) -> torchsde.BaseBrownian:
        """The bound Brownian path in reversed time ``s = -t``."""
        if self._bm is None:
            raise RuntimeError(
                "BrownianNoise is not bound to a grid yet; call bind(ts, like) first"
            )
        return self._bm

    def __call__(self, t, t_next, like):
        if self._bm is None:
            raise RuntimeError(
                "BrownianNoise is not bound to a grid yet; call bind(ts, like) first"
            )
        s0, s1 = -t, -t_next
        return self._bm(s0, s1) / (s1 - s0) ** 0.5

    def extra(self, like):
        if self._aux is None:
            raise RuntimeError("BrownianNoise is not bound yet; call bind(ts, like) first")
        if self.per_sample:
            return _per_sample_randn(self._aux, like)
        return torch.randn(like.shape, generator=self._aux[0], dtype=like.dtype).to(like.device)

    def __repr__(self):
        return f"BrownianNoise(seed={self.seed}, levy_area={self.levy_area})"


def _aux_seed(seed: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(0,)).generate_state(1, np.uint64)[0])


class _PerSampleBrownian(torchsde.BaseBrownian):
    """Independent ``(1, *dims)`` Brownian paths, one per sample, seen as one batch."""

    def __init__(self, paths: list[torchsde.BrownianInterval]):
        self._paths = paths
        self._shape = (len(paths), *paths[0].shape[1:])

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        outs = [p(ta, tb, return_U=return_U, return_A=return_A) for p in self._paths]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
        return torch.cat(outs)

    def __repr__(self):
        return f"_PerSampleBrownian({len(self._paths)} paths)"

    @property
    def dtype(self):
        return self._paths[0].dtype

    @property
    def device(self):
        return self._paths[0].device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return self._paths[0].levy_area_approximation
