"""The steps-vs-FID figure: what it draws (limits named, adaptive runs, grids on the points) and
how ``python -m benchmarks.plot`` refuses a folder or table it cannot draw."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from benchmarks import fid_plot
from benchmarks.common import read_tsv, write_tsv
from benchmarks.plot import main

COLUMNS = ["role", "family", "sampler", "grid", "ending", "seed", "nfe_budget", "nfe", "n_steps",
           "fid", "fid_sd", "n_samples", "time_s", "note"]  # fmt: skip


def _rows():
    cell = {"role": "cell", "family": "scoresde", "grid": "uniform_lambda",
            "ending": "denoise_final", "seed": 0, "n_samples": 1000}  # fmt: skip
    rows = [
        {**cell, "sampler": s, "nfe_budget": n, "nfe": n, "n_steps": n - 1, "fid": f / n,
         "fid_sd": 0.5}
        for s, f in (("unipc", 300.0), ("sde_dpm_solver_pp_2m", 200.0)) for n in (10, 20)
    ]  # fmt: skip
    rows.append({**cell, "role": "peer", "family": "k-diffusion", "grid": "karras(rho=7)",
                 "sampler": "k-diffusion:heun", "nfe_budget": 10, "nfe": 9, "fid": 40.0})  # fmt: skip
    rows.append({**cell, "role": "adaptive", "sampler": "adaptive_sde", "nfe": 144, "n_steps": 1,
                 "fid": 13.0, "fid_sd": 0.4})  # fmt: skip
    for s, f in (("unipc", 25.0), ("sde_dpm_solver_pp_2m", 12.0)):
        rows.append({**cell, "role": "reference", "grid": "uniform_time", "sampler": s,
                     "nfe": 201, "n_steps": 200, "fid": f})  # fmt: skip
    return rows


def test_the_figure_names_the_limits_the_adaptive_runs_and_each_best_points_grid(
    tmp_path, monkeypatch
):
    saved = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    fid_plot.plot_fid(_rows(), tmp_path / "f.png")
    best_ax, ax = saved[0].axes
    labels = ax.get_legend_handles_labels()[1]
    assert "ODE limit: unipc, 200 steps, 201 NFE" in labels
    assert "SDE limit: sde_dpm_solver_pp_2m, 200 steps, 201 NFE" in labels
    assert "adaptive_sde (uniform_lambda), adaptive" in labels
    assert "k-diffusion:heun (karras(rho=7))" in labels
    names = {t.get_text() for t in best_ax.texts}
    assert {"unipc (uniform_lambda)", "sde_dpm_solver_pp_2m (uniform_lambda)"} <= names
    assert "k-diffusion:heun (karras)" in names
    families = best_ax.get_legend_handles_labels()[1]
    assert {"best of scoresde ODE", "best of scoresde stochastic", "best of k-diffusion"} <= set(
        families
    )


def test_plot_redraws_a_folder_and_refuses_what_it_cannot_draw(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    for argv, expected in (
        ([str(tmp_path / "missing")], "is not a directory"),
        ([str(folder)], "holds no table to draw"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and expected in capsys.readouterr().err
    write_tsv(folder / "fid_vs_steps.tsv", _rows(), COLUMNS)
    assert main([str(folder)]) == 0
    assert (folder / "fid_vs_steps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "line, expected",
    [
        ("cell\tscoresde\tunipc\tg\tdenoise_final\t0\t10\t10\t9\tabc\t\t1000\t1\t",
         "line 3: column 'fid' is 'abc'; expected a number"),
        ("cell\tscoresde\tunipc\tg\tdenoise_final\t0\tten\t10\t9\t30\t\t1000\t1\t",
         "line 3: column 'nfe_budget' is 'ten'; expected an integer"),
        ("cell\tscoresde\tunipc\tg\tdenoise_final\t0\t10\t10\t9\t30\t\t1000\t1\t\textra",
         "line 3 has more fields than the header"),
        ("celll\tscoresde\tunipc\tg\tdenoise_final\t0\t10\t10\t9\t30\t\t1000\t1\t",
         "line 3: column 'role' is 'celll'"),
        ("cell\tscoresde\tunipc\tg\ttmin\t0\t10\t10\t9\t30\t\t1000\t1\t",
         "line 3: column 'ending' is 'tmin'"),
        ("cell\tscoresde\tunipc\tg\tt_min\t0\t10\t10\t9\t-3\t\t1000\t1\t",
         "line 3: column 'fid' is -3; expected a number from 0 to 1e9, or empty"),
        ("cell\tscoresde\tunipc\tg\tt_min\t0\t10\t10\t9\t1e308\t\t1000\t1\t",
         "line 3: column 'fid' is 1e+308"),
    ],
)  # fmt: skip
def test_a_damaged_fid_table_is_named_by_line_and_column_and_nothing_is_drawn(
    tmp_path, capsys, line, expected
):
    folder = tmp_path / "run"
    folder.mkdir()
    table = write_tsv(folder / "fid_vs_steps.tsv", _rows()[:1], COLUMNS)
    table.write_text(table.read_text() + line + "\n")
    with pytest.raises(SystemExit) as e:
        main([str(folder)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err and str(table) in err and err.count("\n") == 1
    assert not (folder / "fid_vs_steps.png").exists()


def test_a_table_without_a_fid_column_is_refused(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [{"role": "cell", "sampler": "x"}], ["role", "sampler"])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['grid', 'nfe', 'fid'\]"):
        fid_plot.check_fid_rows(read_tsv(path), path)
