"""The ``train`` / ``sample`` / ``nll`` subcommands end to end on a tiny synthetic idx data set, and
their errors: a bad path or argument exits with status 2 and a message naming it, an NFE budget
the sampler cannot spend exactly is refused (``--nfe`` maps to ``n_steps`` through the sampler's
own ``nfe()``, never by assumption).
"""

import argparse
import json

import numpy as np
import pytest
import torch

from scoresde import checkpoint as ckpt_io
from scoresde.train_cli import add_train_parsers, nfe_to_steps
from tests.robustness.test_data import write_idx


def run(argv: str | list) -> int:
    """Parse and run one command line (a string is split on whitespace, like a shell would)."""
    parser = argparse.ArgumentParser()
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv.split() if isinstance(argv, str) else [str(a) for a in argv])
    return args.func(args)


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "fake-mnist"
    d.mkdir()
    for split, n in (("train", 32), ("t10k", 8)):
        write_idx(
            d / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=split == "t10k"
        )
        write_idx(d / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    return d


def test_train_sample_and_nll_run_from_the_checkpoint_alone(tmp_path, fake_mnist, capsys):
    out = tmp_path / "run"
    tiny = "--channels 8 --channel-mults 1,2 --attention-resolutions 14"
    cmd = f"train --data mnist --data-dir {fake_mnist} {tiny} --steps 2 --batch-size 8 --sde subvp"
    assert run(f"{cmd} --out {out} --no-progress") == 0
    state = ckpt_io.load(out / "ema.pt")
    assert state["step"] == 2 and state["sde"]["name"] == "SubVPSDE"
    assert state["model_config"]["channel_mults"] == [1, 2]

    grid = tmp_path / "grid.png"
    assert run(f"sample --ckpt {out}/ema.pt --sampler pf_euler --nfe 3 --n 4 --out {grid}") == 0
    assert "3 NFE measured" in capsys.readouterr().out
    assert run(f"sample --ckpt {out}/ema.pt --nfe 3 --n 4 --denoise-final --out {grid}") == 0
    assert "(2 steps, 3 NFE measured" in capsys.readouterr().out
    # 2x2 tiles of 28 pixels with a 2-pixel grey border, upscaled 3x, under an 18-pixel caption;
    # a greyscale PNG
    from PIL import Image

    with Image.open(grid) as image:
        assert image.mode == "L" and image.size == (3 * (2 + 2 * 30), 3 * (2 + 2 * 30) + 18)
        assert image.getpixel((1, 18 + 1)) == 128  # the separator

    result = tmp_path / "nll.json"
    cmd = f"nll --ckpt {out}/checkpoint.pt --n 4 --batch-size 4 --rtol 1e-2 --atol 1e-2"
    assert run(f"{cmd} --json {result}") == 0
    summary = json.loads(result.read_text())
    assert summary["n"] == 4 and np.isfinite(summary["bpd"]) and summary["bpd"] > 0


def test_toy_training_resumes_and_samples_to_a_tensor_file(tmp_path):
    out = tmp_path / "ring"
    cmd = f"train --data ring --toy-size 256 --batch-size 32 --out {out} --no-progress"
    assert run(f"{cmd} --steps 3") == 0
    assert run(f"{cmd} --steps 5 --resume") == 0
    assert ckpt_io.load(out / "checkpoint.pt")["step"] == 5
    assert run(f"sample --ckpt {out}/ema.pt --nfe 4 --n 10 --out {tmp_path}/x.pt") == 0
    assert torch.load(tmp_path / "x.pt").shape == (10, 2)
    # a saved grid is a grid like any other: the same samples from its file, its NFE implied
    cmd = f"sample --ckpt {out}/ema.pt --n 10 --sampler dpm_solver_pp_2m --grid karras"
    assert run(f"{cmd} --nfe 4 --out {tmp_path}/a.pt --save-grid {tmp_path}/g.pt") == 0
    cmd = f"sample --ckpt {out}/ema.pt --n 10 --sampler dpm_solver_pp_2m --grid {tmp_path}/g.pt"
    assert run(f"{cmd} --out {tmp_path}/b.pt") == 0
    torch.testing.assert_close(torch.load(tmp_path / "b.pt"), torch.load(tmp_path / "a.pt"))
    assert run(f"{cmd} --nfe 5 --out {tmp_path}/b.pt") == 2  # the file fixes 4 steps
    for grid in ("uniform_lambda", "quadratic", "optimized"):
        cmd = f"sample --ckpt {out}/ema.pt --n 4 --sampler unipc --grid {grid} --nfe 3"
        assert run(f"{cmd} --out {tmp_path}/{grid}.pt") == 0


@pytest.mark.parametrize(
    "out, message",
    [
        ("x.jpg", "--out must end in one of ['.png', '.pt']"),
        ("x.png", "is a PNG but the checkpoint's data are not images"),
        ("/proc/no/x.pt", "--out: cannot"),
    ],
)
def test_sample_checks_out_before_spending_any_network_call(
    tmp_path, capsys, monkeypatch, out, message
):
    import scoresde

    ring = tmp_path / "ring"
    cmd = f"train --data ring --toy-size 64 --batch-size 8 --steps 1 --out {ring} --no-progress"
    assert run(cmd) == 0
    capsys.readouterr()
    calls = []
    monkeypatch.setattr(scoresde, "sample", lambda *a, **k: calls.append(1))
    assert run(f"sample --ckpt {ring}/ema.pt --nfe 4 --out {tmp_path / out}") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and calls == []
    assert not (tmp_path / out).exists()


def test_sample_refuses_an_unknown_grid(tmp_path, capsys):
    assert run(f"sample --ckpt /no/such.pt --nfe 4 --grid bogus --out {tmp_path}/x.pt") == 2
    assert "checkpoint not found" in capsys.readouterr().err  # the checkpoint is read first
    ring = tmp_path / "ring"
    cmd = f"train --data ring --toy-size 64 --batch-size 8 --steps 1 --out {ring} --no-progress"
    assert run(cmd) == 0
    assert run(f"sample --ckpt {ring}/ema.pt --nfe 4 --grid bogus --out {tmp_path}/x.pt") == 2
    assert "--grid must be one of" in capsys.readouterr().err


def test_every_option_with_a_default_shows_it_in_help():
    from scoresde.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in (action.help or ""), f"{name} {action.option_strings}"


BAD = {
    "missing-data-dir": (
        "train --data mnist --data-dir /no/such/dir --out OUT",
        "data directory not found: '/no/such/dir'",
    ),
    "resume-without-checkpoint": (
        "train --data ring --out OUT --resume",
        "no readable checkpoint at",
    ),
    "bad-batch-size": (
        "train --data ring --out OUT --batch-size 0",
        "batch_size must be an int >= 1; got 0",
    ),
    "unet-on-toy": ("train --data ring --out OUT --model unet", "--model unet needs image data"),
    "missing-ckpt": (
        "sample --ckpt /no/such.pt --nfe 4 --out x.png",
        "checkpoint not found: '/no/such.pt'",
    ),
    "nll-missing-ckpt": ("nll --ckpt /no/such.pt", "checkpoint not found"),
    "out-under-a-file": (
        "train --data ring --out afile/run --steps 1",
        "out_dir 'afile/run' is not a writable directory (Not a directory)",
    ),
    "bogus-device": ("train --data ring --out OUT --device tpu", "--device must be a torch device"),
}
if not torch.cuda.is_available():
    for verb, rest in [("train", "--data ring --out OUT"), ("nll", "--ckpt x.pt"),
                       ("sample", "--ckpt x.pt --nfe 4 --out x.pt")]:  # fmt: skip
        BAD[f"{verb}-cuda-without-cuda"] = (
            f"{verb} {rest} --device cuda",
            "--device='cuda' but CUDA is not available on this machine",
        )


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_paths_and_arguments_exit_2_with_a_message(tmp_path, monkeypatch, capsys, case):
    argv, message = BAD[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").touch()
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_image_data_without_a_directory_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("SCORESDE_DATA", raising=False)
    assert run("train --data fashion-mnist --out OUT") == 2
    assert "--data-dir is required for --data fashion-mnist" in capsys.readouterr().err


def test_nll_of_a_toy_checkpoint_says_it_needs_images(tmp_path, capsys):
    out = tmp_path / "ring"
    run(f"train --data ring --toy-size 64 --batch-size 32 --steps 1 --out {out} --no-progress")
    assert run(f"nll --ckpt {out}/ema.pt --n 2") == 2
    assert "nll scores image checkpoints" in capsys.readouterr().err


def test_unknown_sampler_lists_the_valid_names(tmp_path, capsys):
    out = tmp_path / "ring"
    run(f"train --data ring --toy-size 64 --batch-size 32 --steps 1 --out {out} --no-progress")
    assert run(f"sample --ckpt {out}/ema.pt --sampler dpm --nfe 4 --out {tmp_path}/x.pt") == 2
    assert "unknown sampler 'dpm'; valid names are" in capsys.readouterr().err


class TwoCallSampler:
    """Stands in for a two-evaluation-per-step sampler (Heun-like): nfe(n) = 2n - 1."""

    name = "heun_like"

    def nfe(self, n_steps):
        return 2 * n_steps - 1


def test_nfe_maps_to_steps_through_the_samplers_own_count():
    s = TwoCallSampler()
    assert nfe_to_steps(s, 9) == 5
    with pytest.raises(
        ValueError, match="cannot spend exactly --nfe 10: it spends 9 or 11 network calls"
    ):
        nfe_to_steps(s, 10)
    with pytest.raises(ValueError, match="--nfe must be an int >= 1; got 0"):
        nfe_to_steps(s, 0)
    assert nfe_to_steps(s, 10, extra=1) == 5  # --denoise-final: 9 calls in the steps + 1


def test_an_nfe_the_sampler_cannot_spend_with_denoise_final_is_named_as_given(tmp_path, capsys):
    """``--nfe`` counts the final x0 call of ``--denoise-final``, so the refusal names the
    budget the user gave and the values that would work, not the steps' share of it."""
    ring = tmp_path / "ring"
    run(f"train --data ring --toy-size 64 --batch-size 8 --steps 1 --out {ring} --no-progress")
    cmd = f"sample --ckpt {ring}/ema.pt --sampler dpm_solver_pp_sde --n 4 --denoise-final"
    capsys.readouterr()
    assert run(f"{cmd} --nfe 10 --out {tmp_path}/x.pt") == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and (
            "cannot spend exactly --nfe 10 (with --denoise-final, which spends 1 NFE on the final "
            "x0): it spends 9 or 11 network calls at n_steps = 4 or 5; valid values are 9 or 11"
        )
        in err
    ), err
    assert run(f"{cmd} --nfe 9 --out {tmp_path}/x.pt") == 0
    assert "(4 steps, 9 NFE measured" in capsys.readouterr().out
    assert run(f"{cmd} --nfe 2 --out {tmp_path}/x.pt") == 2
    assert "the smallest valid value is 3" in capsys.readouterr().err


@pytest.mark.parametrize("argv", ["sample --ckpt x.pt --nfe ten", "train --steps 1.5", "bogus"])
def test_argument_parse_errors_are_one_line(capsys, argv):
    from scoresde.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv.split())
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "--help)" in err


