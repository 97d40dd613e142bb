"""Smoke tests of the other benchmark scripts' core functions on tiny configurations, and of
``scoresde recommend`` on a small table.

Each checks what its script reports, not only that it runs: the FID table has one row per
(sampler, budget) plus the reference, with measured NFE within budget and the same prior draws
for every sampler; the overhead rows are positive times with the scoresde row as the unit;
the recommendation ranks by the table's errors and names the peer that wins.
"""

import argparse
import json
import math
import re
import shlex

import pytest
import torch

import scoresde as S
from benchmarks import fid_table as T
from benchmarks import overhead as O
from benchmarks.common import git_revision, read_tsv, write_env, write_tsv
from benchmarks.exact_error import steps_for_budget
from benchmarks.fid_cache import read_cells
from benchmarks.fid_inputs import Model, load_checkpoint
from benchmarks.fid_summary import summary
from benchmarks.plot import plot_exact_error, plot_fid, plot_sw
from scoresde.metrics import FeatureStats, InceptionFeatures
from scoresde.recommend import (
    FULL_PROBLEMS,
    add_recommend_parser,
    format_fid_recommendation,
    format_recommendation,
    latest_table,
    recommend,
    recommend_fid,
    usage_lines,
)
from tests.metrics.fid_helpers import write_tiny_feature_net

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")


def tiny_model():
    data = S.GaussianMixture(torch.stack([torch.ones(1, 8, 8), -torch.ones(1, 8, 8)]), stds=0.5)
    return Model(data.denoiser(S.VPSDE(), "eps"), (1, 8, 8), lambda x: torch.sigmoid(x))


@pytest.mark.parametrize("ending", T.ENDINGS)
def test_fid_table_has_every_cell_and_the_reference(tmp_path, ending):
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    keys = sorted(S.SAMPLERS)
    rows = T.fid_table(
        tiny_model(),
        extractor,
        reference,
        samplers=keys,
        nfes=(2, 4),
        grid="uniform_lambda",
        reference_sampler="euler_maruyama",
        reference_steps=8,
        n=12,
        batch_size=5,
        seed=0,
        device=torch.device("cpu"),
        ending=ending,
        log=lambda m: None,
    )
    cells = [r for r in rows if r["role"] == "cell"]
    paid = 1 if ending == "denoise_final" else 0  # the final x0 is paid from the budget
    fits = {
        (k, b)
        for k in keys
        for b in (2, 4)
        if steps_for_budget(S.get_sampler(k), b - paid) is not None
    }
    assert {(r["sampler"], r["nfe_budget"]) for r in cells} == fits
    assert all(r["nfe"] <= r["nfe_budget"] and math.isfinite(r["fid"]) for r in cells)
    assert {r["ending"] for r in cells} == {ending}
    [ref] = [r for r in rows if r["role"] == "reference"]
    assert ref["nfe"] == 8 + 1 and math.isfinite(ref["fid"])  # denoise_final: +1 NFE
    write_tsv(tmp_path / "fid.tsv", rows, T.COLUMNS)
    assert len(read_tsv(tmp_path / "fid.tsv")) == len(rows)


def test_fid_cells_of_a_deterministic_sampler_share_prior_draws(tmp_path):
    """Same seed and sampler => identical FID: the prior draws come from the batch seeds."""
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    kw = dict(n=10, batch_size=4, seed=3, device=torch.device("cpu"))
    a = T.fid_cell(
        tiny_model(), S.get_sampler("pf_euler"), S.UniformLambda(), 3, extractor, reference, **kw
    )
    b = T.fid_cell(
        tiny_model(), S.get_sampler("pf_euler"), S.UniformLambda(), 3, extractor, reference, **kw
    )
    assert a["fid"] == b["fid"]


def test_load_checkpoint_rebuilds_the_denoiser_and_image_shape(tmp_path):
    from scoresde.checkpoint import FORMAT, atomic_save, sde_to_dict, time_input_to_dict
    from scoresde.models import UNet

    net = UNet(in_channels=1, image_size=8, channels=8, channel_mults=(1, 2),
               attention_resolutions=(4,), groups=4)  # fmt: skip
    ckpt = {
        "format": FORMAT,
        "model_config": net.config,
        "ema": net.state_dict(),
        "sde": sde_to_dict(S.VPSDE()),
        "parameterization": "eps",
        "time_input": time_input_to_dict(S.ContinuousTime()),
    }
    atomic_save(ckpt, tmp_path / "c.pt")
    model = load_checkpoint(tmp_path / "c.pt", "cpu")
    assert model.shape == (1, 8, 8)
    x = torch.zeros(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.denoiser.eps(x, 0.5), net(x, torch.full((2,), 0.5)))


