"""A residual MLP score network for low-dimensional data (toy 2-D sets, tests, the CPU demo)."""

from __future__ import annotations

from torch import Tensor, nn

from ..utils import check_int, check_real
from .embeddings import make_embedding

__all__ = ["ScoreMLP"]


class _Block(nn.Module):
    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.act(self.fc1(self.norm(h)) + self.emb(emb))
        return h + self.fc2(self.act(z))


class ScoreMLP(nn.Module):
    """``net(x, t_in)`` for ``x`` of shape ``(batch, *event_shape)``: residual MLP blocks, each
    with the time embedding added, on the flattened ``x``; the output has the shape of ``x``.

    The output adds a time-dependent per-coordinate gain on ``x`` to the MLP:
    ``net(x, t) = MLP(x, t) + a(t) * x``. Far from the data ``p_t`` is dominated by its Gaussian
    tails, so the ideal eps / x0 / v / score is affine in ``x`` there; the gain gives the network
    that asymptote instead of an MLP's arbitrary extrapolation, which otherwise sends prior draws
    from the tails (say ``|x_T| > 4``) off to ``|x| ~ 100`` along the probability-flow ODE. Both
    the last layer and the gain start at zero, so an untrained network predicts 0.

    Args:
        dim: ``prod(event_shape)`` of the data.
        width: hidden features.
        depth: residual blocks.
        embedding: ``"fourier"`` (Gaussian Fourier features) or ``"sinusoidal"``.
        embedding_dim: time-feature count.
        embedding_scale: see :mod:`scoresde.models.embeddings`.
    """

    def __init__(
        self,
        dim: int = 2,
        *,
        width: int = 128,
        depth: int = 3,
        embedding: str = "fourier",
        embedding_dim: int = 64,
        embedding_scale: float = 16.0,
    ):
        super().__init__()
        self.config = {
            "name": "mlp", "dim": check_int("dim", dim, low=1),
            "width": check_int("width", width, low=1), "depth": check_int("depth", depth, low=1),
            "embedding": embedding,
            "embedding_dim": check_int("embedding_dim", embedding_dim, low=2),
            "embedding_scale": check_real("embedding_scale", embedding_scale, low=0.0,
                                          low_open=True),
        }  # fmt: skip
        self.embed = nn.Sequential(
            make_embedding(embedding, embedding_dim, embedding_scale),
            nn.Linear(embedding_dim, width), nn.SiLU(), nn.Linear(width, width),
        )  # fmt: skip
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width, width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        self.gain = nn.Linear(width, dim)
        for layer in (self.out[-1], self.gain):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t_in: Tensor) -> Tensor:
        if x[0].numel() != self.config["dim"]:
            raise ValueError(
                f"ScoreMLP(dim={self.config['dim']}) got x of shape {tuple(x.shape)}; "
                f"expected (batch, *event_shape) with prod(event_shape) = {self.config['dim']}"
            )
        emb = self.embed(t_in)
        flat = x.flatten(1)
        h = self.inp(flat)
        for block in self.blocks:
            h = block(h, emb)
        return (self.out(h) + self.gain(emb) * flat).reshape(x.shape)
