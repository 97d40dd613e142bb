"""Every file the library reads, when damaged, raises one ``ValueError`` that names the file and
what is wrong with it (never torch's ``weights_only`` advice, a bare ``EOFError``, a ``KeyError``
or a zlib error from deep inside the reader)."""

import gzip

import numpy as np
import pytest
import torch

from scoresde import checkpoint
from scoresde.data import read_idx
from scoresde.metrics import FeatureStats, InceptionFeatures

CKPT = {
    "format": checkpoint.FORMAT,
    "sde": {"name": "VPSDE", "args": {}},
    "time_input": {"name": "ContinuousTime", "args": {"scale": 1.0}},
    "parameterization": "eps",
    "model_config": {},
    "ema": {},
}


def random_bytes(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.pt"
    torch.save(CKPT, path)
    return path


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda raw: raw[: len(raw) // 2],
            r"not a readable scoresde checkpoint \(empty, truncated",
        ),
        (lambda raw: b"", r"not a readable scoresde checkpoint .*EOFError"),
        (lambda raw: random_bytes(4000), r"not a readable scoresde checkpoint"),
    ],
    ids=["truncated", "empty", "random-bytes"],
)
def test_a_damaged_checkpoint_is_named(saved, damage, match):
    bad = write(saved.with_name("bad.pt"), damage(saved.read_bytes()))
    with pytest.raises(ValueError, match="bad.pt' is " + match):
        checkpoint.load(bad)


def test_a_checkpoint_missing_a_key_names_the_key(tmp_path):
    torch.save({k: v for k, v in CKPT.items() if k != "model_config"}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"lacks the keys \['model_config'\]"):
        checkpoint.load_denoiser(tmp_path / "c.pt")


def test_another_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="is not a scoresde checkpoint"):
        checkpoint.load(tmp_path / "c.pt")


def idx_bytes():
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    return (
        bytes([0, 0, 8, 3])
        + b"".join(n.to_bytes(4, "big") for n in images.shape)
        + images.tobytes()
    )


def test_a_valid_gzip_idx_file_reads(tmp_path):
    path = write(tmp_path / "x-idx3-ubyte.gz", gzip.compress(idx_bytes()))
    assert read_idx(path).shape == (2, 4, 4)


@pytest.mark.parametrize(
    "damage",
    [lambda gz: gz[: len(gz) // 2], lambda gz: gz[:12] + bytes(40) + gz[52:]],
    ids=["truncated", "corrupt"],
)
def test_a_damaged_gzip_idx_file_is_named(tmp_path, damage):
    path = write(tmp_path / "x-idx3-ubyte.gz", damage(gzip.compress(idx_bytes() * 50)))
    with pytest.raises(ValueError, match="x-idx3-ubyte.gz' is a truncated or corrupt gzip file"):
        read_idx(path)


@pytest.mark.parametrize(
    "content",
    [lambda p: write(p, random_bytes(500)), lambda p: torch.save({"a": 1}, p)],
    ids=["random-bytes", "torch-save-not-torchscript"],
)
def test_a_file_that_is_not_torchscript_is_refused_as_inception(tmp_path, content):
    content(tmp_path / "inception.pt")
    with pytest.raises(ValueError, match="inception.pt' is not a TorchScript file"):
        InceptionFeatures(tmp_path / "inception.pt")


def test_a_corrupt_statistics_file_is_named(tmp_path):
    path = write(tmp_path / "stats.npz", random_bytes(300))
    with pytest.raises(ValueError, match=r"stats.npz' is not a readable .npz of FeatureStats"):
        FeatureStats.load(path)
