"""Checkpoints: resuming continues to bit-identical parameters; a process killed in the middle of
writing a checkpoint leaves the previous one intact (and resuming from it still reproduces the
uninterrupted run exactly); a checkpoint alone rebuilds the Denoiser; mismatched or foreign files
are refused with a clear error.

Exactness is the tolerance: every source of randomness is checkpointed and the arithmetic is the
same sequence of operations, so parameters must be equal bit for bit (``torch.equal``).
"""

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import scoresde as S
from scoresde import checkpoint as ckpt_io
from scoresde.data import toy_2d
from scoresde.models import ScoreMLP
from scoresde.train import CHECKPOINT_NAME, EMA_NAME, TrainConfig, train

REPO = Path(__file__).parents[2]


def make_denoiser(seed=0, width=32):
    torch.manual_seed(seed)
    return S.Denoiser(ScoreMLP(2, width=width, depth=2), S.VPSDE(), "eps", time_input="log_sigma")


def config(steps):
    return TrainConfig(steps=steps, batch_size=32, lr=2e-3, warmup=3, ema_decay=0.9, ckpt_every=4,
                       log_every=2, seed=3)  # fmt: skip


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    data = toy_2d("ring", 256, seed=0)
    full = make_denoiser()
    ref = train(full, data, config(12), out_dir=tmp_path / "full", progress=False)

    first = make_denoiser()
    train(first, data, config(8), out_dir=tmp_path / "split", progress=False)
    torch.manual_seed(12345)  # resume must not depend on the global RNG it finds
    resumed = make_denoiser(seed=99)  # nor on the fresh weights it starts from
    out = train(resumed, data, config(12), out_dir=tmp_path / "split", resume=True, progress=False)

    assert out.step == 12 and out.losses == ref.losses
    assert_same_state(resumed.net, full.net)
    assert_same_state(out.ema, ref.ema)
    a = ckpt_io.load(tmp_path / "full" / CHECKPOINT_NAME)
    b = ckpt_io.load(tmp_path / "split" / CHECKPOINT_NAME)
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    torch.set_num_threads(1)  # as in the test process: thread count changes float reductions
    sys.path.insert(0, {repo!r})
    from tests.robustness.test_checkpoint import make_denoiser, config
    from scoresde.data import toy_2d
    from scoresde.train import train

    real_save, calls = torch.save, []

    def torn_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the second checkpoint.pt write (1: checkpoint.pt, 2: ema.pt)
            f.write(b"half a checkpoint")
            f.flush()
            os._exit(17)  # die like a killed process: no cleanup, no finally blocks
        return real_save(obj, f, *args, **kwargs)

    torch.save = torn_save
    train(make_denoiser(), toy_2d("ring", 256, seed=0), config(12), out_dir={out!r},
          progress=False)
    """
)


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path):
    out = tmp_path / "run"
    script = CRASH_SCRIPT.format(repo=str(REPO), out=str(out))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 17, proc.stderr
    leftovers = list(out.glob(f".{CHECKPOINT_NAME}.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"half a checkpoint"
    state = ckpt_io.load(out / CHECKPOINT_NAME)
    assert state["step"] == 4  # the write at step 8 was torn; step 4 survives whole

    resumed = make_denoiser()
    train(
        resumed, toy_2d("ring", 256, seed=0), config(12), out_dir=out, resume=True, progress=False
    )
    reference = make_denoiser()
    train(reference, toy_2d("ring", 256, seed=0), config(12), progress=False)
    assert_same_state(resumed.net, reference.net)


def test_checkpoint_alone_rebuilds_the_denoiser(tmp_path):
    data = toy_2d("ring", 256, seed=0)
    den = S.Denoiser(ScoreMLP(2, width=16, depth=1), S.DiscreteVPSDE.cosine(n=50), "v",
                     time_input="index")  # fmt: skip
    res = train(den, data, config(4), out_dir=tmp_path, progress=False)
    for name in (CHECKPOINT_NAME, EMA_NAME):
        loaded = ckpt_io.load_denoiser(tmp_path / name)
        assert loaded.parameterization is S.Parameterization.V
        assert loaded.time_input == S.TrainIndex()
        assert torch.equal(loaded.sde.betas, den.sde.betas) and loaded.sde.name == "cosine"
        assert_same_state(loaded.net, res.ema)
    raw = ckpt_io.load_denoiser(tmp_path / CHECKPOINT_NAME, ema=False)
    assert_same_state(raw.net, den.net)
    with pytest.raises(ValueError, match="holds no 'model' weights"):
        ckpt_io.load_denoiser(tmp_path / EMA_NAME, ema=False)
    assert (tmp_path / EMA_NAME).stat().st_size < (tmp_path / CHECKPOINT_NAME).stat().st_size / 2


def test_resume_refuses_a_different_model_or_sde(tmp_path):
    data = toy_2d("ring", 256, seed=0)
    train(make_denoiser(), data, config(4), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="cannot resume: the checkpoint's model_config"):
        train(
            make_denoiser(width=16), data, config(8), out_dir=tmp_path, resume=True, progress=False
        )
    other = make_denoiser()
    other.sde = S.VESDE()
    with pytest.raises(ValueError, match="cannot resume: the checkpoint's sde"):
        train(other, data, config(8), out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no readable checkpoint at"):
        train(
            make_denoiser(),
            data,
            config(8),
            out_dir=tmp_path / "empty",
            resume=True,
            progress=False,
        )


def test_foreign_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a scoresde checkpoint"):
        ckpt_io.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt_io.load(tmp_path / "missing.pt")


def test_resume_refuses_another_recipe_unless_told_and_then_records_both(tmp_path):
    data = toy_2d("ring", 256, seed=0)
    train(make_denoiser(), data, config(4), out_dir=tmp_path, progress=False)
    other_data = toy_2d("ring", 256, seed=1)
    changed = {
        "data": (other_data, config(8)),
        "batch_size": (data, replace(config(8), batch_size=16)),
        "lr": (data, replace(config(8), lr=1e-3)),
        "seed": (data, replace(config(8), seed=4)),
    }
    for name, (d, cfg) in changed.items():
        with pytest.raises(ValueError, match=f"cannot resume with another recipe \\({name}: "):
            train(make_denoiser(), d, cfg, out_dir=tmp_path, resume=True, progress=False)
    out = train(make_denoiser(), data, config(6), out_dir=tmp_path, resume=True, progress=False)
    assert out.step == 6  # steps (and ckpt/log intervals) may change
    train(make_denoiser(), data, replace(config(8), lr=1e-3), out_dir=tmp_path, resume=True,
          allow_recipe_change=True, progress=False)  # fmt: skip
    state = ckpt_io.load(tmp_path / CHECKPOINT_NAME)
    assert state["train_config"]["lr"] == 1e-3 and state["step"] == 8
    (before,) = state["recipe_history"]
    assert before["train_config"]["lr"] == 2e-3 and before["until_step"] == 6


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    data = toy_2d("ring", 256, seed=0)
    ref = train(make_denoiser(), data, config(12), out_dir=tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    train(make_denoiser(), data, config(8), out_dir=run, progress=False)  # checkpoints at 4 and 8
    assert ckpt_io.load(run / "checkpoint.1.pt")["step"] == 4
    raw = (run / CHECKPOINT_NAME).read_bytes()
    (run / CHECKPOINT_NAME).write_bytes(raw[: len(raw) // 2])  # a torn newest checkpoint
    with pytest.warns(UserWarning, match=r"resuming from the older .*checkpoint.1.pt'; skipped"):
        out = train(make_denoiser(), data, config(12), out_dir=run, resume=True, progress=False)
    assert out.step == 12 and out.losses == ref.losses


def test_resume_cleans_temp_files_and_logs_each_step_once(tmp_path):
    data = toy_2d("ring", 256, seed=0)
    train(make_denoiser(), data, config(8), out_dir=tmp_path, progress=False)
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    # a run killed after logging step 10 but before its checkpoint at 12 resumes from step 8
    with open(tmp_path / "log.jsonl", "a") as log:
        log.write('{"step": 10, "loss": 1.0}\n{"step": 1')
    train(make_denoiser(), data, config(12), out_dir=tmp_path, resume=True, progress=False)
    assert not stale.exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize(
    "sde",
    [S.RectifiedFlow(t_min=1e-4), S.DiscreteVPSDE.linear(rescale_betas_zero_snr=True)],
    ids=repr,
)
def test_zero_terminal_snr_schedules_round_trip_through_a_checkpoint_record(sde):
    from scoresde.checkpoint import sde_from_dict, sde_to_dict

    back = sde_from_dict(sde_to_dict(sde))
    assert type(back) is type(sde) and back.zero_terminal_snr and back.t_min == sde.t_min
    t = torch.linspace(sde.t_min, 1.0, 9, dtype=torch.float64)
    torch.testing.assert_close(back.alpha(t), sde.alpha(t), rtol=0, atol=0)