def test_overhead_rows_time_every_registered_method_against_its_peers():
    rows, forward_s, desc = O.measure(batch=2, shape=(1, 8, 8), nfe=4, repeats=1)
    assert forward_s > 0 and desc
    ours = [r for r in rows if r["implementation"] == "scoresde"]
    timed = {v[0] for v in O.METHODS.values() if v[0] in S.SAMPLERS}
    assert {r["sampler"] for r in ours} == {
        k for k in timed if steps_for_budget(S.get_sampler(k), 4)
    }
    for r in rows:
        assert r["time_per_nfe_s"] > 0 and r["nfe"] <= 4
        if r["implementation"] == "scoresde":
            assert r["ratio_vs_scoresde"] == 1.0


def table(tmp_path):
    rows = []
    for problem, scale in (("p1_ddpm", 1.0), ("p2_ddpm", 10.0)):
        for sampler, grid, nfe, err in [
            ("a", "g1", 10, 1e-2),
            ("a", "g1", 20, 1e-3),
            ("b", "g1", 10, 2e-2),
            ("b", "g2", 10, 5e-3),
            ("b", "g2", 20, 4e-3),
        ]:
            rows.append(
                {
                    "problem": problem,
                    "family": "scoresde",
                    "sampler": sampler,
                    "grid": grid,
                    "nfe": nfe,
                    "median_error": err * scale,
                }
            )
        rows.append(
            {
                "problem": problem,
                "family": "diffusers",
                "sampler": "DDIM",
                "grid": "trailing",
                "nfe": 10,
                "median_error": 3e-3 * scale,
            }
        )
    path = tmp_path / "2026-01-01_cpu" / "exact_error.tsv"
    path.parent.mkdir()
    return write_tsv(path, rows, ["problem", "family", "sampler", "grid", "nfe", "median_error"])


def test_recommend_ranks_by_error_within_budget_and_shows_a_winning_peer(tmp_path):
    path = table(tmp_path)
    res = recommend(10, "p1_ddpm", table=path)
    assert [(r["sampler"], r["grid"]) for r in res["ranking"]] == [
        ("b", "g2"),
        ("a", "g1"),
        ("b", "g1"),
    ]
    assert res["ranking"][0]["errors"]["p1_ddpm"] == (5e-3, 10)
    text = format_recommendation(res)
    assert "DDIM" in text and "peer wins" in text
    res20 = recommend(20, table=path)
    assert res20["ranking"][0]["sampler"] == "a" and res20["ranking"][0]["score"] == pytest.approx(
        1.0
    )
    assert latest_table(tmp_path) == path


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nfe": 0}, "nfe must be"),
        ({"nfe": 5}, "below the smallest"),
        ({"nfe": 10, "problem": "nope"}, "problem must be one of"),
    ],
)
def test_recommend_rejects_bad_arguments(tmp_path, kwargs, match):
    path = table(tmp_path)
    with pytest.raises(ValueError, match=match):
        recommend(table=path, **kwargs)


def test_recommend_subcommand_registers_and_runs(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="scoresde")
    add_recommend_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recommend", "--nfe", "20", "--table", str(table(tmp_path))])
    assert args.func(args) == 0
    assert "Best samplers at <= 20 NFE" in capsys.readouterr().out


def fid_table_file(folder):
    rows = [
        {"role": "cell", "sampler": s, "grid": "karras", "nfe_budget": b, "nfe": b, "fid": f / b,
         "n_samples": 1000}
        for s, f in (("ddim", 100.0), ("pf_heun", 80.0)) for b in (5, 10, 20)
    ] + [
        {"role": "cell", "sampler": "unipc", "grid": "karras", "nfe_budget": 10, "nfe": 9,
         "fid": 1.0},
        {"role": "cell", "sampler": "dpm_solver_2m", "grid": "karras", "nfe_budget": 5, "n_steps": 2,
         "note": "FloatingPointError"},
        {"role": "reference", "sampler": "ancestral", "grid": "uniform_time", "n_steps": 1000, "nfe": 1001,
         "fid": 2.5, "n_samples": 1000},
    ]  # fmt: skip
    folder.mkdir(exist_ok=True)
    return write_tsv(folder / "fid_vs_steps.tsv", rows, T.COLUMNS)


