"""Score networks: output shaped like the input for 28x28 and 32x32 images and any trailing shape
(MLP); untrained networks predict exactly 0 (zero-initialised output layers); ``build_model`` of a
network's ``config`` plus its state dict reproduces its outputs exactly; class conditioning
changes the output and ``class_labels=None`` is the "unconditional" label; bad sizes are refused
with a message naming the argument.
"""

import pytest
import torch

from scoresde.models import ScoreMLP, UNet, build_model


@pytest.mark.parametrize("size, mults, attn", [(28, (1, 2, 2), (7,)), (32, (1, 2, 2, 2), (8, 4))],
                         ids=["28x28", "32x32"])  # fmt: skip
def test_unet_keeps_the_shape_and_rebuilds_from_its_config(size, mults, attn):
    torch.manual_seed(0)
    net = UNet(
        in_channels=3, image_size=size, channels=16, channel_mults=mults, attention_resolutions=attn
    )
    x, t = torch.randn(2, 3, size, size), torch.rand(2)
    assert torch.equal(net(x, t), torch.zeros_like(x))  # zero-initialised output convolution
    for p in net.parameters():  # move off the zero init so the comparison below means something
        p.data.add_(0.01 * torch.randn_like(p))
    copy = build_model(net.config)
    copy.load_state_dict(net.state_dict())
    out = net(x, t)
    assert out.shape == x.shape and out.abs().max() > 0
    assert torch.equal(copy(x, t), out)


def test_mlp_takes_any_trailing_shape():
    torch.manual_seed(0)
    net = ScoreMLP(12, width=16, depth=1)
    for p in net.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    x, t = torch.randn(5, 3, 4), torch.rand(5)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out.flatten(1), net(x.flatten(1), t))  # the same network on the flat view
    with pytest.raises(ValueError, match=r"ScoreMLP\(dim=12\) got x of shape \(5, 2\)"):
        net(torch.randn(5, 2), torch.rand(5))


def test_class_conditioning():
    torch.manual_seed(0)
    net = UNet(channels=8, channel_mults=(1, 2), attention_resolutions=(), num_classes=10)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    null = torch.full((2,), 10)
    assert torch.equal(net(x, t), net(x, t, class_labels=null))
    assert not torch.allclose(
        net(x, t, class_labels=torch.tensor([3, 3])), net(x, t, class_labels=null)
    )
    plain = UNet(channels=8, channel_mults=(1, 2), attention_resolutions=())
    with pytest.raises(
        ValueError, match="class_labels were given to a UNet built with num_classes=None"
    ):
        plain(x, t, class_labels=null)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 30, "channel_mults": (1, 2, 2)}, "image_size=30 must be divisible by"),
        ({"channels": 12}, "channels=12 must be a multiple of groups=8"),
        ({"num_res_blocks": 0}, "num_res_blocks must be an int >= 1; got 0"),
        ({"dropout": 1.0}, "dropout must be a finite real number in"),
    ],
    ids=["image-size", "groups", "res-blocks", "dropout"],
)
def test_bad_unet_sizes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**kwargs)


def test_build_model_names_bad_configs():
    with pytest.raises(
        ValueError, match=r"model config 'name' must be one of \['mlp', 'unet'\]; got 'resnet'"
    ):
        build_model({"name": "resnet"})
    with pytest.raises(ValueError, match="bad 'mlp' model config"):
        build_model({"name": "mlp", "depthh": 3})
