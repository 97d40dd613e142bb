"""Metrics: FID from a local Inception file, and sample distances for exact problems.

``scoresde.metrics`` is not imported by ``import scoresde``; import it explicitly.
"""

from .distances import mmd2, sliced_wasserstein, wasserstein_1d
from .fid import (
    PREPROCESSING,
    FeatureStats,
    InceptionFeatures,
    cached_stats,
    extract_features,
    fid,
    file_sha256,
    frechet_distance,
    generated_features,
    preprocess,
)
from .sharding import batch_generator, batch_slices, map_batches, rank_and_world

__all__ = [
    "sliced_wasserstein",
    "wasserstein_1d",
    "mmd2",
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
    "rank_and_world",
    "batch_slices",
    "batch_generator",
    "map_batches",
]