def test_recommend_fid_ranks_each_samplers_best_cell_within_budget(tmp_path):
    path = fid_table_file(tmp_path / "2026-01-01_cpu")
    res = recommend_fid(10, table=path)
    assert [(r["sampler"], r["fid"], r["nfe"]) for r in res["ranking"]] == [
        ("unipc", 1.0, 9),
        ("pf_heun", 8.0, 10),
        ("ddim", 10.0, 10),
    ]  # dpm_solver_2m failed: no FID, not ranked, but counted
    assert res["failed"] == 1
    assert [(r["sampler"], r["fid"]) for r in recommend_fid(5, table=path)["ranking"]] == [
        ("pf_heun", 16.0),
        ("ddim", 20.0),
    ]
    assert res["ending"] == "t_min" and res["best_peer"] is None  # a table without endings
    text = format_fid_recommendation(res)
    assert (
        "1. unipc" in text
        and "reference: ancestral (1001 NFE, ending denoise_final) FID=2.50" in text
    )
    assert "skipped 1 failed cell(s): no FID, see the note column" in text
    assert "ending: t_min" in text
    assert latest_table(tmp_path, "fid_vs_steps.tsv") == path
    with pytest.raises(ValueError, match="below the smallest"):
        recommend_fid(4, table=path)
    (tmp_path / "exact").mkdir()
    not_fid = table(tmp_path / "exact").rename(tmp_path / "fid_vs_steps.tsv")
    with pytest.raises(ValueError, match="is not a table of benchmarks/fid_vs_steps.py"):
        recommend_fid(10, table=not_fid)


def seeded_fid_table_file(folder):
    """Cells at 3 seeds and both endings, a peer, and a failed seed of one cell."""
    rows = [
        {"role": role, "family": fam, "sampler": s, "grid": g, "ending": e, "seed": seed,
         "nfe_budget": 10, "nfe": nfe, "n_steps": nfe - (e == "denoise_final"),
         "fid": f + (e == "t_min") * 10 + seed, "n_samples": 1000}
        for role, fam, s, g, f, nfe in (("cell", "scoresde", "ddim", "karras", 30.0, 10),
                                        ("cell", "scoresde", "unipc", "karras", 20.0, 9),
                                        ("peer", "k-diffusion", "k-diffusion:heun",
                                         "karras(rho=7)", 25.0, 9))
        for e in ("denoise_final", "t_min") for seed in (0, 1, 2)
    ] + [
        {"role": "cell", "family": "scoresde", "sampler": "ddim", "grid": "uniform_lambda",
         "ending": "denoise_final", "seed": 3, "nfe_budget": 10, "n_steps": 9, "note": "failed"},
    ]  # fmt: skip
    folder.mkdir(exist_ok=True)
    return write_tsv(folder / "fid_vs_steps.tsv", rows, T.COLUMNS)


def test_recommend_fid_averages_seeds_ranks_one_ending_and_names_the_best_peer(tmp_path):
    path = seeded_fid_table_file(tmp_path / "2026-01-01_cpu")
    res = recommend_fid(10, table=path)
    assert res["ending"] == "denoise_final"  # preferred whenever the table has it
    assert [(r["sampler"], r["fid"], r["fid_sd"], r["seeds"], r["nfe"]) for r in res["ranking"]] == [
        ("unipc", 21.0, 1.0, 3, 9),
        ("ddim", 31.0, 1.0, 3, 10),
    ]  # fmt: skip
    peer = res["best_peer"]
    assert (peer["sampler"], peer["fid"], peer["family"]) == (
        "k-diffusion:heun",
        26.0,
        "k-diffusion",
    )
    text = format_fid_recommendation(res)
    assert "ending: denoise_final (the model's x0 at the last step)" in text
    assert "1. unipc" in text and "FID=21.00 ± 1.00 (3 seeds)" in text
    assert "best peer: k-diffusion:heun (grid=karras(rho=7), 9 NFE) FID=26.00 ± 1.00" in text
    t_min = recommend_fid(10, table=path, ending="t_min")
    assert [(r["sampler"], r["fid"]) for r in t_min["ranking"]] == [("unipc", 31.0), ("ddim", 41.0)]
    assert t_min["best_peer"]["fid"] == 36.0
    with pytest.raises(ValueError, match="ending must be one of"):
        recommend_fid(10, table=path, ending="zero")
    old = fid_table_file(tmp_path / "old")
    with pytest.raises(ValueError, match="has no cells ending 'denoise_final'"):
        recommend_fid(10, table=old, ending="denoise_final")


def test_recommend_fid_gives_a_one_seed_cell_its_bootstrap_sd(tmp_path):
    rows = [
        {"role": "cell", "family": "scoresde", "sampler": s, "grid": "karras",
         "ending": "denoise_final", "seed": 0, "nfe_budget": 10, "nfe": 10, "n_steps": 9,
         "fid": f, "fid_sd": sd, "n_samples": 1000}
        for s, f, sd in (("ddim", 30.0, 0.7), ("unipc", 20.0, None))
    ]  # fmt: skip
    (tmp_path / "2026-01-01_cpu").mkdir()
    path = write_tsv(tmp_path / "2026-01-01_cpu" / "fid_vs_steps.tsv", rows, T.COLUMNS)
    text = format_fid_recommendation(recommend_fid(10, table=path))
    assert "FID=30.00 ± 0.70 (bootstrap)" in text
    assert "FID=20.00  (10 NFE" in text  # a table from before the column: no bar


