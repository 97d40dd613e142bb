r"""Fréchet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium", eq. 6) from a local Inception-v3 TorchScript file.

The pipeline follows pytorch-fid, which the FID Inception file's documentation names as its input
convention (``../shared/data/SOURCES.md`` here):

1. images in ``[0, 1]`` (or ``uint8``), shape ``(N, C, H, W)`` with ``C`` in {1, 3}; grey images
   are repeated to 3 channels;
2. bilinear resize to 299x299 (``F.interpolate(..., align_corners=False)``);
3. ``x * 2 - 1``, so the network sees ``[-1, 1]``;
4. the network's pool3 features, ``(N, 2048)``;
5. ``mu`` and the unbiased covariance ``sigma`` (``n - 1`` in the denominator) in float64;
6. :math:`d^2 = \lVert\mu_1-\mu_2\rVert^2 + \operatorname{tr}(\Sigma_1 + \Sigma_2
   - 2(\Sigma_1\Sigma_2)^{1/2})` with ``scipy.linalg.sqrtm``.

Statistics are cached in ``.npz`` files (:func:`cached_stats`) together with the key they were
computed for, so a cache is never used for the wrong network, data or preprocessing. Feature
extraction and generation shard over ``torch.distributed`` ranks (:mod:`.sharding`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor

from .sharding import batch_generator, map_batches, rank_and_world

__all__ = [
    "PREPROCESSING",
    "preprocess",
    "InceptionFeatures",
    "extract_features",
    "generated_features",
    "FeatureStats",
    "frechet_distance",
    "fid",
    "cached_stats",
    "file_sha256",
]

PREPROCESSING = "pytorch-fid v1: grey->RGB, bilinear 299x299 align_corners=False, x*2-1"
"""Stored with every cached statistic; change it when the preprocessing changes."""

# Largest imaginary part on the diagonal of sqrtm(S1 S2) accepted as round-off (pytorch-fid's
# threshold). The product of two PSD matrices has real non-negative eigenvalues, so imaginary
# parts only come from round-off on (near-)zero eigenvalues.
_IMAG_ATOL = 1e-3


def preprocess(images: Tensor) -> Tensor:
    """Images in ``[0, 1]`` (float) or ``uint8``, ``(N, 1|3, H, W)`` -> the network's input
    ``(N, 3, 299, 299)`` in ``[-1, 1]`` (steps 1-3 of the module docstring)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, 1 or 3, H, W); got {shape}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise ValueError(
            f"images must be uint8 or floating point in [0, 1]; got dtype {images.dtype}"
        )
    else:
        images = images.float()
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"images must lie in [0, 1] (clamp generated samples first); got values in "
                f"[{lo:.4g}, {hi:.4g}]"
            )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class InceptionFeatures:
    """The FID feature extractor from a TorchScript file at a user-given ``path``.

    ``extractor(images)`` preprocesses one batch (:func:`preprocess`) and returns its features as
    a float32 CPU tensor ``(n, d)`` (``d = 2048`` for the FID Inception-v3). Any TorchScript
    module mapping ``(n, 3, 299, 299)`` to ``(n, d)`` works (the tests use a tiny random one).
    Nothing is downloaded.

    Args:
        path: the ``.pt`` TorchScript file (e.g. ``fid-inception/default_1.pt``).
        device: where the network runs.
    """

    def __init__(self, path: str | os.PathLike, *, device: torch.device | str = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no Inception TorchScript file at {str(path)!r}; pass the path of the FID "
                "Inception-v3 file (e.g. .../fid-inception/default_1.pt)"
            )
        self.path = path
        self.device = torch.device(device)
        with warnings.catch_warnings():
            # the FID network ships as TorchScript, which torch 2.13 deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return f"InceptionFeatures(path={str(self.path)!r}, device={str(self.device)!r})"

    @property
    def sha256(self) -> str:
        """The file's sha256, part of every cache key."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def __call__(self, images: Tensor) -> Tensor:
        x = preprocess(images.to(self.device))
        with torch.inference_mode():
            feats = self.model(x)
        if feats.ndim != 2 or feats.shape[0] != x.shape[0]:
            raise ValueError(
                f"the feature network must return (n, d) for n images; got {tuple(feats.shape)} "
                f"for n={x.shape[0]}"
            )
        return feats.float().cpu()


def extract_features(
    images: Tensor,
    extractor: Callable[[Tensor], Tensor],
    *,
    batch_size: int = 50,
    progress: bool = False,
) -> Tensor:
    """Features ``(N, d)`` of ``images`` ``(N, C, H, W)``, batch by batch; shards over
    ``torch.distributed`` ranks when a process group is initialised (every rank gets all rows)."""
    return map_batches(
        lambda b, start, stop: extractor(images[start:stop]),
        len(images),
        batch_size,
        progress=progress,
        desc="features",
    )


def generated_features(
    sample_batch: Callable[[int, torch.Generator], Tensor],
    extractor: Callable[[Tensor], Tensor],
    n: int,
    *,
    batch_size: int,
    seed: int,
    generator_device: torch.device | str = "cpu",
    progress: bool = False,
) -> Tensor:
    """Features of ``n`` generated images, without keeping the images.

    ``sample_batch(size, generator)`` returns ``size`` images in ``[0, 1]``; batch ``b`` gets the
    generator :func:`~scoresde.metrics.sharding.batch_generator(seed, b)`, so the samples (and the
    FID) are the same whatever the number of processes. Generation and extraction shard together
    over ``torch.distributed`` ranks.
    """

    def one_batch(b: int, start: int, stop: int) -> Tensor:
        return extractor(sample_batch(stop - start, batch_generator(seed, b, generator_device)))

    return map_batches(one_batch, n, batch_size, progress=progress, desc="generate+features")


@dataclass(frozen=True)
class FeatureStats:
    """Mean ``mu`` ``(d,)`` and unbiased covariance ``sigma`` ``(d, d)`` of ``n`` feature vectors,
    in float64."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def of(cls, features: Tensor | np.ndarray) -> FeatureStats:
        f = np.asarray(
            features.cpu() if isinstance(features, Tensor) else features, dtype=np.float64
        )
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"features must have shape (n >= 2, d); got {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError("features must be finite; they hold NaN or inf")
        return cls(f.mean(0), np.cov(f, rowvar=False), f.shape[0])

    def save(self, path: str | os.PathLike, key: dict | None = None) -> None:
        """Write ``mu``, ``sigma``, ``n`` and a JSON ``key`` to ``path`` (``.npz``) atomically:
        a temporary file in the same folder, fsynced, then renamed over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    mu=self.mu,
                    sigma=self.sigma,
                    n=self.n,
                    key=json.dumps(key or {}, sort_keys=True),
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[FeatureStats, dict]:
        """``(stats, key)`` from a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            missing = {"mu", "sigma", "n", "key"} - set(z.files)
            if missing:
                raise ValueError(
                    f"{str(path)!r} is not a FeatureStats file; it lacks {sorted(missing)}"
                )
            return cls(z["mu"], z["sigma"], int(z["n"])), json.loads(str(z["key"]))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    r"""Squared Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    :math:`\lVert\mu_1-\mu_2\rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
    - 2\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}`, with the square root from
    ``scipy.linalg.sqrtm`` (Schur method), handled as pytorch-fid does:

    - with fewer samples than dimensions (1000 images, 2048 features) the covariances are
      singular and ``sqrtm`` may return inf/NaN; then ``eps * I`` is added to both covariances
      and the root recomputed (a bias of order ``eps * d``, 2e-3 at the defaults);
    - ``sigma1 @ sigma2`` has real non-negative eigenvalues, so any imaginary part of the root is
      round-off on (near-)zero eigenvalues: it is dropped when the diagonal's imaginary parts are
      below 1e-3 in absolute value, and a ``ValueError`` is raised otherwise.

    The result is not clipped at 0: identical statistics give a round-off-sized value of either
    sign.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    d = mu1.shape[0]
    for name, value, shape in (
        ("mu2", mu2, (d,)),
        ("sigma1", sigma1, (d, d)),
        ("sigma2", sigma2, (d, d)),
    ):
        if value.shape != shape:
            raise ValueError(
                f"{name} must have shape {shape} to match mu1 {mu1.shape}; got {value.shape}"
            )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.abs(np.diagonal(covmean).imag).max())
        if worst > _IMAG_ATOL:
            raise ValueError(
                f"sqrtm(sigma1 @ sigma2) has an imaginary diagonal component of {worst:.3g} "
                f"(> {_IMAG_ATOL}); the covariances are not valid (non-PSD) or badly conditioned"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(a: FeatureStats, b: FeatureStats, *, eps: float = 1e-6) -> float:
    """FID between two :class:`FeatureStats` (:func:`frechet_distance` of their moments)."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, eps=eps)


def cached_stats(
    path: str | os.PathLike, key: dict, compute: Callable[[], FeatureStats]
) -> FeatureStats:
    """Statistics from the ``.npz`` at ``path`` if it was written for exactly ``key``; otherwise
    ``compute()`` them and write them there (rank 0 only, when distributed).

    ``key`` (JSON-serialisable) should name everything the statistics depend on: the network
    file's sha256, the data (source, slice, a hash of its bytes), ``n`` and
    :data:`PREPROCESSING`. A file written for another key raises ``ValueError`` rather than being
    used or silently overwritten.
    """
    path = Path(path)
    key = json.loads(json.dumps(key, sort_keys=True))
    if path.exists():
        stats, stored = FeatureStats.load(path)
        if stored != key:
            changed = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
            raise ValueError(
                f"{str(path)!r} holds statistics for another key (differs in {changed}); delete it "
                "or choose another path"
            )
        return stats
    stats = compute()
    if rank_and_world()[0] == 0:
        stats.save(path, key)
    return stats
