"""The inputs of the steps-vs-FID benchmarks (:mod:`benchmarks.fid_vs_steps`,
:mod:`benchmarks.optimized_mnist`): a trained image checkpoint as a :class:`Model`, the MNIST
images, and the cached reference statistics of real images; and the checks of their command
lines, which turn bad input into argparse's one-line error (exit status 2) naming the flag."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import scoresde as S
from scoresde.metrics import (
    PREPROCESSING,
    FeatureStats,
    InceptionFeatures,
    cached_stats,
    extract_features,
)

__all__ = ["Model", "load_checkpoint", "read_mnist_images", "reference_stats", "int_at_least",
           "flag_errors"]  # fmt: skip


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``; anything else is the parser's one-line
    error naming the flag, the value and what was expected (``why`` says why, if not obvious)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{why}; got {text!r}")
        return value

    return parse


@contextmanager
def flag_errors(parser: argparse.ArgumentParser, flag: str) -> Iterator[None]:
    """Turn a ``ValueError`` or ``OSError`` raised inside (a bad file, device or sampler spec)
    into the parser's one-line error naming ``flag`` instead of a traceback."""
    try:
        yield
    except (OSError, ValueError) as err:
        message = str(err)
        # messages that name the flag already (scoresde.utils.check_device's) are kept as they are
        parser.error(message if message.startswith(flag) else f"{flag}: {message}")


@dataclass
class Model:
    """What the benchmark needs from a checkpoint."""

    denoiser: S.Denoiser
    shape: tuple[int, ...]  # (C, H, W) of one sample
    to_unit: Callable[[Tensor], Tensor]  # model space -> images in [0, 1]


def load_checkpoint(path: str | Path, device: str | torch.device) -> Model:
    """The :class:`Model` of a scoresde image checkpoint: its EMA denoiser on ``device``, the
    sample shape ``(C, H, W)`` from the model config, and the map from model space (``[-1, 1]``,
    :func:`scoresde.data.images_to_float`) to ``[0, 1]``."""
    from scoresde.checkpoint import load, load_denoiser

    ckpt = load(path, map_location=device)
    cfg = ckpt["model_config"]
    if "image_size" not in cfg:
        raise ValueError(f"{str(path)!r} is not an image model (model config {cfg})")
    denoiser = load_denoiser(ckpt, map_location=device)
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    return Model(denoiser, shape, lambda x: (x + 1) / 2)


def read_mnist_images(data_dir: str | Path, n: int, *, split: str = "train") -> Tensor:
    """The first ``n`` images of MNIST (``data_dir`` or its ``mnist/`` folder) as uint8
    ``(n, 1, 28, 28)``, through :func:`scoresde.data.load_images`."""
    from scoresde.data import load_images

    folder = Path(data_dir)
    if not any(folder.glob("*-images-idx3-ubyte*")) and (folder / "mnist").is_dir():
        folder = folder / "mnist"
    images = load_images(folder, split).images
    if n > images.shape[0]:
        raise ValueError(f"{str(folder)!r} holds {images.shape[0]} MNIST {split} images, fewer "
                         f"than --ref-n {n}")  # fmt: skip
    return images[:n]


def reference_stats(
    images: Tensor, extractor: InceptionFeatures, cache: Path, label: str, batch_size: int
) -> FeatureStats:
    """Statistics of real images, cached in ``cache`` under a key of the network file's sha256,
    the images' sha256, their count and the preprocessing."""
    key = {
        "network_sha256": extractor.sha256,
        "data": label,
        "data_sha256": hashlib.sha256(images.numpy().tobytes()).hexdigest(),
        "n": len(images),
        "preprocessing": PREPROCESSING,
    }
    return cached_stats(
        cache,
        key,
        lambda: FeatureStats.of(extract_features(images, extractor, batch_size=batch_size)),
    )