def test_recommend_fid_usage_ends_the_way_the_table_was_ranked(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="scoresde")
    add_recommend_parser(parser.add_subparsers(dest="command"))
    fid = str(seeded_fid_table_file(tmp_path / "f"))
    argv = ["recommend", "--nfe", "10", "--problem", "mnist_fid", "--fid-table", fid]
    assert parser.parse_args(argv).func(parser.parse_args(argv)) == 0
    *_, code, command = capsys.readouterr().out.splitlines()
    assert "n_steps=8, denoise_final=True).x" in code
    assert command.split()[-4:] == ["9", "--denoise-final", "--out", "samples.png"]
    args = parser.parse_args([*argv, "--ending", "t_min"])
    assert args.func(args) == 0
    *_, code, command = capsys.readouterr().out.splitlines()
    assert "denoise_final" not in code and "--denoise-final" not in command


def test_recommend_subcommand_prints_the_fid_ranking(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="scoresde")
    add_recommend_parser(parser.add_subparsers(dest="command"))
    exact, fid = str(table(tmp_path)), str(fid_table_file(tmp_path / "f"))
    args = parser.parse_args(["recommend", "--nfe", "20", "--table", exact, "--fid-table", fid])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Best samplers at <= 20 NFE on the exact" in out and "on the trained MNIST model" in out
    args = parser.parse_args(
        ["recommend", "--nfe", "20", "--problem", "mnist_fid", "--fid-table", fid]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "median" not in out and "1. unipc" in out
    args = parser.parse_args(["recommend", "--nfe", "20", "--table", exact, "--fid-table", exact])
    assert args.func(args) == 2  # a table the user names is never skipped silently
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a table of benchmarks/fid_vs_steps.py" in err


def test_recommend_says_in_its_first_line_when_the_table_is_partial(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="scoresde")
    add_recommend_parser(parser.add_subparsers(dest="command"))
    path = table(tmp_path)  # two made-up problems: not the full benchmark's six
    args = parser.parse_args(["recommend", "--nfe", "20", "--table", str(path)])
    assert args.func(args) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("WARNING: partial benchmark table") and "lacks problems" in first
    quick = path.parent.with_name("2026-01-02_cpu_quick")
    quick.mkdir()
    path = path.rename(quick / "exact_error.tsv")
    res = recommend(20, "p1_ddpm", table=path)  # one problem asked for: only --quick is flagged
    assert res["partial"] == ["a --quick run (fewer samples, budgets and grids)"]
    assert format_recommendation(res).startswith("WARNING: partial benchmark table (a --quick")


def test_recommend_ends_with_a_sample_call_and_the_matching_command(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="scoresde")
    add_recommend_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recommend", "--nfe", "10", "--problem", "p1_ddpm",
                              "--table", str(table(tmp_path))])  # fmt: skip
    assert args.func(args) == 0
    *_, code, command = capsys.readouterr().out.splitlines()
    assert code.strip() == "x = S.sample(\"b\", denoiser, shape=shape).x  # on the benchmark's 'g2'"
    assert command.split() == ["python", "-m", "scoresde", "sample", "--ckpt", "CHECKPOINT.pt",
                               "--sampler", "b", "--grid", "g2", "--nfe", "10", "--out",
                               "samples.png"]  # fmt: skip


@pytest.mark.parametrize("grid, code", [("karras", "S.Karras(7.0)"), ("uniform_lambda",
                         "S.UniformLambda()"), ("optimized", 'S.Optimized("unipc", denoiser')])  # fmt: skip
def test_recommend_usage_line_runs_as_python(grid, code):
    line = usage_lines("unipc", grid, 4, 4)[0].strip()
    assert code in line
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), stds=0.5)
    denoiser, shape = data.denoiser(S.VPSDE(), "eps"), (3, 2)
    scope = {"S": S, "denoiser": denoiser, "shape": shape}
    exec(line.replace("shape=(16,", "max_evals=3, shape=(16,"), scope)  # a cheap fit for the test
    assert scope["x"].shape == shape and torch.isfinite(scope["x"]).all()


@pytest.mark.parametrize("grid, options", [("adaptive(rtol=0.03)", {"rtol": 0.03, "atol": 3e-4}),
                                           ("adaptive(defaults)", {})])  # fmt: skip
