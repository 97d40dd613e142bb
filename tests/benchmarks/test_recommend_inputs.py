"""``scoresde recommend`` on bad or surprising input: a damaged FID table is refused with its
file, line, column and value (never a row dropped or an impossible one ranked), failed cells are
skipped with a word, options the asked-for ranking would ignore are refused, a budget above the
table's is noted, each ranking ends with how to sample its own first choice, adaptive runs are
ranked at their measured NFE, and argparse's errors are one line like every other error.
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.cli import main
from scoresde.recommend import format_fid_recommendation, latest_table, recommend_fid, usage_lines
from scoresde.recommend.fid_rows import read_fid_table
from scoresde.recommend.tables import PACKAGED
from tests.benchmarks.test_scripts import seeded_fid_table_file, table

COMMITTED = latest_table(PACKAGED, "fid_vs_steps.tsv")


def recommend_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["recommend", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edited(tmp_path, values: dict, role: str = "cell"):
    """A copy of the committed FID table whose first ``role`` row has its columns set to
    ``values``, and that row's line number."""
    lines = COMMITTED.read_text().splitlines()
    header = lines[0].split("\t")
    i = next(k for k, line in enumerate(lines) if line.startswith(f"{role}\t"))
    fields = lines[i].split("\t")
    for column, value in values.items():
        fields[header.index(column)] = value
    lines[i] = "\t".join(fields)
    path = tmp_path / "fid_vs_steps.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path, i + 1


@pytest.mark.parametrize(
    "column, value, role, message",
    [
        ("fid", "abc", "cell", "fid = 'abc'; expected a number from 0 to 1e+09"),
        ("fid", "nan", "cell", "fid = 'nan'; expected a number from 0 to 1e+09"),  # no note
        ("fid", "-5", "cell", "fid = '-5'; expected a number from 0 to 1e+09"),
        ("fid", "1e308", "cell", "fid = '1e308'; expected a number from 0 to 1e+09"),
        ("fid_sd", "-1", "cell", "fid_sd = '-1'; expected a number from 0 to 1e+09 or empty"),
        ("nfe", "x", "cell", "nfe = 'x'; expected an integer >= 1"),
        ("nfe", "9.5", "cell", "nfe = '9.5'; expected an integer >= 1"),
        ("ending", "denoise_finall", "cell", "ending = 'denoise_finall'; expected one of"),
        ("sampler", "no_such_sampler", "cell", "sampler = 'no_such_sampler' (unknown sampler)"),
        ("sampler", "ddim:eta", "cell", "option 'eta' must be name=value"),
        ("sampler", "adaptive_sde", "cell", "an adaptive sampler's rows have role 'adaptive'"),
        ("grid", "bogus_grid", "cell", "grid = 'bogus_grid'; expected one of"),
        ("role", "cel", "cell", "role = 'cel'; expected one of"),
        ("grid", "bogus_grid", "peer", "peer grid = 'bogus_grid'"),
        ("sampler", "no_such_sampler", "peer", "peer sampler = 'no_such_sampler'"),
    ],
)
def test_a_bad_value_in_the_fid_table_names_its_file_line_and_column(
    tmp_path, capsys, column, value, role, message
):
    path, line = edited(tmp_path, {column: value}, role)
    code, out, err = recommend_cli(capsys, "--nfe", 50, "--problem", "mnist_fid",
                                   "--fid-table", path)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {str(path)!r} line {line}: ") and message in err, err