def test_sample_takes_sampler_and_grid_configs_inline_or_from_json_files(tmp_path, capsys):
    """``--sampler`` / ``--grid`` accept what ``to_config()`` writes, inline or as a file, and
    sample exactly what the Python API samples with the rebuilt objects."""
    import scoresde as S
    from scoresde.checkpoint import load, load_denoiser

    out = tmp_path / "ring"
    run(f"train --data ring --toy-size 64 --batch-size 32 --steps 1 --out {out} --no-progress")
    sampler = S.get_sampler("unipc", solver_order=3)
    grid = S.Karras(rho=5.0)
    (tmp_path / "sampler.json").write_text(json.dumps(sampler.to_config()))
    cmd = ["sample", "--ckpt", out / "ema.pt", "--nfe", 5, "--n", 6, "--seed", 3]
    assert run([*cmd, "--sampler", tmp_path / "sampler.json", "--grid",
                json.dumps(grid.to_config()), "--out", tmp_path / "a.pt"]) == 0  # fmt: skip
    assert "UniPC(solver_order=3" in capsys.readouterr().out

    den = load_denoiser(load(out / "ema.pt"))
    expected = S.sample(sampler, den, shape=(6, 2), n_steps=5, grid=grid,
                        generator=torch.Generator().manual_seed(3), progress=False).x  # fmt: skip
    assert torch.equal(torch.load(tmp_path / "a.pt"), expected)

    assert run([*cmd, "--sampler", '{"name": "unipc", "options": {"solver_order": 9}}',
                "--out", tmp_path / "b.pt"]) == 2  # fmt: skip
    assert "solver_order" in capsys.readouterr().err
    assert run([*cmd, "--grid", "{not json", "--out", tmp_path / "c.pt"]) == 2
    assert "--grid is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    "json_path, message",
    [
        (".", "--json must end in one of ['.json']"),
        ("folder.json", "--json must be a file; 'folder.json' is a folder"),
        ("afile/nll.json", "--json: cannot create the folder of 'afile/nll.json'"),
        ("/proc/no/nll.json", "--json: cannot"),
        ("nll.txt", "--json must end in one of ['.json']"),
    ],
)
def test_nll_refuses_a_blocked_json_path_before_reading_anything(
    tmp_path, monkeypatch, capsys, json_path, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").touch()
    (tmp_path / "folder.json").mkdir()
    # the checkpoint does not exist: an error about it would mean --json was checked too late
    assert run(f"nll --ckpt /no/such.pt --json {json_path}") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_sample_runs_an_adaptive_sampler_without_nfe(tmp_path, capsys):
    """An adaptive sampler picks its own steps, so ``sample`` runs it without ``--nfe`` (its
    tolerances come with ``--sampler`` as a config), gives what ``scoresde.sample`` gives with
    ``n_steps`` omitted, and refuses an ``--nfe`` it cannot promise, saying what to do."""
    import scoresde as S
    from scoresde.checkpoint import load, load_denoiser

    out = tmp_path / "ring"
    run(f"train --data ring --toy-size 64 --batch-size 32 --steps 1 --out {out} --no-progress")
    capsys.readouterr()
    sampler = S.get_sampler("adaptive_sde", rel_tol=0.2, abs_tol=0.05)
    cmd = ["sample", "--ckpt", out / "ema.pt", "--n", 6, "--seed", 3, "--sampler",
           json.dumps(sampler.to_config())]  # fmt: skip
    assert run([*cmd, "--out", tmp_path / "a.pt"]) == 0
    printed = capsys.readouterr().out
    den = load_denoiser(load(out / "ema.pt"))
    expected = S.sample(sampler, den, shape=(6, 2), generator=torch.Generator().manual_seed(3),
                        progress=False)  # fmt: skip
    assert torch.equal(torch.load(tmp_path / "a.pt"), expected.x)
    assert f"(adaptive steps, {expected.nfe} NFE measured" in printed
    assert run([*cmd, "--nfe", 20, "--out", tmp_path / "b.pt"]) == 2
    err = capsys.readouterr().err
    assert "is adaptive" in err and "leave --nfe out" in err