def test_recommend_usage_of_an_adaptive_sampler_runs_with_the_tables_tolerances(grid, options):
    """An adaptive run of the table (grid ``adaptive(rtol=r)``: ``rtol = r``, ``atol = r/100``,
    as ``benchmarks/exact_error.py`` ran it) is recommended with those tolerances, in Python and
    as a ``--sampler`` config, with no ``--grid`` or ``--nfe`` (it picks its own steps)."""
    import shlex

    from scoresde.train_cli import add_train_parsers

    code, command = usage_lines("dpm_solver_adaptive", grid, 66, None)
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), stds=0.5)
    scope = {"S": S, "denoiser": data.denoiser(S.VPSDE(), "eps"), "shape": (3, 2)}
    exec(code.strip(), scope)
    assert scope["x"].shape == (3, 2) and torch.isfinite(scope["x"]).all()
    expected = S.get_sampler("dpm_solver_adaptive", **options).to_config()
    sampler = eval(re.search(r'S\.sample\((S\.get_sampler\(.*?\)|".*?")', code)[1], scope)
    sampler = S.get_sampler(sampler) if isinstance(sampler, str) else sampler  # no options
    assert sampler.to_config() == expected
    parser = argparse.ArgumentParser()
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(shlex.split(command)[3:])
    assert args.nfe is None and args.grid is None
    config = json.loads(args.sampler) if args.sampler.startswith("{") else args.sampler
    assert S.get_sampler(config).to_config() == expected