def test_a_ragged_row_of_the_fid_table_is_refused(tmp_path, capsys):
    lines = COMMITTED.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 2)[0]  # the row lost its last two fields
    path = tmp_path / "fid_vs_steps.tsv"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = recommend_cli(capsys, "--nfe", 50, "--problem", "mnist_fid", "--fid-table", path)
    columns = len(lines[0].split("\t"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{str(path)!r} line 4: {columns - 2} fields; expected {columns}" in err, err


@pytest.mark.parametrize("fid", ["", "nan"])
def test_failed_cells_are_skipped_with_one_line_saying_so(tmp_path, fid):
    path, _ = edited(tmp_path, {"fid": fid, "note": "FloatingPointError: non-finite state"})
    res = recommend_fid(50, table=path)
    assert res["failed"] == 1
    assert "skipped 1 failed cell(s): no FID, see the note column" in format_fid_recommendation(res)


def test_the_committed_fid_table_parses_with_no_row_left_out():
    _, rows, failed = read_fid_table(COMMITTED)
    header, *lines = COMMITTED.read_text().splitlines()
    fid = header.split("\t").index("fid")
    assert len(rows) + failed == len(lines)
    assert failed == sum(line.split("\t")[fid] in ("", "nan") for line in lines)


def test_options_the_asked_for_ranking_would_ignore_are_refused(tmp_path, capsys):
    exact, fid = table(tmp_path), seeded_fid_table_file(tmp_path / "f")
    for argv, words in [
        (["--problem", "mnist_fid", "--table", exact], ["--table", "--fid-table"]),
        (["--problem", "p1_ddpm", "--table", exact, "--fid-table", fid], ["--fid-table"]),
        (["--problem", "p1_ddpm", "--table", exact, "--ending", "t_min"], ["--ending"]),
    ]:
        code, out, err = recommend_cli(capsys, "--nfe", 10, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert all(w in err for w in words), err


@pytest.mark.parametrize("problem", ["mnist", "MNIST_FID"])
def test_an_unknown_problem_lists_every_valid_one(tmp_path, capsys, problem):
    code, _, err = recommend_cli(capsys, "--nfe", 10, "--problem", problem,
                                 "--table", table(tmp_path))  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert all(p in err for p in ("'p1_ddpm'", "'p2_ddpm'", "'mnist_fid'", repr(problem))), err


def test_a_folder_as_fid_table_names_the_option_and_the_table_inside(tmp_path, capsys):
    fid = seeded_fid_table_file(tmp_path / "run")
    for folder in (fid.parent, tmp_path):  # the run folder itself, or a folder of runs
        code, _, err = recommend_cli(capsys, "--nfe", 10, "--fid-table", folder)
        assert code == 2 and err.count("\n") == 1
        assert f"--fid-table {str(folder)!r} is a folder" in err
        assert f"did you mean {str(fid)!r}?" in err, err


def test_a_budget_above_the_tables_is_noted_and_still_ranked(tmp_path, capsys):
    fid = seeded_fid_table_file(tmp_path / "f")
    code, out, _ = recommend_cli(capsys, "--nfe", 100000, "--problem", "mnist_fid",
                                 "--fid-table", fid)  # fmt: skip
    assert code == 0
    assert "note: the table's largest budget is 10 NFE, below the 100000 asked for" in out
    assert "  1. unipc" in out
    code, out, _ = recommend_cli(capsys, "--nfe", 10, "--problem", "mnist_fid", "--fid-table", fid)
    assert "note:" not in out


def test_each_ranking_ends_with_how_to_sample_its_own_first_choice(tmp_path, capsys):
    exact, fid = table(tmp_path), seeded_fid_table_file(tmp_path / "f")
    code, out, _ = recommend_cli(capsys, "--nfe", 10, "--table", exact, "--fid-table", fid)
    assert code == 0
    exact_part, fid_part = out.split("Best samplers at <= 10 NFE on the trained MNIST model")
    title = "to sample with the first on the exact Gaussian-mixture problems (b, grid g2):"
    assert title in exact_part and "--sampler b --grid g2 --nfe 10 --out" in exact_part
    title = "to sample with the first on the trained MNIST image model (unipc, grid karras, ending"
    assert title in fid_part and "unipc" not in exact_part
    assert fid_part.rstrip().endswith("--grid karras --nfe 9 --denoise-final --out samples.png")


def test_argument_errors_are_one_line_naming_the_argument_and_value(capsys):
    for value in ("10.5", "ten"):
        with pytest.raises(SystemExit) as exit_:
            main(["recommend", "--nfe", value])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: argument --nfe: invalid int value: '{value}'"), err


def test_no_peer_cell_of_the_ending_is_said_and_references_name_theirs(tmp_path):
    rows = seeded_fid_table_file(tmp_path / "f").read_text().splitlines()
    path = tmp_path / "fid_vs_steps.tsv"  # the peer kept only its denoise_final cells
    path.write_text("\n".join(r for r in rows if not ("peer" in r and "t_min" in r)) + "\n")
    text = format_fid_recommendation(recommend_fid(10, table=path, ending="t_min"))
    assert "best peer: none (no peer cell in the table has ending t_min)" in text
    text = format_fid_recommendation(recommend_fid(10, table=COMMITTED))
    assert all("ending denoise_final)" in ln for ln in text.splitlines() if "reference:" in ln)


def adaptive_table(folder):
    path = seeded_fid_table_file(folder)
    row = "\t".join(["adaptive", "scoresde", "adaptive_sde:rel_tol=0.5", "uniform_lambda",
                     "denoise_final", "0", "", "12", "1", "15.0", "0.5", "1000", "1", ""])  # fmt: skip
    path.write_text(path.read_text() + row + "\n")
    return path


def test_adaptive_runs_are_ranked_at_their_measured_nfe(tmp_path):
    path = adaptive_table(tmp_path / "f")
    assert [r["sampler"] for r in recommend_fid(10, table=path)["ranking"]] == ["unipc", "ddim"]
    res = recommend_fid(12, table=path)
    assert [(r["sampler"], r["adaptive"]) for r in res["ranking"]][0] == (
        "adaptive_sde:rel_tol=0.5",
        True,
    )
    assert "(12 NFE, adaptive, 1000 samples)" in format_fid_recommendation(res)


def test_the_usage_of_an_adaptive_fid_run_has_no_grid_and_no_nfe():
    code, command = usage_lines("adaptive_sde:rel_tol=0.5", "uniform_lambda", 52, 1,
                                denoise_final=True, adaptive=True)  # fmt: skip
    assert "--grid" not in command and "--nfe" not in command and "--denoise-final" in command
    data = S.GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), stds=0.5)
    scope = {"S": S, "denoiser": data.denoiser(S.VPSDE(), "eps"), "shape": (3, 2)}
    exec(code.strip(), scope)
    assert scope["x"].shape == (3, 2) and torch.isfinite(scope["x"]).all()
    assert 'S.get_sampler("adaptive_sde", rel_tol=0.5)' in code


def test_ranking_columns_are_as_wide_as_their_longest_name():
    text = format_fid_recommendation(recommend_fid(50, table=COMMITTED, top=20))
    ranked = [ln for ln in text.splitlines() if " grid=" in ln and "best peer" not in ln]
    assert any("dpm_solver_pp_2s_ancestral" in ln for ln in ranked)
    assert any("default: " in ln for ln in ranked)
    assert len({ln.index(" grid=") for ln in ranked}) == 1
    assert len({ln.index("FID=") for ln in ranked}) == 1
    assert all(math.isfinite(float(ln.split("FID=")[1].split()[0])) for ln in ranked)


def test_a_repeated_row_or_column_of_the_fid_table_is_refused_and_a_bom_is_read(tmp_path, capsys):
    lines = COMMITTED.read_text().splitlines()
    path = tmp_path / "fid_vs_steps.tsv"
    path.write_text("\n".join([*lines, lines[1]]) + "\n")  # a row twice would count as 2 seeds
    code, _, err = recommend_cli(capsys, "--nfe", 50, "--problem", "mnist_fid", "--fid-table", path)
    assert code == 2 and err.count("\n") == 1, err
    assert f"line {len(lines) + 1} repeats the cell of line 2" in err
    header = lines[0].split("\t")
    path.write_text(
        "\n".join(
            "\t".join([*line.split("\t"), "9"]) if i else "\t".join([*header, "fid"])
            for i, line in enumerate(lines)
        )
        + "\n"
    )
    code, _, err = recommend_cli(capsys, "--nfe", 50, "--problem", "mnist_fid", "--fid-table", path)
    assert code == 2 and "header repeats the column(s) ['fid']" in err, err
    path.write_text("\ufeff" + COMMITTED.read_text())  # saved by a spreadsheet
    code, out, _ = recommend_cli(capsys, "--nfe", 50, "--problem", "mnist_fid", "--fid-table", path)
    assert code == 0 and "1. " in out
