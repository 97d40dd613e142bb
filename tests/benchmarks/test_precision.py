"""``benchmarks/precision.py`` on a tiny configuration: every (sampler, NFE, dtype) cell is
there, the errors are ordered by the formats' precision (float32 at most a few 1e-6 on O(1)
states; float16, with 11 significant bits, below bfloat16, with 8), the discretisation column is
filled for deterministic samplers only, and the same noise reaches every dtype (a stochastic
sampler's float32 run is as close to float64 as a deterministic one's).
"""

import torch

from benchmarks import precision as P
from benchmarks.common import read_tsv


def test_precision_table_orders_the_formats(tmp_path):
    assert P.main(["--samplers", "ddim,euler_maruyama", "--problems", "gmm2d_vp", "--nfe", "10",
                   "--n", "16", "--ckpt", "", "--out", str(tmp_path)]) == 0  # fmt: skip
    rows = read_tsv(tmp_path / "precision.tsv")
    assert len(rows) == 2 * 3
    err = {(r["sampler"], r["dtype"]): r["median_error"] for r in rows}
    for key in ("ddim", "euler_maruyama"):
        assert err[key, "float32"] < 1e-5 < err[key, "float16"] < err[key, "bfloat16"] < 0.1
    disc = {r["sampler"]: r["discretisation"] for r in rows}
    assert disc["ddim"] > 0 and disc["euler_maruyama"] is None
    assert "| `ddim` | 10 |" in (tmp_path / "precision.md").read_text()


def test_float64_noise_is_the_same_draw_rounded():
    ts = torch.linspace(1.0, 1e-3, 3, dtype=torch.float64)
    like = torch.zeros(4, 3, dtype=torch.float16)
    a = P.Float64Noise(P.S.GaussianNoise(torch.Generator().manual_seed(0)))
    b = P.S.GaussianNoise(torch.Generator().manual_seed(0))
    a.bind(ts, like)
    z64 = b(1.0, 0.5, torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(a(1.0, 0.5, like), z64.to(torch.float16), rtol=0, atol=0)
