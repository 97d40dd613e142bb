"""Noise sources: which randomness a stochastic sampler consumes.

``noise(t, t_next, like=x)`` returns a standard normal tensor shaped like ``x`` for the step from
``t`` to ``t_next``: for a Brownian source it is ``(W(t) - W(t_next)) / sqrt(t - t_next)``.
``noise.extra(like=x)`` returns an auxiliary standard normal draw, independent of the path and of
earlier auxiliary draws: the noise of Langevin corrector steps, which is not an increment of the
reverse SDE's Brownian motion.
"""

from __future__ import annotations

import numpy as np
import torch
import torchsde
from torch import Tensor

from .utils import check_int, check_real

__all__ = ["NoiseSource", "GaussianNoise", "BrownianNoise"]


class NoiseSource:
    """Base class. :meth:`bind` is called by the driver with the grid before the first step."""

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
    """Fresh ``N(0, I)`` draws from ``generator`` (or the global RNG)."""

    def __init__(self, generator: torch.Generator | None = None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None; got {type(generator).__name__}"
            )
        self.generator = generator

    def __call__(self, t, t_next, like):
        return self._draw(like)

    def extra(self, like):
        # fresh draws are independent of the step noise, so one stream serves both
        return self._draw(like)

    def _draw(self, like: Tensor) -> Tensor:
        if self.generator is None:
            return torch.randn(like.shape, dtype=like.dtype, device=like.device)
        # draw on the generator's device, so a CPU generator reproduces the same noise on a GPU
        z = torch.randn(
            like.shape, generator=self.generator, dtype=like.dtype, device=self.generator.device
        )
        return z.to(like.device)

    def __repr__(self):
        return "GaussianNoise()"


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

    Args:
        seed: entropy of the path.
        tol: resolution of the halfway tree (queries closer than this may share a node).
        levy_area: also sample the space-time Levy area (for torchsde's ``srk``).
    """

    def __init__(self, seed: int = 0, *, tol: float = 1e-7, levy_area: bool = False):
        self.seed = check_int("seed", seed, low=0)
        self.tol = check_real("tol", tol, low=0.0, low_open=True)
        if not isinstance(levy_area, bool):
            raise ValueError(f"levy_area must be a bool; got {levy_area!r}")
        self.levy_area = levy_area
        self._bm: torchsde.BrownianInterval | None = None
        self._key = None
        self._aux: torch.Generator | None = None

    def bind(self, ts, like):
        t0, t1 = -float(ts[0]), -float(ts[-1])
        key = (t0, t1, tuple(like.shape), like.dtype, like.device)
        if key != self._key:
            self._bm = torchsde.BrownianInterval(
                t0=t0, t1=t1, size=tuple(like.shape), dtype=like.dtype, device=like.device,
                entropy=self.seed, halfway_tree=True, tol=self.tol,
                levy_area_approximation="space-time" if self.levy_area else "none",
            )  # fmt: skip
            self._key = key
        aux_seed = np.random.SeedSequence(self.seed, spawn_key=(0,)).generate_state(1, np.uint64)[0]
        self._aux = torch.Generator().manual_seed(int(aux_seed))

    def brownian(self) -> torchsde.BrownianInterval:
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
        return torch.randn(like.shape, generator=self._aux, dtype=like.dtype).to(like.device)

    def __repr__(self):
        return f"BrownianNoise(seed={self.seed}, levy_area={self.levy_area})"
