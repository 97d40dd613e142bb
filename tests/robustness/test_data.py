"""Data readers: the real MNIST / Fashion-MNIST files parse to their published shapes and
statistics; raw and gzip idx files read identically; a missing file or directory, a corrupt header
and a truncated file raise errors that name the file; toy sets are a function of their seed.

The reference numbers (shapes, label counts, pixel means 0.1307 / 0.2860 on [0, 1]) are the ones
recorded in ``shared/data/SOURCES.md`` and published with the data sets. Tests that need the real
files skip, with the reason, when the data directory is absent.
"""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.data import TOY_DATASETS, find_idx_file, load_images, read_idx, toy_2d


def data_root() -> Path | None:
    candidates = [os.environ.get("SCORESDE_DATA"), Path(__file__).parents[2] / "../shared/data",
                  "/work/shared/data"]  # fmt: skip
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def need(name: str) -> Path:
    root = data_root()
    if root is None or not (root / name).is_dir():
        pytest.skip(
            f"{name} not found under $SCORESDE_DATA, <repo>/../shared/data or /work/shared/data"
        )
    return root / name


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@pytest.mark.parametrize(
    "name, mean, counts",
    [
        ("mnist", 0.1307, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
        ("fashion-mnist", 0.2868, [1000] * 10),
    ],
    ids=["mnist", "fashion-mnist"],
)
def test_real_test_split_has_published_shape_and_statistics(name, mean, counts):
    ds = load_images(need(name), "test")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.bincount().tolist() == counts
    if name == "mnist":
        mean = 0.1325  # test split (0.1307 is the train split)
    assert abs(ds.images.double().mean().item() / 255 - mean) < 5e-4


def test_raw_and_gzip_idx_files_read_identically(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    raw = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array))
    gz = read_idx(write_idx(tmp_path / "b-idx3-ubyte.gz", array, gz=True))
    np.testing.assert_array_equal(raw, array)
    np.testing.assert_array_equal(gz, array)


def test_missing_file_error_names_the_file_and_directory(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"train-labels-idx1-ubyte.*" + str(tmp_path)):
        load_images(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="data directory not found: '/no/such/dir'"):
        load_images("/no/such/dir")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'; got 'valid'"):
        find_idx_file(tmp_path, "valid", "images")


def test_corrupt_and_truncated_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    with pytest.raises(ValueError, match=r"bad-idx3-ubyte' is not an idx file"):
        read_idx(bad)
    good = write_idx(tmp_path / "t-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(
        ValueError, match=r"t-idx3-ubyte' is truncated or corrupt: header says shape \(3, 4, 4\)"
    ):
        read_idx(good)


def test_images_and_labels_must_agree(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((4,), np.uint8))
    with pytest.raises(
        ValueError, match=r"disagree: images of shape \(3, 28, 28\), labels of shape \(4,\)"
    ):
        load_images(tmp_path, "test")


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_sets_are_a_function_of_the_seed(name):
    a, b, c = toy_2d(name, 500, seed=1), toy_2d(name, 500, seed=1), toy_2d(name, 500, seed=2)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.5 < a.std(0).min() and a.abs().max() < 5  # order-1 spread, nothing far out


def test_toy_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"toy data set must be one of .*got 'spiral'"):
        toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="n must be an int >= 1; got 0"):
        toy_2d("ring", 0)