def test_recommend_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    from scoresde.cli import main

    for argv in (["--table", str(tmp_path)], ["--table", str(table(tmp_path)), "--problem", "x"]):
        assert main(["recommend", "--nfe", "10", *argv]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith("error: ")


def test_packaged_tables_are_the_newest_full_benchmark_runs():
    from benchmarks.exact_error import make_problems
    from benchmarks.publish import PACKAGED, TABLES, newest_full

    assert tuple(p.key for p in make_problems()) == FULL_PROBLEMS
    for name in TABLES:
        src = newest_full(name)
        shipped = PACKAGED / src.parent.name / name
        assert shipped.read_bytes() == src.read_bytes(), "run `python -m benchmarks.publish`"
        assert latest_table(name=name).parent.name == src.parent.name


def test_fid_summary_tabulates_cells_best_per_budget_and_reference(tmp_path):
    from benchmarks.common import read_tsv
    from benchmarks.plot import redraw

    folder = tmp_path / "r"
    rows = read_tsv(fid_table_file(folder))
    text = summary(rows)
    lines = text.splitlines()
    assert lines[0] == "| sampler | grid | ending | NFE 5 | NFE 10 | NFE 20 |"
    # rows without an ending: old tables
    assert "| `ddim` | karras | t_min | 20.0 | 10.0 | 5.0 |" in lines
    assert "| `unipc` | karras | t_min | – | 1.0 (9) | – |" in lines  # measured NFE below budget
    assert "| `dpm_solver_2m` | karras | t_min | failed | – | – |" in lines
    assert "| **best** | | | `pf_heun` 16.0 | `unipc` 1.0 | `pf_heun` 4.0 |" in lines
    assert "Reference: `ancestral`" in text
    assert "(1001 NFE, ending denoise_final): FID 2.5, 1000 samples." in text
    assert folder / "fid_vs_steps.md" in redraw(folder)
    assert (folder / "fid_vs_steps.md").read_text() == text + "\n"


def test_fid_summary_gives_mean_and_spread_over_seeds_per_ending():
    rows = [
        {"role": "cell", "sampler": "x", "grid": "g", "ending": e, "seed": seed, "nfe_budget": 10,
         "nfe": 10,
         "fid": f + seed}
        for e, f in (("denoise_final", 30.0), ("t_min", 40.0)) for seed in (0, 1, 2)
    ]  # fmt: skip
    lines = summary(rows).splitlines()
    assert "| `x` | g | denoise_final | 31.0 ± 1.0 |" in lines
    assert "| `x` | g | t_min | 41.0 ± 1.0 |" in lines
    assert "| **best** | | | `x` 31.0 ± 1.0 |" in lines
    assert any(line.startswith("± : standard deviation over seeds [0, 1, 2]") for line in lines)


def test_fid_summary_gives_a_one_seed_cell_its_bootstrap_sd():
    rows = [
        {"role": "cell", "sampler": "x", "grid": "g", "ending": "denoise_final", "seed": 0,
         "nfe_budget": 10, "nfe": 10, "fid": 30.0, "fid_sd": 0.7},
        {"role": "cell", "sampler": "y", "grid": "g", "ending": "denoise_final", "seed": 0,
         "nfe_budget": 10, "nfe": 10, "fid": 40.0, "fid_sd": None},  # a table from before
    ]  # fmt: skip
    lines = summary(rows).splitlines()
    assert "| `x` | g | denoise_final | 30.0 ± 0.7 |" in lines
    assert "| `y` | g | denoise_final | 40.0 |" in lines
    assert "| **best** | | | `x` 30.0 ± 0.7 |" in lines
    assert any(line.startswith("± : the bootstrap standard deviation") for line in lines)


def test_plots_are_written_from_table_rows(tmp_path):
    rows = [
        {"problem": p, "family": f, "sampler": s, "grid": "g", "nfe": n, "median_error": e / n}
        for p in ("a_ddpm", "b_ve")
        for f, s, e in (("scoresde", "x", 1.0), ("diffusers", "D", 2.0), ("k-diffusion", "k", 3.0))
        for n in (5, 10, 20)
    ]
    sw = [
        {"problem": "a", "sampler": "s", "grid": "g", "nfe": n, "sw2": 1 / n, "sw2_floor": 0.01}
        for n in (5, 10)
    ]
    fids = [{"role": "cell", "sampler": "s", "grid": "g", "nfe": n, "fid": 50 / n} for n in (5, 10)]
    fids.append({"role": "reference", "sampler": "r", "grid": "g", "nfe": 1000, "fid": 2.0})
    paths = [
        plot_exact_error(rows, tmp_path / "e.png"),
        plot_exact_error(rows, tmp_path / "b.png", envelope=True),
        plot_sw(sw, tmp_path / "s.png"),
        plot_fid(fids, tmp_path / "f.png"),
    ]
    for path in paths:
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_fid_table_resumes_from_its_cell_cache(tmp_path):
    """A second run with the same key reads every cell back; a new context reruns them."""
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    cache = tmp_path / "cells.jsonl"
    seen = []
    kw = dict(
        samplers=["ddim", "pf_heun"], nfes=(2, 4), grid="uniform_lambda",
        reference_sampler="ancestral", reference_steps=4, n=6, batch_size=3, seed=0,
        device=torch.device("cpu"), log=lambda m: None, cache=cache,
    )  # fmt: skip
    first = T.fid_table(tiny_model(), extractor, reference, context={"ckpt": "a"}, **kw)
    with open(cache, "a") as f:
        f.write('{"key": "torn')  # a run killed mid-write leaves a partial line
    again = T.fid_table(
        tiny_model(), extractor, reference, context={"ckpt": "a"}, on_row=seen.append, **kw
    )
    assert again == first and seen == []  # nothing rerun
    assert len(cache.read_text().splitlines()) == len(first) + 1
    T.fid_table(tiny_model(), extractor, reference, context={"ckpt": "b"}, on_row=seen.append, **kw)
    assert len(seen) == len(first)
    assert len(read_cells(cache)) == 2 * len(first)  # none lost after the torn line


# a cell cache and the feature file names as written by an earlier version of the script: a
# change to how cells are keyed would rerun every finished cell of every result folder
PINNED_CELLS = [
    '{"key": "{\\"batch_size\\": 3, \\"context\\": {\\"checkpoint_sha256\\": \\"c\\", \\"reference\\": '
    '\\"r\\"}, \\"ending\\": \\"denoise_final\\", \\"grid\\": \\"uniform_lambda\\", \\"n\\": 6, '
    '\\"n_steps\\": 2, \\"nfe_budget\\": 3, \\"role\\": \\"cell\\", \\"sampler\\": \\"ddim\\", '
    '\\"seed\\": 0}", "row": {"role": "cell", "sampler": "ddim", "grid": "uniform_lambda", '
    '"ending": "denoise_final", "seed": 0, "nfe_budget": 3, "family": "scoresde", "nfe": 3, '
    '"n_steps": 2, "fid": 8.25, "n_samples": 6, "time_s": 0.5}}',
    '{"key": "{\\"batch_size\\": 3, \\"context\\": {\\"checkpoint_sha256\\": \\"c\\", \\"reference\\": '
    '\\"r\\"}, \\"ending\\": \\"denoise_final\\", \\"grid\\": \\"uniform_time\\", \\"n\\": 6, '
    '\\"n_steps\\": 4, \\"nfe_budget\\": null, \\"role\\": \\"reference\\", \\"sampler\\": '
    '\\"ancestral\\", \\"seed\\": 0}", "row": {"role": "reference", "sampler": "ancestral", '
    '"grid": "uniform_time", "ending": "denoise_final", "seed": 0, "nfe_budget": null, "family": '
    '"scoresde", "nfe": 5, "n_steps": 4, "fid": 8.5, "n_samples": 6, "time_s": 0.25}}',
]
PINNED_FEATURE_FILES = {"8b8fe0c6e83d4477ae5f9d34.npz", "f904d8296a2ccb00d08abda9.npz"}
PINNED_KW = dict(
    samplers=["ddim"], nfes=(3,), grid="uniform_lambda", reference_sampler="ancestral",
    reference_steps=4, n=6, batch_size=3, seed=0, device=torch.device("cpu"), log=lambda m: None,
    context={"checkpoint_sha256": "c", "reference": "r"},
)  # fmt: skip


def test_fid_table_reads_back_a_cell_cache_of_an_earlier_version(tmp_path, monkeypatch):
    """The cell keys are pinned strings: the same command reads every cell back, samples none."""
    cache = tmp_path / "fid_vs_steps.cells.jsonl"
    cache.write_text("\n".join(PINNED_CELLS) + "\n")

    def no_sampling(*args, **kwargs):
        raise AssertionError("a cell was sampled again")

    monkeypatch.setattr(T, "cell_features", no_sampling)
    seen = []
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    rows = T.fid_table(tiny_model(), extractor, reference, cache=cache, on_row=seen.append,
                       **PINNED_KW)  # fmt: skip
    assert seen == [] and [r["fid"] for r in rows] == [8.25, 8.5]


def test_fid_table_keeps_features_under_the_file_names_of_an_earlier_version(tmp_path):
    """The feature files' names hash their keys: pinned, so kept features are found again."""
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    T.fid_table(tiny_model(), extractor, reference, features=tmp_path / "fid_cells", **PINNED_KW)
    assert {p.name for p in (tmp_path / "fid_cells").glob("*.npz")} == PINNED_FEATURE_FILES


def test_fid_table_gives_every_cell_its_bootstrap_sd_and_fills_older_cells(tmp_path):
    """New cells carry ``fid_sd``; cells from before the column get it from their kept features
    (appended once, the same value), and cells without kept features are left as they are."""
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    cache, kept = tmp_path / "cells.jsonl", tmp_path / "fid_cells"
    rows = T.fid_table(tiny_model(), extractor, reference, cache=cache, features=kept,
                       **PINNED_KW)  # fmt: skip
    sds = [r["fid_sd"] for r in rows]
    assert len(sds) == 2 and all(sd > 0 for sd in sds)
    older = [json.loads(line) for line in cache.read_text().splitlines()]
    for entry in older:
        del entry["row"]["fid_sd"]
    cache.write_text("".join(json.dumps(e) + "\n" for e in older))
    context = PINNED_KW["context"]
    assert T.fill_fid_sd(cache, kept, context, 6, reference, log=lambda m: None) == 2
    assert [r["fid_sd"] for r in T.folder_rows(cache, context, 6)] == sds
    assert T.fill_fid_sd(cache, kept, context, 6, reference, log=lambda m: None) == 0
    assert T.fill_fid_sd(cache, tmp_path / "none", {"other": 1}, 6, reference) == 0


def test_env_file_records_the_revision_the_run_started_from(tmp_path):
    revision = git_revision()
    assert re.fullmatch(r"([0-9a-f]{40}|unknown)( \(uncommitted changes\))?", revision)
    path = write_env(tmp_path, device="cpu", seeds={"x": 1}, git_sha="0" * 40, extra={"k": 2})
    env = dict(line.split(": ", 1) for line in path.read_text().splitlines())
    assert env["git_sha"] == "0" * 40 and env["seeds"] == "x=1" and env["k"] == "2"


def test_image_path_error_measures_against_a_converged_reference():
    from benchmarks.image_path_error import measure

    rows, spread = measure(
        tiny_model(), ["ddim", "dpm_solver_pp_3m"], (4, 8, 50), grid="uniform_lambda",
        reference="dpm_solver_pp_3m", check="unipc", reference_steps=50, n=8, seed=0,
        device=torch.device("cpu"),
    )  # fmt: skip
    err = {(r["sampler"], r["nfe_budget"]): r["rms_error"] for r in rows}
    assert err[("dpm_solver_pp_3m", 50)] == 0.0  # the reference itself
    assert spread < min(err[k] for k in err if k != ("dpm_solver_pp_3m", 50))
    for key in ("ddim", "dpm_solver_pp_3m"):
        assert err[(key, 4)] > err[(key, 8)] > err[(key, 50)]  # converges to the reference
    assert all(0.0 <= r["clipped_fraction"] <= 1.0 for r in rows)


def test_flow_error_benchmark_measures_against_the_reference(monkeypatch):
    """The flow benchmark's budget rule counts the zero-SNR first step, and a short run writes
    one row per sampler, grid and budget with the measured NFE within the budget."""
    from benchmarks import flow_error

    assert flow_error.nfe_of(S.get_sampler("pf_heun"), 3) == 6  # steps from alpha = 0 itself
    assert flow_error.nfe_of(S.get_sampler("edm_heun"), 3) == 1 + 4  # limit step + 2 steps
    assert flow_error.steps_for(S.get_sampler("pf_rk4"), 5) == 1
    monkeypatch.setattr(flow_error, "SAMPLES", {"gmm2d": 8})
    rows = flow_error.run([5], seed=0, log=lambda _: None)
    keys = flow_error.deterministic_keys()
    assert {(r["grid"], r["sampler"]) for r in rows} == {
        (g, k) for g in flow_error.GRIDS for k in keys
    }
    assert all(r["nfe"] <= 5 and 0 < r["median_error"] < 2 for r in rows)
    assert "| plms |" in flow_error.summarize(rows, [5])


def test_overhead_profile_counts_the_ops_of_every_implementation():
    text = O.profile(batch=2, shape=(1, 8, 8), nfe=4, methods=["DDIM (= DPM-Solver-1)"])
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| DDIM")]
    impls = {r[1] for r in rows}
    assert {"scoresde", "diffusers", "k-diffusion"} <= impls
    for r in rows:
        assert float(r[3]) > 0 and float(r[4]) >= float(r[3]) and int(r[5]) > 0


def test_fid_table_takes_sampler_options_and_runs_an_adaptive_sampler_at_its_own_nfe(tmp_path):
    extractor = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    reference = FeatureStats.of(torch.rand(40, 32, generator=torch.Generator().manual_seed(0)))
    specs = ["restart:K=1,restart_steps=1", "adaptive_sde:rel_tol=0.2", "adaptive_sde"]
    rows = T.fid_table(tiny_model(), extractor, reference, samplers=specs, nfes=(10, 20),
                       grid="uniform_lambda", reference_sampler="ancestral", reference_steps=0,
                       n=6, batch_size=3, seed=[0, 1], device=torch.device("cpu"),
                       log=lambda m: None)  # fmt: skip
    cells = [r for r in rows if r["role"] == "cell"]
    restart = S.get_sampler("restart", K=1, restart_steps=1)
    assert {(r["sampler"], r["nfe_budget"], r["nfe"]) for r in cells} == {
        (specs[0], b, restart.nfe(steps_for_budget(restart, b - 1)) + 1) for b in (10, 20)
    }
    adaptive = [r for r in rows if r["role"] == "adaptive"]
    assert sorted((r["sampler"], r["seed"]) for r in adaptive) == [
        (s, seed) for s in sorted(specs[1:]) for seed in (0, 1)
    ]
    assert all(r["nfe_budget"] is None and r["nfe"] > 2 and math.isfinite(r["fid"])
               for r in adaptive)  # fmt: skip
    # the tighter default tolerance costs more steps than rel_tol=0.2, on the same draws
    nfe = {r["sampler"]: r["nfe"] for r in adaptive if r["seed"] == 0}
    assert nfe["adaptive_sde"] > nfe["adaptive_sde:rel_tol=0.2"]
    text = summary(rows)
    assert "Adaptive: `adaptive_sde:rel_tol=0.2` on `uniform_lambda`, seed 1" in text
    assert "| `restart:K=1,restart_steps=1` | uniform_lambda |" in text


@pytest.mark.parametrize(
    "spec, match",
    [
        ("nope", "unknown sampler 'nope' in 'nope'"),
        ("restart:K", "option 'K' must be name=value"),
        ("restart:K=-1", "K must be an int >= 0"),
    ],
)
def test_fid_table_sampler_spec_errors_name_the_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        T.sampler_of(spec)


def test_recommend_usage_of_a_row_run_with_options_builds_that_sampler():
    """A table row named ``key:option=value,...`` (``fid_vs_steps.py --samplers``) is printed
    as ``S.get_sampler(key, option=value)`` and as a JSON config for the command line."""
    code, command = usage_lines("restart:K=1,restart_steps=2", "karras", 20, 8)
    assert 'S.sample(S.get_sampler("restart", K=1, restart_steps=2), denoiser' in code
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), stds=0.5)
    scope = {"S": S, "denoiser": data.denoiser(S.VPSDE(), "eps"), "shape": (3, 2)}
    exec(code.strip(), scope)
    assert scope["x"].shape == (3, 2) and torch.isfinite(scope["x"]).all()
    config = shlex.split(command)[shlex.split(command).index("--sampler") + 1]
    assert repr(S.get_sampler(json.loads(config))) == repr(
        S.get_sampler("restart", K=1, restart_steps=2)
    )
