"""Metrics for samples: distances for exact low-dimensional problems."""

from .distances import sliced_wasserstein

__all__ = ["sliced_wasserstein"]
