"""Tables -> PNGs: log-log NFE vs error (exact problems), NFE vs sliced W2, NFE vs FID.

python -m benchmarks.plot benchmarks/results/<folder>    # redraw every PNG of a folder
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import finite, nfe_axis, read_tsv  # noqa: E402
from benchmarks.fid_plot import check_fid_rows, plot_fid  # noqa: E402
from scoresde.cli import OneLineErrors  # noqa: E402

STYLE = {"scoresde": "-", "diffusers": "--", "k-diffusion": ":"}
MARK = {"scoresde": "o", "diffusers": "s", "k-diffusion": "^"}
COLOR = {"scoresde": "C0", "diffusers": "C1", "k-diffusion": "C2"}


def _best_curve(rows, metric):
    """``{nfe: best metric}`` over grids for one sampler (measured NFE)."""
    best: dict[int, float] = {}
    for r in rows:
        if finite(r.get(metric)) and isinstance(r.get("nfe"), int):
            best[r["nfe"]] = min(best.get(r["nfe"], math.inf), r[metric])
    return sorted(best.items())


def _envelope(rows, metric):
    """Best over samplers and grids among runs with NFE <= n, at each measured n."""
    pts = sorted(
        (r["nfe"], r[metric])
        for r in rows
        if finite(r.get(metric)) and isinstance(r.get("nfe"), int)
    )
    out, best = [], math.inf
    for n, v in pts:
        best = min(best, v)
        if out and out[-1][0] == n:
            out[-1] = (n, best)
        else:
            out.append((n, best))
    return out


def _grid_of_axes(n, *, width=5.2, height=4.2, max_cols=3):
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


# the panels of ``exact_error.png``: one per method family, ours and the peers' together, so no
# panel carries more than about ten curves (a sampler not listed lands in "other")
PANELS: dict[str, set[str]] = {
    "first order": {"ddim", "dpm_solver_1", "dpm_solver_pp_1", "deis_1", "pf_euler", "DDIM",
                    "Euler", "euler"},
    "DPM-Solver multistep": {"dpm_solver_2m", "dpm_solver_3m", "dpm_solver_pp_2m",
                             "dpm_solver_pp_3m", "DPMSolverMultistep(2M)",
                             "DPMSolverMultistep++(2M)", "DPMSolverMultistep++(3M)", "dpmpp_2m"},
    "singlestep and adaptive": {"dpm_solver_2s", "dpm_solver_3s", "dpm_solver_pp_2s",
                                "dpm_solver_adaptive", "DPMSolverSinglestep++(2S)",
                                "DPMSolverSinglestep++(3S)", "dpm_2", "dpm_fast", "dpm_adaptive"},
    "DEIS, UniPC, PNDM": {"deis_2", "deis_3", "unipc", "pndm", "plms", "DEIS(2)", "DEIS(3)",
                          "UniPC(bh1,3)", "UniPC(bh2,2)", "UniPC(bh2,3)", "PNDM(PLMS)"},
    "Runge-Kutta and backends": {"pf_heun", "pf_rk4", "edm_heun", "scipy", "torchdiffeq",
                                 "torchdiffeq_fixed", "Heun", "LMS", "heun", "lms"},
}  # fmt: skip


def panel_of(sampler: str) -> str:
    return next((name for name, keys in PANELS.items() if sampler in keys), "other")


def plot_exact_error(
    rows: list[dict], path: Path, *, envelope: bool = False, metric: str = "median_error"
) -> Path:
    """With ``envelope=True`` one panel per problem and one curve per implementation (the best
    of all its samplers with NFE <= n). Otherwise a row of panels per problem, one panel per
    method family (``PANELS``), each sampler's curve its best grid at each NFE: scoresde solid,
    diffusers dashed, k-diffusion dotted; the legend of each column is under it."""
    if envelope:
        return _plot_envelopes(rows, path, metric)
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    panels = [p for p in [*PANELS, "other"] if any(panel_of(r["sampler"]) == p for r in rows)]
    fig, axes = plt.subplots(
        len(problems) + 1, len(panels), figsize=(3.9 * len(panels), 2.9 * len(problems) + 2.4),
        squeeze=False, gridspec_kw={"height_ratios": [1] * len(problems) + [0.9]},
    )  # fmt: skip
    for col, panel in enumerate(panels):
        keys = list(dict.fromkeys(
            (r["family"], r["sampler"]) for r in rows if panel_of(r["sampler"]) == panel
        ))  # fmt: skip
        curves = {}
        for problem in problems:
            for key in keys:
                rs = [
                    r
                    for r in rows
                    if r["problem"] == problem and (r["family"], r["sampler"]) == key
                ]
                curves[(problem, key)] = _best_curve(rs, metric)
        # samplers whose curves coincide on every problem (e.g. ddim = dpm_solver_1) are drawn
        # once, under one joint name
        drawn: dict[tuple, list[tuple]] = {}
        for key in keys:
            same = [k for k in drawn if all(curves[(p, k)] == curves[(p, key)] for p in problems)]
            if same:
                drawn[same[0]].append(key)
            else:
                drawn[key] = []
        colors = {k: f"C{j % 10}" for j, k in enumerate(drawn)}
        handles = {}
        for row, problem in enumerate(problems):
            ax = axes[row, col]
            for key, twins in drawn.items():
                pts = curves[(problem, key)]
                if not pts:
                    continue
                family = key[0]
                label = " = ".join(s if f == "scoresde" else f"{s} [{f}]" for f, s in [key, *twins])
                (line,) = ax.plot(*zip(*pts, strict=True), STYLE.get(family, "-"),
                                  marker=MARK.get(family, "o"), ms=2.5, lw=1.2,
                                  color=colors[key], label=label)  # fmt: skip
                handles.setdefault(label, line)
            nfe_axis(ax)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(panel, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{problem}\nmedian error", fontsize=8)
            if row == len(problems) - 1:
                ax.set_xlabel("NFE", fontsize=8)
        legend_ax = axes[-1, col]
        legend_ax.axis("off")
        legend_ax.legend(handles.values(), handles.keys(), loc="upper center", fontsize=7,
                         frameon=False)  # fmt: skip
    fig.suptitle(
        "median per-sample RMS error vs the DOP853 reference, best grid per sampler and NFE; "
        "solid scoresde, dashed diffusers, dotted k-diffusion",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_envelopes(rows: list[dict], path: Path, metric: str) -> Path:
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = _grid_of_axes(len(problems), width=5.2, height=4.2, max_cols=3)
    for ax, p in zip(axes, problems, strict=False):
        by = defaultdict(list)
        for r in rows:
            if r["problem"] == p:
                by[r["family"]].append(r)
        for family, rs in by.items():
            pts = _envelope(rs, metric)
            if not pts:
                continue
            ax.plot(*zip(*pts, strict=True), STYLE.get(family, "-"),
                    marker=MARK.get(family, "o"), ms=3, lw=2, label=family,
                    **({"color": COLOR[family]} if family in COLOR else {}))  # fmt: skip
        nfe_axis(ax)
        ax.set_yscale("log")
        ax.set_title(p)
        ax.set_xlabel("NFE")
        ax.set_ylabel("median per-sample RMS error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("best of each implementation at each NFE budget", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sw(rows: list[dict], path: Path) -> Path:
    """Sliced W2 of stochastic samplers to exact samples (best grid), with the floor."""
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = _grid_of_axes(len(problems))
    for ax, p in zip(axes, problems, strict=False):
        prow = [r for r in rows if r["problem"] == p]
        for key in dict.fromkeys(r["sampler"] for r in prow):
            pts = _best_curve([r for r in prow if r["sampler"] == key], "sw2")
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", ms=3, label=key)
        ax.axhline(prow[0]["sw2_floor"], color="k", lw=0.8, ls="--", label="floor (exact vs exact)")
        nfe_axis(ax)
        ax.set_yscale("log")
        ax.set_title(p)
        ax.set_xlabel("NFE")
        ax.set_ylabel("sliced W2 to exact samples")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def redraw(folder: Path) -> list[Path]:
    """Redraw every PNG whose table is in ``folder`` (and the FID table's markdown summary).
    Raises ``ValueError`` naming the file and line of a value the FID table cannot hold."""
    out = []
    if (folder / "exact_error.tsv").exists():
        rows = read_tsv(folder / "exact_error.tsv")
        out += [
            plot_exact_error(rows, folder / "exact_error.png"),
            plot_exact_error(rows, folder / "exact_error_best.png", envelope=True),
        ]
    if (folder / "exact_error_sw.tsv").exists():
        out.append(plot_sw(read_tsv(folder / "exact_error_sw.tsv"), folder / "exact_error_sw.png"))
    if (folder / "fid_vs_steps.tsv").exists():
        from benchmarks.fid_summary import summary

        rows = read_tsv(folder / "fid_vs_steps.tsv")
        check_fid_rows(rows, folder / "fid_vs_steps.tsv")
        out.append(plot_fid(rows, folder / "fid_vs_steps.png"))
        (folder / "fid_vs_steps.md").write_text(summary(rows) + "\n")
        out.append(folder / "fid_vs_steps.md")
    return out


def main(argv=None) -> int:
    parser = OneLineErrors(
        prog="python -m benchmarks.plot", description="redraw a result folder's PNGs"
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"folder {str(args.folder)!r} is not a directory; expected a result folder")
    try:
        written = redraw(args.folder)
    except (OSError, ValueError) as e:  # a damaged or unreadable table
        parser.error(str(e))
    if not written:
        parser.error(f"folder {str(args.folder)!r} holds no table to draw; expected one of "
                     "exact_error.tsv, exact_error_sw.tsv, fid_vs_steps.tsv")  # fmt: skip
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
