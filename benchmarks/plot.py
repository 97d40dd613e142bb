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


def plot_exact_error(
    rows: list[dict], path: Path, *, envelope: bool = False, metric: str = "median_error"
) -> Path:
    """One panel per problem. Each sampler's curve is its best grid at each NFE; with
    ``envelope=True`` one curve per family (best of all its samplers with NFE <= n)."""
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = _grid_of_axes(
        len(problems),
        width=5.2 if envelope else 8.5,
        height=4.2 if envelope else 5.5,
        max_cols=3 if envelope else 2,
    )
    for ax, p in zip(axes, problems, strict=False):
        prow = [r for r in rows if r["problem"] == p]
        by = defaultdict(list)
        for r in prow:
            by[r["family"] if envelope else (r["family"], r["sampler"])].append(r)
        for key, rs in by.items():
            family = key if envelope else key[0]
            pts = _envelope(rs, metric) if envelope else _best_curve(rs, metric)
            if not pts:
                continue
            label = (
                family
                if envelope
                else f"{key[1]}" + ("" if family == "scoresde" else f" [{family}]")
            )
            ax.plot(
                *zip(*pts, strict=True),
                STYLE.get(family, "-"),
                marker=MARK.get(family, "o"),
                ms=3,
                lw=2 if envelope else 1,
                label=label,
                **({"color": COLOR[family]} if envelope and family in COLOR else {}),
            )
        _nfe_axis(ax)
        ax.set_yscale("log")
        ax.set_title(p)
        ax.set_xlabel("NFE")
        ax.set_ylabel("median per-sample RMS error")
        ax.grid(True, which="both", alpha=0.3)
        if envelope:
            ax.legend(fontsize=8)
        else:  # dozens of curves: the legend goes beside the panel
            ax.legend(fontsize=5, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        "median error vs the DOP853 reference; solid scoresde, dashed diffusers, dotted k-diffus.",
        fontsize=10,
    )
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


def plot_fid(rows: list[dict], path: Path) -> Path:
    """FID vs NFE per sampler (best grid), with the 1000-step reference as a line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ref = [r for r in rows if r.get("role") == "reference"]
    for key in dict.fromkeys(r["sampler"] for r in rows if r.get("role") != "reference"):
        pts = _best_curve(
            [r for r in rows if r["sampler"] == key and r.get("role") != "reference"], "fid"
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), "-o", ms=3, label=key)
    for r in ref:
        ax.axhline(r["fid"], color="k", lw=0.8, ls="--", label=f"{r['sampler']} {r['nfe']} NFE")
    _nfe_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("FID")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
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
        from benchmarks.fid_vs_steps import summary

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
