"""A small DDPM/NCSN++-style UNet for 28x28 and 32x32 images.

Residual blocks with GroupNorm and the time (and optional class) embedding added after the first
convolution (Ho et al. 2020, App. B), self-attention at the low resolutions, strided-convolution
downsampling and nearest-neighbour upsampling, skip connections between matching levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils import check_int, check_real
from .embeddings import make_embedding

__all__ = ["UNet"]


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(cout, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of one resolution."""

    def __init__(self, ch: int, groups: int, heads: int):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention channels {ch} must be divisible by heads={heads}")
        self.heads = heads
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """``net(x, t_in, class_labels=None)`` for images ``(batch, C, H, W)``.

    Level ``i`` runs at resolution ``image_size / 2^i`` with ``channels * channel_mults[i]``
    channels and ``num_res_blocks`` residual blocks (plus one more on the way up), with
    self-attention after each block at the resolutions listed in ``attention_resolutions``; two
    residual blocks with attention between them form the bottleneck.

    Args:
        in_channels: image channels (1 for MNIST).
        image_size: height = width; must be divisible by ``2^(len(channel_mults) - 1)``.
        channels: base width (a multiple of ``groups``).
        channel_mults: width multiplier per resolution level.
        num_res_blocks: residual blocks per level on the way down.
        attention_resolutions: resolutions (in pixels) that get self-attention.
        heads: attention heads.
        groups: GroupNorm groups.
        dropout: in every residual block (0 keeps multi-process training bit-comparable to one
            process).
        num_classes: if set, ``class_labels`` in ``[0, num_classes)`` are embedded and added to the
            time embedding; ``None`` labels (or ``num_classes`` itself) mean "unconditional",
            which classifier-free guidance needs.
        embedding, embedding_scale: the time embedding (:mod:`scoresde.models.embeddings`).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (7,),
        heads: int = 4,
        groups: int = 8,
        dropout: float = 0.0,
        num_classes: int | None = None,
        embedding: str = "fourier",
        embedding_scale: float = 16.0,
    ):
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        check_int("in_channels", in_channels, low=1)
        check_int("image_size", image_size, low=1)
        check_int("channels", channels, low=1)
        check_int("num_res_blocks", num_res_blocks, low=1)
        check_int("groups", groups, low=1)
        if not channel_mults or min(channel_mults) < 1:
            raise ValueError(
                f"channel_mults must be a non-empty tuple of ints >= 1; got {channel_mults}"
            )
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2^(len(channel_mults)-1) = "
                f"{2 ** (len(channel_mults) - 1)} for channel_mults={channel_mults}"
            )
        levels = [image_size // 2**k for k in range(len(channel_mults))]
        unmatched = sorted(set(attention_resolutions) - set(levels))
        if unmatched:
            raise ValueError(
                f"attention_resolutions {list(attention_resolutions)} include {unmatched}, which "
                f"match no UNet level; the levels of image_size={image_size} with "
                f"channel_mults={channel_mults} have resolutions {levels}"
            )
        if channels % groups:
            raise ValueError(f"channels={channels} must be a multiple of groups={groups}")
        if num_classes is not None:
            check_int("num_classes", num_classes, low=1)
        check_real("dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.config = {
            "name": "unet", "in_channels": in_channels, "image_size": image_size,
            "channels": channels, "channel_mults": list(channel_mults),
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": list(attention_resolutions), "heads": heads, "groups": groups,
            "dropout": dropout, "num_classes": num_classes, "embedding": embedding,
            "embedding_scale": embedding_scale,
        }  # fmt: skip

        emb_dim = 4 * channels
        self.time_embed = nn.Sequential(
            make_embedding(embedding, channels, embedding_scale),
            nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim),
        )  # fmt: skip
        self.num_classes = num_classes
        if num_classes is not None:
            self.class_embed = nn.Embedding(num_classes + 1, emb_dim)  # last row: unconditional

        def block(cin, cout):
            return ResBlock(cin, cout, emb_dim, groups, dropout)

        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([block(ch, channels * mult)])
                ch = channels * mult
                if res in attention_resolutions:
                    layer.append(Attention(ch, groups, heads))
                self.down.append(layer)
                skips.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.mid1 = block(ch, ch)
        self.mid_attn = Attention(ch, groups, heads)
        self.mid2 = block(ch, ch)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                layer = nn.ModuleList([block(ch + skips.pop(), channels * mult)])
                ch = channels * mult
                if res in attention_resolutions:
                    layer.append(Attention(ch, groups, heads))
                self.up.append(layer)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))  # fmt: skip
                res *= 2
        self.out = nn.Sequential(
            _norm(ch, groups), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t_in: Tensor, class_labels: Tensor | None = None) -> Tensor:
        emb = self.time_embed(t_in)
        if self.num_classes is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, device=x.device)
            emb = emb + self.class_embed(class_labels)
        elif class_labels is not None:
            raise ValueError("class_labels were given to a UNet built with num_classes=None")
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer[0], ResBlock):
                h = layer[0](h, emb)
                for attn in layer[1:]:
                    h = attn(h)
            else:
                h = layer[0](h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = layer[0](torch.cat([h, hs.pop()], dim=1), emb)
                for attn in layer[1:]:
                    h = attn(h)
            else:
                h = layer[1](layer[0](h))
        return self.out(h)
