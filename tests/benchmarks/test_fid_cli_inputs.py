"""Bad input to the FID command lines (``benchmarks.fid_vs_steps``, ``benchmarks.fid_bootstrap``)
is one line on stderr naming the argument, with exit status 2, and the argument checks come
before the checkpoint, the Inception network and the reference statistics are loaded (which
take minutes); the folder's table says how many of its cells it leaves out."""

import json

import numpy as np
import pytest
import torch

import benchmarks.fid_vs_steps as F
import scoresde as S
from benchmarks.fid_bootstrap import main as bootstrap_main
from benchmarks.fid_cache import append_cell, save_features
from benchmarks.fid_table import folder_rows, hidden_cells
from scoresde.metrics import FeatureStats
from tests.metrics.fid_helpers import write_tiny_feature_net

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")
A_FILE = F.__file__  # an existing file that is neither a checkpoint nor statistics nor a folder


def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(np.array([magic, *array.shape], dtype=">u4").tobytes() + array.tobytes())


@pytest.fixture
def inputs(tmp_path):
    """A data folder of 20 8x8 'MNIST' images, a tiny Inception stand-in and a scoresde
    checkpoint of a tiny UNet: valid inputs, so each test breaks exactly one."""
    from scoresde.checkpoint import FORMAT, atomic_save, sde_to_dict, time_input_to_dict
    from scoresde.models import UNet

    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    _write_idx(mnist / "train-images-idx3-ubyte", images, 2051)
    _write_idx(mnist / "train-labels-idx1-ubyte", np.zeros(20, dtype=np.uint8), 2049)
    net = UNet(in_channels=1, image_size=8, channels=8, channel_mults=(1, 2),
               attention_resolutions=(4,), groups=4)  # fmt: skip
    ckpt = {"format": FORMAT, "model_config": net.config, "ema": net.state_dict(),
            "sde": sde_to_dict(S.VPSDE()), "parameterization": "eps",
            "time_input": time_input_to_dict(S.ContinuousTime())}  # fmt: skip
    atomic_save(ckpt, tmp_path / "c.pt")
    return ["--ckpt", str(tmp_path / "c.pt"), "--data-dir", str(tmp_path / "data"),
            "--inception", str(write_tiny_feature_net(tmp_path / "tiny.pt")),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
            "--n", "4", "--batch-size", "2", "--ref-n", "20", "--nfe", "3",
            "--reference-steps", "0", "--samplers", "ddim"]  # fmt: skip


@pytest.fixture
def nothing_loads(monkeypatch):
    """Loading the model, the images or the Inception network fails the test."""

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the arguments were checked")

    for name in ("load_checkpoint", "read_mnist_images", "InceptionFeatures"):
        monkeypatch.setattr(F, name, loaded)


def one_line_error(main, argv, capsys, *expected):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    last = err.splitlines()[-1]
    assert "Traceback" not in err and err.endswith(last + "\n")
    assert all(text in last for text in expected), last
    return last


@pytest.mark.parametrize(
    "argv, expected",
    [
        # 1. budgets: unipc's smallest is 1 step + the final x0 call of denoise_final
        (["--nfe", "0"], ["--nfe 0", "budgets >= 2"]),
        (["--nfe", "-3"], ["--nfe -3", "budgets >= 2"]),
        (
            ["--nfe", "1", "--samplers", "unipc"],
            ["--nfe 1", ">= 2", "unipc: one step of 1 NFE + the final x0"],
        ),
        (["--nfe", "1", "3", "--samplers", "pf_heun"], ["--nfe 1", ">= 3", "pf_heun"]),
        (["--nfe", "2", "--samplers", "ddim", "pf_rk4"], ["--nfe 2", "pf_rk4", ">= 5"]),
        (["--samplers", "ddim", "annealed_langevin"], ["annealed_langevin needs a budget >= 101"]),
        (
            ["--nfe", "1", "--ending", "t_min", "--samplers", "pf_heun"],
            ["--nfe 1", ">= 2", "(pf_heun: one step of 2 NFE)"],
        ),
        (
            ["--ending", "t_min", "--samplers", "--peers", "diffusers:euler_ancestral"],
            ["--ending t_min", "diffusers:euler_ancestral", "cannot end"],
        ),
        (["--samplers", "--reference-steps", "0"], ["nothing to run"]),
        # 2. counts
        (["--seeds", "-1"], ["argument --seeds", "'-1'", ">= 0"]),
        (["--batch-size", "0"], ["argument --batch-size", "'0'", ">= 1"]),
        (["--n", "0"], ["argument --n/--n-samples", "'0'", ">= 2", "covariance"]),
        (["--n", "-5"], ["argument --n/--n-samples", "'-5'", ">= 2"]),
        (["--n", "1"], ["argument --n/--n-samples", "'1'", ">= 2"]),
        (["--ref-n", "1"], ["argument --ref-n", "'1'", ">= 2"]),
        (["--reference-steps", "-4"], ["argument --reference-steps", "'-4'", ">= 0"]),
        # 4. sampler specs
        (["--samplers", "unipcc"], ["--samplers", "unknown sampler 'unipcc'"]),
        (["--samplers", "unipc:foo=1"], ["--samplers", "unknown option 'foo'", "unipc"]),
        (["--samplers", "k-diffusion:heun"], ["--samplers", "'k-diffusion:heun'", "--peers"]),
        # 5. files and device
        (["--ckpt", "/nonexistent.pt"], ["--ckpt", "'/nonexistent.pt'", "checkpoint"]),
        (["--data-dir", "/nonexistent"], ["--data-dir", "'/nonexistent'", "mnist/"]),
        (["--inception", "/nonexistent.pt"], ["--inception", "'/nonexistent.pt'"]),
        (["--out", A_FILE], ["--out", repr(A_FILE), "is a file", "folder"]),
        (["--device", "bogus"], ["--device", "'bogus'"]),
    ],
)
def test_bad_arguments_fail_in_one_line_before_anything_loads(
    inputs, nothing_loads, capsys, argv, expected
):
    one_line_error(F.main, [*inputs, *argv], capsys, *expected)


