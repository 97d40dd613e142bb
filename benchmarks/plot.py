"""Tables -> PNGs: log-log NFE vs error (exact problems), NFE vs sliced W2, NFE vs FID.

python -m benchmarks.plot benchmarks/results/<folder>    # redraw every PNG of a folder
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import read_tsv  # noqa: E402

STYLE = {"scoresde": "-", "diffusers": "--", "k-diffusion": ":"}
MARK = {"scoresde": "o", "diffusers": "s", "k-diffusion": "^"}
COLOR = {"scoresde": "C0", "diffusers": "C1", "k-diffusion": "C2"}
NFE_TICKS = [5, 10, 20, 50, 100, 200, 500, 1000]


def _nfe_axis(ax):
    """Log x axis with plain NFE labels at the usual budgets (no 4x10^0 minor labels)."""
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [t for t in NFE_TICKS if lo <= t <= hi]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _best_curve(rows, metric):
    """``{nfe: best metric}`` over grids for one sampler (measured NFE)."""
    best: dict[int, float] = {}
    for r in rows:
        if _finite(r.get(metric)) and isinstance(r.get("nfe"), int):
            best[r["nfe"]] = min(best.get(r["nfe"], math.inf), r[metric])
    return sorted(best.items())


def _envelope(rows, metric):
    """Best over samplers and grids among runs with NFE <= n, at each measured n."""
    pts = sorted(
        (r["nfe"], r[metric])
        for r in rows
        if _finite(r.get(metric)) and isinstance(r.get("nfe"), int)
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
            _nfe_axis(ax)
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
        _nfe_axis(ax)
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
        _nfe_axis(ax)
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


def _fid_points(
    rows: list[dict], x: str = "nfe"
) -> dict[tuple, dict[int, tuple[float, float, float]]]:
    """``{(peer, sampler, grid, ending): {x: (fid, below, above)}}`` with ``x`` the measured
    ``nfe`` or the ``nfe_budget``: the mean over seeds with bars to the lowest and highest seed,
    or one seed's FID with its bootstrap ``fid_sd``."""
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in rows:
        if (
            r.get("role") in ("cell", "peer")
            and _finite(r.get("fid"))
            and isinstance(r.get(x), int)
        ):
            key = (r.get("role") == "peer", r["sampler"], r.get("grid", ""),
                   r.get("ending") or "t_min")  # fmt: skip
            groups.setdefault(key, {}).setdefault(r[x], []).append(r)
    out = {}
    for key, curve in groups.items():
        out[key] = {}
        for nfe, rs in sorted(curve.items()):
            fids = [r["fid"] for r in rs]
            mean = sum(fids) / len(fids)
            sd = rs[0].get("fid_sd") if len(rs) == 1 and _finite(rs[0].get("fid_sd")) else None
            low, high = (sd, sd) if sd is not None else (mean - min(fids), max(fids) - mean)
            out[key][nfe] = (mean, low, high)
    return out


def _fid_family(peer: bool, sampler: str, family: str) -> str:
    """The curve a cell belongs to in the best-per-budget panel."""
    if peer:
        return family
    from benchmarks.fid_table import sampler_of

    try:
        return "scoresde stochastic" if sampler_of(sampler).stochastic else "scoresde ODE"
    except ValueError:
        return "scoresde"


