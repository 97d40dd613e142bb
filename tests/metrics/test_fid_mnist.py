"""The full FID pipeline on real data reproduces the published value: MNIST train vs test, first
1000 images each, gives 15.9 (``shared/data/SOURCES.md``, computed there with the same file and
pytorch-fid's preprocessing) to within 0.5.

Cost: Inception-v3 on the CPU is ~165-180 s of CPU time per 1000 images on one core, plus
30-70 s for ``sqrtm`` of a 2048x2048 product (measured: 329 s CPU cold, 191 s warm). The
test-split side is always computed live. The train-split side (the reference) is kept in
pytest's cache (``.pytest_cache/``) under a key of the network file's sha256, the images'
sha256, ``n`` and the preprocessing version, so a repeat run costs one side; a stale cache
cannot hide a regression, because any change in the code that makes features moves the live
side away from the cached one and the FID away from 15.9. The 0.5 band is the one the
issue sets; the 15.9 is rounded to 0.1 in its source.
"""

import hashlib
import os

import pytest
import torch

from scoresde.metrics import (
    PREPROCESSING,
    FeatureStats,
    InceptionFeatures,
    cached_stats,
    extract_features,
    fid,
)
from tests.metrics.fid_helpers import data_dir, read_idx_images

ROOT = data_dir()
INCEPTION = None if ROOT is None else ROOT / "fid-inception" / "default_1.pt"
MNIST = None if ROOT is None else ROOT / "mnist"
N = 1000


# ~4 min of Inception forward passes on this 2-core CPU: the largest single test, run with -m slow
# (CI runs tests/metrics/test_fid.py's real-Inception check on a few images instead)
@pytest.mark.slow
@pytest.mark.skipif(
    INCEPTION is None
    or not INCEPTION.is_file()
    or not (MNIST / "t10k-images-idx3-ubyte").is_file(),
    reason="needs shared/data/fid-inception/default_1.pt and shared/data/mnist (SCORESDE_DATA)",
)
def test_mnist_train_vs_test_fid_reproduces_published_value(request, tmp_path):
    # the one heavy test: give Inception every core (conftest pins the others to one thread)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    extractor = InceptionFeatures(INCEPTION)
    train = read_idx_images(MNIST / "train-images-idx3-ubyte", N)
    test = read_idx_images(MNIST / "t10k-images-idx3-ubyte", N)
    key = {
        "network_sha256": extractor.sha256,
        "data": f"mnist train-images-idx3-ubyte[0:{N}]",
        "data_sha256": hashlib.sha256(train.numpy().tobytes()).hexdigest(),
        "n": N,
        "preprocessing": PREPROCESSING,
    }
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("scoresde-fid") if cache is not None else tmp_path
    reference = cached_stats(
        folder / f"mnist-train-{N}.npz",
        key,
        lambda: FeatureStats.of(extract_features(train, extractor)),
    )
    live = FeatureStats.of(extract_features(test, extractor))
    value = fid(reference, live)
    assert abs(value - 15.9) <= 0.5, (
        f"FID(MNIST train[:1000], test[:1000]) = {value:.3f}, expected 15.9 +- 0.5"
    )