def test_data_dir_without_the_inception_file_names_the_data_dir(
    inputs, nothing_loads, capsys, tmp_path
):
    argv = [a for a in inputs if a != "--inception" and not a.endswith("tiny.pt")]
    one_line_error(F.main, argv, capsys, "--data-dir", "fid-inception/default_1.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_device(inputs, nothing_loads, capsys):
    one_line_error(F.main, [*inputs, "--device", "cuda"], capsys, "--device", "CUDA")


def test_a_file_that_is_not_a_checkpoint_names_the_ckpt(inputs, capsys, monkeypatch):
    def no_inception(*args, **kwargs):
        raise AssertionError("the Inception network loaded before the checkpoint was read")

    monkeypatch.setattr(F, "InceptionFeatures", no_inception)
    one_line_error(F.main, [*inputs, "--ckpt", A_FILE], capsys,
                   "--ckpt", repr(A_FILE), "not a readable scoresde checkpoint")  # fmt: skip


def test_more_reference_images_than_the_data_holds_names_the_ref_n(inputs, nothing_loads, capsys,
                                                                   monkeypatch):  # fmt: skip
    from benchmarks.fid_inputs import read_mnist_images

    monkeypatch.setattr(F, "read_mnist_images", read_mnist_images)
    one_line_error(F.main, [*inputs, "--ref-n", "30"], capsys, "holds 20", "--ref-n 30")


def test_the_table_says_how_many_cells_of_another_setting_it_leaves_out(tmp_path):
    cache = tmp_path / "fid_vs_steps.cells.jsonl"
    context = {"checkpoint_sha256": "a" * 64, "reference": "mnist train[0:10000]"}

    def cell(i, n, **changed):
        key = json.dumps({"sampler": f"s{i}", "n": n, "context": {**context, **changed}},
                         sort_keys=True)  # fmt: skip
        append_cell(cache, key, {"role": "cell", "sampler": f"s{i}", "fid": 1.0})

    assert hidden_cells(cache, context, 8) is None  # no cells yet
    cell(0, 8)
    assert hidden_cells(cache, context, 8) is None  # the table shows every cell
    for i in range(1, 4):
        cell(i, 1000)
    assert hidden_cells(cache, context, 8) == (
        f"3 cells in {tmp_path} were made with n=1000; this table shows the n=8 cells only"
    )
    cell(4, 8, reference="mnist train[0:5000]")
    line = hidden_cells(cache, context, 8)
    assert line.startswith(f"4 cells in {tmp_path} were made with n=1000 (3); ")
    assert "reference=mnist train[0:5000] (1)" in line
    assert line.endswith("shows the n=8, reference=mnist train[0:10000] cells only")
    assert len(folder_rows(cache, context, 8)) == 5 - 4


def test_a_run_into_a_folder_of_another_n_says_what_its_table_leaves_out(inputs, capsys):
    assert F.main(inputs) == 0
    assert F.main([*inputs, "--n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        "1 cell in " in out[-2] and "made with n=4; this table shows the n=3 cells only" in out[-2]
    )
    assert out[-1].startswith("wrote ")


@pytest.fixture
def kept(tmp_path):
    """A result folder with the kept features of two cells, and reference statistics."""
    rng = np.random.default_rng(0)
    for sampler in ("ddim", "unipc"):
        key = json.dumps({"sampler": sampler, "grid": "g", "nfe_budget": 5})
        save_features(tmp_path / "fid_cells", key, torch.from_numpy(rng.normal(size=(30, 4))),
                      5, 1.0)  # fmt: skip
    FeatureStats.of(rng.normal(size=(100, 4))).save(tmp_path / "ref.npz")
    return tmp_path


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--reps", "1"], ["argument --reps", "'1'", ">= 2"]),
        (["--reps", "0"], ["argument --reps", "'0'", ">= 2"]),
        (["--cells", "0"], ["argument --cells", "'0'", ">= 1"]),
        (["--reference", "/nonexistent.npz"], ["--reference", "'/nonexistent.npz'", ".npz"]),
        (["--reference", A_FILE], ["--reference", repr(A_FILE), "is not reference"]),
        (["--samplers", "nope"], ["no kept features in", "match --samplers nope"]),
    ],
)
def test_bootstrap_bad_arguments_fail_in_one_line(kept, capsys, argv, expected):
    last = one_line_error(bootstrap_main, [str(kept), "--reference", str(kept / "ref.npz"),
                                           *argv], capsys, *expected)  # fmt: skip
    assert "delete it" not in last


def test_bootstrap_of_a_missing_folder_says_it_does_not_exist(kept, capsys):
    one_line_error(bootstrap_main, ["/nonexistent", "--reference", str(kept / "ref.npz")], capsys,
                   "'/nonexistent' does not exist")  # fmt: skip


def test_bootstrap_prints_the_table_header_before_its_rows(kept, capsys):
    assert bootstrap_main([str(kept), "--reference", str(kept / "ref.npz"), "--reps", "3"]) == 0
    out = capsys.readouterr().out
    assert out == (kept / "fid_bootstrap.md").read_text()
    lines = out.splitlines()
    assert lines[2].startswith("| cell |") and len(lines) == 4 + 2
