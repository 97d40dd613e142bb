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

import math

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

    The path is a dyadic Brownian tree over the bound interval (Lévy's midpoint construction, as
    in torchsde's ``BrownianTree`` and diffrax's ``VirtualBrownianTree``): the midpoint of a cell
    ``[a, b]`` at depth ``l`` is ``W(m) = (W(a) + W(b)) / 2 + sqrt(b - a) / 2 * Z``, with ``Z``
    drawn from a generator seeded by ``(seed, l, cell)`` alone. A time that is a node of the tree
    (within 1e-12 of the interval) is read there; any other is bridged inside its leaf cell, of
    width at most ``tol``, with that leaf's own draw. So the value at a time never depends on which
    other times were queried, and times at least ``tol`` apart have exactly the joint law of
    Brownian motion. Sampling runs backward, so the path is indexed by ``s = -t`` on
    ``[-t_start, -t_end]``; :meth:`brownian` exposes it for the torchsde backend.

    Cost: one normal draw per new tree node. Querying the ``n + 1`` times of a grid in order draws
    about ``n`` nodes on the levels above ``log2(n)`` and one per query on each level below, down to
    the time's own depth: about one draw per step when the grid's times are dyadic in the interval
    (``UniformTime`` with a power-of-two step count, which the strong-order tests use), about
    ``log2(interval / tol) - log2(n)`` for other times (``docs/benchmarks.md`` has the measured
    cost). The last query's path, one state-sized tensor per level, is kept for the next one.

    With ``levy_area=True`` the path is ``torchsde.BrownianInterval`` with ``halfway_tree=True``,
    which also carries the space-time Lévy area that torchsde's strong-order-1.5 ``srk`` method
    needs; it is a different, equally valid path for the same seed, so samplers to be compared on
    one path share one setting. It costs about 35 draws per step.

    Auxiliary draws (:meth:`extra`) come from a separate CPU generator whose seed is spawned from
    ``seed`` (``numpy.random.SeedSequence(seed, spawn_key=(0,))``), restarted at every
    :meth:`bind`, so one seed fixes the whole run.

    With a list of seeds, one per sample, sample ``i`` has its own path (of shape
    ``(1, *dims)``) and its own auxiliary stream from ``seed[i]``: it is then the same in any
    batch. One int seed spans the whole batch with one path, whose values for a sample change with
    the batch size.

    Args:
        seed: entropy of the path (an int >= 0), or a list of them, one per sample.
        tol: resolution of the tree, in units of ``t``: the width below which cells are not split
            (times closer than this may share a leaf's draw).
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

    def _path(self, t0, t1, size, like, seed) -> torchsde.BaseBrownian:
        if self.levy_area:
            return torchsde.BrownianInterval(
                t0=t0, t1=t1, size=size, dtype=like.dtype, device=like.device, entropy=seed,
                halfway_tree=True, tol=self.tol, levy_area_approximation="space-time",
            )  # fmt: skip
        return _DyadicBrownian(t0, t1, size, like.dtype, like.device, seed, self.tol)

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
                self._bm = _PerSampleBrownian([self._path(t0, t1, size, like, s) for s in seeds])
            else:
                self._bm = self._path(t0, t1, tuple(like.shape), like, self.seed)
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


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit ints that scatters nearby inputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


# a time within this fraction of the interval of a tree node is that node
_HIT = 1e-12


class _DyadicBrownian(torchsde.BaseBrownian):
    """A Brownian path on ``[t0, t1]`` (``BrownianNoise``'s construction without Lévy area).

    Node ``(l, k)`` is the midpoint of cell ``k`` at depth ``l``; its draw comes from a generator
    seeded by ``_mix64`` of the seed, ``l`` and ``k``. ``_level[l]`` holds ``(k, W(midpoint))`` of
    the cell at depth ``l`` on the last query's path, so the next query draws only the nodes below
    the depth where the two paths part."""

    def __init__(self, t0, t1, size, dtype, device, seed, tol):
        self._t0, self._t1 = float(t0), float(t1)
        self._h = self._t1 - self._t0
        self._size, self._dtype, self._device = tuple(size), dtype, torch.device(device)
        self._seed = _mix64(int(seed))
        self._depth = min(max(0, math.ceil(math.log2(self._h / tol))), 40) if self._h > 0 else 0
        self._level: list[tuple[int, Tensor] | None] = [None] * self._depth
        self._end = self._draw(0, 0, self._h**0.5)  # W(t1) - W(t0)
        self._last: tuple[float, Tensor] | None = None

    def _draw(self, level: int, k: int, scale: float) -> Tensor:
        node_seed = _mix64(self._seed ^ _mix64((level << 44) + k)) >> 1
        g = torch.Generator(self._device).manual_seed(node_seed)
        z = torch.randn(self._size, generator=g, dtype=self._dtype, device=self._device)
        return z.mul_(scale)

    def _value(self, s: float) -> Tensor | None:
        """``W(s) - W(t0)``; ``None`` stands for zero."""
        u = (s - self._t0) / self._h if self._h > 0 else 0.0
        if not -_HIT <= u <= 1 + _HIT:
            raise ValueError(
                f"Brownian path queried at {s!r}, outside its interval [{self._t0}, {self._t1}]"
            )
        if u <= _HIT:
            return None
        if u >= 1 - _HIT:
            return self._end
        if self._last is not None and self._last[0] == u:
            return self._last[1]
        a, b, w_a, w_b = 0.0, 1.0, None, self._end
        for level in range(self._depth):
            k = int(a * 2**level)
            m = 0.5 * (a + b)
            kept = self._level[level]
            if kept is not None and kept[0] == k:
                w_m = kept[1]
            else:
                w_m = self._draw(level + 1, k, 0.5 * (self._h * (b - a)) ** 0.5)
                w_m.add_(w_b if w_a is None else w_a + w_b, alpha=0.5)
                self._level[level] = (k, w_m)
            if abs(u - m) <= _HIT:
                self._last = (u, w_m)
                return w_m
            if u < m:
                b, w_b = m, w_m
            else:
                a, w_a = m, w_m
        # inside a leaf of width <= tol: the Brownian bridge from W(a) to W(b), with the leaf's draw
        r = (u - a) / (b - a)
        w = self._draw(
            self._depth + 1, int(a * 2**self._depth), (self._h * (u - a) * (1 - r)) ** 0.5
        )
        w.add_(w_b if w_a is None else torch.lerp(w_a, w_b, r), alpha=1.0 if w_a is not None else r)
        self._last = (u, w)
        return w

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_U or return_A:
            raise ValueError(
                "this Brownian path carries no Levy area; use BrownianNoise(seed, levy_area=True)"
            )
        if tb is None:
            ta, tb = self._t0, ta
        w_a, w_b = self._value(float(ta)), self._value(float(tb))
        if w_b is None:
            return torch.zeros(self._size, dtype=self._dtype, device=self._device) - (
                0 if w_a is None else w_a
            )
        return w_b.clone() if w_a is None else w_b - w_a

    def __repr__(self):
        return f"_DyadicBrownian(t0={self._t0}, t1={self._t1}, depth={self._depth})"

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return self._size

    @property
    def levy_area_approximation(self):
        return "none"


def _aux_seed(seed: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(0,)).generate_state(1, np.uint64)[0])


class _PerSampleBrownian(torchsde.BaseBrownian):
    """Independent ``(1, *dims)`` Brownian paths, one per sample, seen as one batch."""

    def __init__(self, paths: list[torchsde.BaseBrownian]):
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
