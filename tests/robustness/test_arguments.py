"""Argument types at the ``sample()`` boundary: numpy integers are integers; a shape that is not
a tuple, a dtype that is not a floating-point ``torch.dtype`` and a request larger than the
machine's memory each get one ``ValueError`` naming the argument, the value and what was
expected (not a ``TypeError`` from deep inside torch or an allocator failure)."""

import numpy as np
import pytest
import torch

import scoresde as S

DEN = S.ring_mixture().denoiser(S.VPSDE())


def run(**kw):
    kw = {"shape": (4, 2), "n_steps": 3, "progress": False, **kw}
    return S.sample("ddim", DEN, **kw)


def test_numpy_integers_are_accepted_for_n_steps_and_shape():
    g = torch.Generator().manual_seed(0)
    ref = run(generator=g).x
    got = run(shape=(np.int64(4), np.int32(2)), n_steps=np.int64(3), generator=g.manual_seed(0))
    assert got.x.shape == (4, 2) and got.stats["n_steps"] == 3
    torch.testing.assert_close(got.x, ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"shape": 4}, r"shape must be a tuple of positive ints \(batch, \*dims\); got 4"),
        ({"shape": ()}, r"shape must be a tuple of positive ints"),
        ({"shape": (4, 0)}, r"shape must be a tuple of positive ints .*; got \(4, 0\)"),
        ({"shape": (4, 2.0)}, r"shape must be a tuple of positive ints .*; got \(4, 2.0\)"),
        ({"dtype": "float32"}, r"dtype must be a floating-point torch.dtype .*; got 'float32'"),
        ({"dtype": torch.int64}, r"dtype must be a floating-point torch.dtype .*; got torch.int64"),
        ({"n_steps": 5.0}, r"n_steps must be an int >= 1; got 5.0"),
        ({"n_steps": 10**9}, r"n_steps=1000000000 needs about \d+ GiB for the grid's coefficient"),
    ],
    ids=["int-shape", "empty-shape", "zero-dim", "float-dim", "str-dtype", "int-dtype",
         "float-n_steps", "huge-n_steps"],
)  # fmt: skip
def test_bad_arguments_get_one_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        run(**kw)


def test_a_trajectory_larger_than_memory_is_refused_before_sampling():
    with pytest.raises(ValueError, match=r"n_steps=100000 needs about .* GiB for save_trajectory"):
        run(shape=(512, 3, 64, 64), n_steps=10**5, save_trajectory=True)