def plot_fid(rows: list[dict], path: Path) -> Path:
    """FID vs NFE. Left: the best cell within each NFE budget of each family (scoresde ODE and
    stochastic samplers solid, each peer library dashed), ending with x0, each point named.
    Right: every sampler or peer, grid and ending at its measured NFE: scoresde solid, peers
    dashed, ending at ``t_min`` dotted (dash-dot for a peer). Bars: ± the bootstrap sd of a
    one-seed cell (``fid_sd``), else the lowest to the highest seed. The reference runs are
    horizontal lines."""
    points = _fid_points(rows)
    family_of = {r["sampler"]: r.get("family") or "scoresde" for r in rows}
    grids: dict[str, set] = {}
    for _, key, grid, _ in points:
        grids.setdefault(key, set()).add(grid)
    style = {(False, "denoise_final"): "-", (False, "t_min"): ":", (True, "denoise_final"): "--",
             (True, "t_min"): "-."}  # fmt: skip
    many = len(points) > 10
    colors = plt.cm.tab20.colors if many else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (best_ax, ax) = plt.subplots(1, 2, figsize=(17, 6.5) if many else (13, 5))
    markers = "os^vDPX*" if many else "o"
    for i, ((peer, key, grid, ending), curve) in enumerate(points.items()):
        nfes = sorted(curve)
        label = f"{key} on {grid}" if len(grids[key]) > 1 else key
        label += "" if ending == "denoise_final" else " (ends at t_min)"
        ax.errorbar(
            nfes, [curve[n][0] for n in nfes],
            yerr=[[curve[n][1] for n in nfes], [curve[n][2] for n in nfes]],
            marker="s" if peer else markers[i % len(markers)], ms=4 if many else 3, capsize=2,
            label=label, ls=style[(peer, ending)], color=colors[i % len(colors)],
        )  # fmt: skip

    best: dict[str, dict[int, tuple]] = {}
    for (peer, key, _grid, ending), curve in _fid_points(rows, "nfe_budget").items():
        if ending != "denoise_final":
            continue
        fam = _fid_family(peer, key, family_of.get(key, "scoresde"))
        for nfe, point in curve.items():
            if nfe not in best.setdefault(fam, {}) or point[0] < best[fam][nfe][0][0]:
                best[fam][nfe] = (point, key)
    fam_style = {"scoresde ODE": ("-", "C0", "o"), "scoresde stochastic": ("-", "C3", "D"),
                 "scoresde": ("-", "C0", "o"), "diffusers": ("--", "C1", "s"),
                 "k-diffusion": ("--", "C2", "^")}  # fmt: skip
    for fam, curve in sorted(best.items()):
        nfes = sorted(curve)
        ls, color, marker = fam_style.get(fam, ("--", "C4", "v"))
        best_ax.errorbar(
            nfes, [curve[n][0][0] for n in nfes],
            yerr=[[curve[n][0][1] for n in nfes], [curve[n][0][2] for n in nfes]],
            ls=ls, color=color, marker=marker, ms=4, capsize=2, label=f"best of {fam}",
        )  # fmt: skip
        for n in nfes:
            best_ax.annotate(curve[n][1], (n, curve[n][0][0]), fontsize=6, color=color,
                             xytext=(4, 3), textcoords="offset points")  # fmt: skip

    refs = [r for r in rows if r.get("role") == "reference" and _finite(r.get("fid"))]
    for a in (best_ax, ax):
        for j, r in enumerate(refs):  # black, then greys: several references stay apart
            a.axhline(r["fid"], color=str(0.6 * j / max(len(refs) - 1, 1)), lw=0.9, ls=":",
                      label=f"reference: {r['sampler']} {r['nfe']} NFE")  # fmt: skip
        _nfe_axis(a)
        a.set_yscale("log")
        # plain FID labels (20, 50, 100), not 2x10^1
        a.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        a.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))  # fmt: skip
        a.set_xlabel("NFE budget" if a is best_ax else "NFE")
        a.set_ylabel("FID (1000 samples)")
        a.grid(True, which="both", alpha=0.3)
    best_ax.set_title(
        "best cell per NFE budget and family, ending with x0 (bars: ±fid_sd or seed range)",
        fontsize=8,
    )
    best_ax.legend(fontsize=7)
    ax.set_title(
        "every cell: scoresde solid, peers dashed (their own code); dotted: ends at t_min",
        fontsize=8,
    )
    if many:
        ax.legend(fontsize=6.5, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def redraw(folder: Path) -> list[Path]:
    """Redraw every PNG whose table is in ``folder`` (and the FID table's markdown summary)."""
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
        out.append(plot_fid(rows, folder / "fid_vs_steps.png"))
        (folder / "fid_vs_steps.md").write_text(summary(rows) + "\n")
        out.append(folder / "fid_vs_steps.md")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plot", description="redraw a result folder's PNGs"
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    for p in redraw(args.folder):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
