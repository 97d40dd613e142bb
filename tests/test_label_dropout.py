"""Label dropout trains the unconditional model that classifier-free guidance needs.

With ``label_dropout > 0`` the class embedding's "no class" row (index ``num_classes``) receives
gradient and moves; with ``label_dropout = 0`` it is never used and stays exactly at its
initial value. Bad combinations are refused with a clear error.
"""

import pytest
import torch

import scoresde as S
from scoresde.models import ScoreMLP, UNet
from scoresde.train import TrainConfig, train


def run(label_dropout, labels=True):
    torch.manual_seed(0)
    net = UNet(in_channels=1, image_size=8, channels=8, channel_mults=(1, 2),
               attention_resolutions=(), groups=4, num_classes=3)  # fmt: skip
    den = S.Denoiser(net, S.VPSDE(), "eps")
    g = torch.Generator().manual_seed(0)
    data = torch.randn(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (32,), generator=g) if labels else None
    null_before = net.class_embed.weight[3].detach().clone()
    cfg = TrainConfig(steps=4, batch_size=16, lr=1e-2, warmup=0, label_dropout=label_dropout)
    train(den, data, cfg, labels=y, progress=False)
    return null_before, net.class_embed.weight[3].detach()


def test_dropped_labels_train_the_unconditional_embedding():
    before, after = run(0.5)
    assert not torch.equal(before, after)


def test_without_dropout_the_unconditional_embedding_is_untouched():
    before, after = run(0.0)
    assert torch.equal(before, after)


def test_label_dropout_needs_labels_and_a_conditional_network():
    with pytest.raises(ValueError, match=r"label_dropout must be .*got 1.0"):
        TrainConfig(label_dropout=1.0)
    with pytest.raises(ValueError, match="label_dropout=0.1 needs labels .*got no labels"):
        run(0.1, labels=False)
    den = S.Denoiser(ScoreMLP(2, width=8, depth=1), S.VPSDE(), "eps")
    with pytest.raises(ValueError, match="a network without num_classes"):
        train(den, torch.randn(16, 2), TrainConfig(steps=1, batch_size=8, label_dropout=0.1),
              labels=torch.zeros(16, dtype=torch.long), progress=False)  # fmt: skip
