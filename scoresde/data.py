"""Training data: idx readers for MNIST / Fashion-MNIST from a user-given directory, and toy 2-D
sets generated from a seed.

Nothing here downloads anything. The idx format (LeCun et al. 1998): a 4-byte magic
``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data. Files
may be raw or gzip-compressed; both the canonical names (``train-images-idx3-ubyte``) and the
dotted variant (``train-images.idx3-ubyte``) are found, with or without ``.gz``.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .exact import ring_mixture
from .utils import check_int

__all__ = [
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "read_idx",
    "find_idx_file",
    "load_images",
    "ImageSet",
    "images_to_float",
    "float_to_images",
    "toy_2d",
    "default_data_dir",
]

IMAGE_DATASETS = ("mnist", "fashion-mnist")
TOY_DATASETS = ("ring", "checkerboard", "swiss_roll", "moons")

# idx dtype codes (the third magic byte)
_IDX_DTYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}  # fmt: skip


# -------------------------------------------------------------------------------------------
# idx files


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"  # gzip magic, whatever the suffix says
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (raw or gzip) into a numpy array of its stored shape and dtype."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file not found: {str(path)!r}")
    try:
        with _open(path) as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{str(path)!r} is a truncated or corrupt gzip file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{str(path)!r} is not an idx file: expected magic bytes 00 00 <dtype> <ndim>, "
            f"got {raw[:4].hex(' ') if raw else 'an empty file'}"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    head = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = head + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{str(path)!r} is truncated or corrupt: header says shape {shape} "
            f"({expected} bytes), file holds {len(raw)} bytes"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))
    )


def find_idx_file(data_dir: str | os.PathLike, split: str, kind: str) -> Path:
    """The idx file of ``split`` ("train" or "test") and ``kind`` ("images" or "labels") in
    ``data_dir``; ``FileNotFoundError`` names every file name that was tried."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels'; got {kind!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {str(data_dir)!r}")
    prefix = "train" if split == "train" else "t10k"
    n = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}-idx{n}-ubyte", f"{prefix}-{kind}.idx{n}-ubyte"]
    tried = [name + gz for name in names for gz in ("", ".gz")]
    for name in tried:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"missing {split} {kind} file {tried[0]!r} (or {', '.join(map(repr, tried[1:]))}) "
        f"in {str(data_dir)!r}"
    )


@dataclass
class ImageSet:
    """Images as ``uint8`` of shape ``(N, 1, H, W)`` and their integer labels ``(N,)``."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def load_images(data_dir: str | os.PathLike, split: str = "train") -> ImageSet:
    """MNIST or Fashion-MNIST (same file layout) from ``data_dir``.

    Args:
        data_dir: directory holding the four idx files (raw or ``.gz``).
        split: ``"train"`` (60 000 images) or ``"test"`` (10 000).
    """
    images = read_idx(find_idx_file(data_dir, split, "images"))
    labels = read_idx(find_idx_file(data_dir, split, "labels"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"idx files in {str(data_dir)!r} disagree: images of shape {images.shape}, "
            f"labels of shape {labels.shape}; expected (N, H, W) and (N,)"
        )
    return ImageSet(
        torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64))
    )


def images_to_float(u8: Tensor) -> Tensor:
    """``uint8`` pixels to float32 in ``[-1, 1]``: ``x = u / 127.5 - 1``."""
    return u8.to(torch.float32) / 127.5 - 1.0


def float_to_images(x: Tensor) -> Tensor:
    """Inverse of :func:`images_to_float`, clipped and rounded to ``uint8``."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def default_data_dir(name: str) -> Path | None:
    """``$SCORESDE_DATA/<name>`` if that directory exists, else ``None``."""
    root = os.environ.get("SCORESDE_DATA")
    if root and (Path(root) / name).is_dir():
        return Path(root) / name
    return None


# -------------------------------------------------------------------------------------------
# Toy 2-D sets, each with a spread of order 1 per coordinate (std 0.7 to 1.5)


def toy_2d(name: str, n: int, *, seed: int = 0) -> Tensor:
    """``n`` float32 points of the 2-D set ``name``, drawn from a ``torch.Generator`` seeded with
    ``seed`` (the same seed gives the same points).

    - ``ring``: 8 Gaussians on a circle, :func:`scoresde.exact.ring_mixture` (radius 2, std 0.3),
      whose score is closed-form;
    - ``checkerboard``: uniform on the 8 dark squares of a 4x4 board on ``[-2, 2]^2``;
    - ``swiss_roll``: ``(t cos t, t sin t) / 5`` for ``t ~ U(1.5 pi, 4.5 pi)``, noise std 0.05;
    - ``moons``: two interleaved half circles (scikit-learn's shape), noise std 0.05.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"toy data set must be one of {list(TOY_DATASETS)}; got {name!r}")
    n = check_int("n", n, low=1)
    gen = torch.Generator().manual_seed(int(seed))
    if name == "ring":
        return ring_mixture().sample(n, generator=gen).to(torch.float32)
    if name == "checkerboard":
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 4 - 2  # uniform on the board
        cell = torch.floor(u + 2).long()
        flip = (cell[:, 0] + cell[:, 1]) % 2 == 1  # move light-square points one cell right
        u[:, 0] = torch.where(flip, (u[:, 0] + 3) % 4 - 2, u[:, 0])
        return u.to(torch.float32)
    if name == "swiss_roll":
        t = (1.5 + 3.0 * torch.rand(n, generator=gen, dtype=torch.float64)) * math.pi
        x = torch.stack([t * t.cos(), t * t.sin()], 1) / 5.0
        return (x + 0.05 * torch.randn(n, 2, generator=gen, dtype=torch.float64)).to(torch.float32)
    # moons
    upper = torch.rand(n, generator=gen) < 0.5
    a = torch.rand(n, generator=gen, dtype=torch.float64) * math.pi
    x = torch.where(upper[:, None], torch.stack([a.cos(), a.sin()], 1),
                    torch.stack([1 - a.cos(), 0.5 - a.sin()], 1))  # fmt: skip
    x = (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) * 1.5
    return (x + 0.05 * torch.randn(n, 2, generator=gen, dtype=torch.float64)).to(torch.float32)
