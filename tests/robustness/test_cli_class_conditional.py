"""``python -m scoresde sample`` on a class-conditional checkpoint (a tiny UNet trained for two
steps in the test): ``--class-label`` conditions every sample (or cycles through a list),
``--guidance-scale`` applies classifier-free guidance, and the result is exactly what the Python
API gives with the same conditioning (same prior draw, same arithmetic: bit-identical). Without a
label a conditional checkpoint samples its unconditional model, with a warning; labels on an
unconditional checkpoint, out-of-range labels and a guidance scale without a label are refused
with a clear error.
"""

import re

import pytest
import torch

import scoresde as S
from scoresde import checkpoint as ckpt_io
from tests.robustness.test_cli import fake_mnist, run  # noqa: F401  (fake_mnist is a fixture)

TINY = "--channels 8 --channel-mults 1,2 --attention-resolutions 14"


@pytest.fixture
def conditional_ckpt(tmp_path, fake_mnist):  # noqa: F811
    out = tmp_path / "cond"
    cmd = f"train --data mnist --data-dir {fake_mnist} {TINY} --steps 2 --batch-size 8"
    assert run(f"{cmd} --class-conditional --label-dropout 0.2 --out {out} --no-progress") == 0
    return out / "ema.pt"


def api_sample(ckpt, n, **denoiser_kwargs):
    base = ckpt_io.load_denoiser(ckpt)
    den = S.Denoiser(base.net, base.sde, base.parameterization, time_input=base.time_input,
                     **denoiser_kwargs)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    return S.sample("pf_euler", den, shape=(n, 1, 28, 28), n_steps=3, generator=gen,
                    progress=False).x  # fmt: skip


def cli_sample(ckpt, tmp_path, extra=""):
    out = tmp_path / "x.pt"
    assert run(f"sample --ckpt {ckpt} --sampler pf_euler --nfe 3 --n 4 {extra} --out {out}") == 0
    return torch.load(out)


def test_class_label_and_guidance_match_the_python_api(conditional_ckpt, tmp_path, capsys):
    y = torch.tensor([3, 3, 3, 3])
    x = cli_sample(conditional_ckpt, tmp_path, "--class-label 3")
    assert "class 3, guidance scale 1" in capsys.readouterr().out
    torch.testing.assert_close(x, api_sample(conditional_ckpt, 4, model_kwargs={"class_labels": y}),
                               rtol=0, atol=0)  # fmt: skip

    x = cli_sample(conditional_ckpt, tmp_path, "--class-label 0,1 --guidance-scale 2.5")
    y = torch.tensor([0, 1, 0, 1])
    cfg = S.ClassifierFreeGuidance(2.5, cond={"class_labels": y},
                                   uncond={"class_labels": torch.full_like(y, 10)})  # fmt: skip
    torch.testing.assert_close(x, api_sample(conditional_ckpt, 4, guidance=cfg), rtol=0, atol=0)
    # the label reaches the network: another label gives other samples
    assert not torch.equal(cli_sample(conditional_ckpt, tmp_path, "--class-label 5"),
                           cli_sample(conditional_ckpt, tmp_path, "--class-label 3"))  # fmt: skip


def test_a_conditional_checkpoint_without_a_label_warns_and_samples_unconditionally(
    conditional_ckpt, tmp_path
):
    with pytest.warns(
        UserWarning,
        match=r"no --class-label was given: this samples the "
        r"unconditional model \(trained with label dropout 0.2\)",
    ):
        x = cli_sample(conditional_ckpt, tmp_path)
    torch.testing.assert_close(x, api_sample(conditional_ckpt, 4), rtol=0, atol=0)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("--class-label 10", r"--class-label must be in \[0, 9\] for this checkpoint \(10 classes\); got 10"),
        ("--class-label cat", r"--class-label must be an int or a comma-separated list of ints; got 'cat'"),
        ("--guidance-scale 3", r"--guidance-scale 3.0 needs --class-label"),
        ("--class-label 1 --guidance-scale nan", r"--guidance-scale must be a finite number; got nan"),
    ],
    ids=["out-of-range", "not-an-int", "scale-without-label", "nan-scale"],
)  # fmt: skip
def test_bad_conditioning_is_refused(conditional_ckpt, tmp_path, capsys, extra, message):
    out = tmp_path / "x.pt"
    assert run(f"sample --ckpt {conditional_ckpt} --nfe 3 --n 4 {extra} --out {out}") == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_label_for_an_unconditional_checkpoint_is_refused(tmp_path, fake_mnist, capsys):  # noqa: F811
    out = tmp_path / "uncond"
    cmd = f"train --data mnist --data-dir {fake_mnist} {TINY} --steps 1 --batch-size 8"
    assert run(f"{cmd} --out {out} --no-progress") == 0
    assert run(f"sample --ckpt {out}/ema.pt --nfe 3 --n 2 --class-label 1 --out {out}/x.pt") == 2
    assert "--class-label needs a class-conditional checkpoint" in capsys.readouterr().err
