"""Shared pieces of the FID tests: the data folder, an idx reader, a tiny stand-in feature
network and the generate-and-extract pipeline that the distributed test runs in 1 and 2
processes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import scoresde as S
from scoresde.metrics import (
    FeatureStats,
    InceptionFeatures,
    extract_features,
    fid,
    generated_features,
)

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path | None:
    """``$SCORESDE_DATA``, else ``<repo>/../shared/data``, else ``/work/shared/data``."""
    for cand in (
        os.environ.get("SCORESDE_DATA"),
        REPO.parent / "shared" / "data",
        "/work/shared/data",
    ):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def read_idx_images(path: Path, n: int) -> torch.Tensor:
    """The first ``n`` images of a raw idx3 file as uint8 ``(n, 1, 28, 28)``."""
    with open(path, "rb") as f:
        magic, count, rows, cols = np.frombuffer(f.read(16), dtype=">u4")
        assert magic == 2051, f"{path} is not an idx3 image file (magic {magic})"
        raw = np.frombuffer(f.read(int(n) * rows * cols), dtype=np.uint8)
    return torch.from_numpy(raw.reshape(n, 1, rows, cols).copy())


class TinyFeatureNet(nn.Module):
    """A random 3x299x299 -> 32 feature map standing in for Inception where only the plumbing
    (sharding, caching, batching) is under test: one strided conv, ReLU, 2x2 average pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=7, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2).flatten(1)


def write_tiny_feature_net(path: Path) -> Path:
    """Script a seeded :class:`TinyFeatureNet` to ``path``, as TorchScript like Inception's file."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyFeatureNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.script(net).save(str(path))
    return path


def pipeline(net_path: Path) -> dict[str, torch.Tensor | float]:
    """Generate 37 images with ``scoresde.sample`` in batches of 5 (seeded per batch), extract
    their features and those of 23 fixed "real" images in batches of 4, and compute the FID.
    Odd sizes make the last batch short and the ranks' shares unequal."""
    extractor = InceptionFeatures(net_path)
    data = S.GaussianMixture(torch.stack([torch.ones(1, 8, 8), -torch.ones(1, 8, 8)]), stds=0.5)
    denoiser = data.denoiser(S.VPSDE())

    calls = []

    def sample_batch(size: int, generator: torch.Generator) -> torch.Tensor:
        calls.append(size)
        out = S.sample(
            "pf_euler",
            denoiser,
            shape=(size, 1, 8, 8),
            n_steps=4,
            generator=generator,
            progress=False,
        )
        return torch.sigmoid(out.x)

    gen = generated_features(sample_batch, extractor, 37, batch_size=5, seed=3)
    real_images = torch.rand(23, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    real = extract_features(real_images, extractor, batch_size=4)
    value = fid(FeatureStats.of(gen), FeatureStats.of(real))
    return {"gen": gen, "real": real, "fid": value, "generated_here": sum(calls)}
