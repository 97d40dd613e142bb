"""The steps-vs-FID figure of a ``fid_vs_steps.tsv`` (see :mod:`benchmarks.fid_vs_steps`).

Left: the best cell per NFE budget of each family, each point named with its grid, and the
ODE and SDE limits. Right: every cell at its measured NFE. Drawn by ``python -m
benchmarks.plot <folder>``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import finite, nfe_axis  # noqa: E402
from scoresde.recommend.fid_rows import FID_ENDINGS, ROLES  # noqa: E402

REQUIRED = ("role", "sampler", "grid", "nfe", "fid")  # older tables lack ending/family/seed/fid_sd
INTEGER = ("nfe", "nfe_budget", "n_steps", "seed", "n_samples")
NUMBER = ("fid", "fid_sd", "time_s")


def check_fid_rows(rows: list[dict], path: Path) -> None:
    """Raise ``ValueError`` naming the file, row and column of the first value a FID table
    cannot hold, so a damaged table never draws a figure from part of its rows."""
    if not rows:
        raise ValueError(f"{path} has no rows")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; expected {list(REQUIRED)}")
    for i, r in enumerate(rows, start=2):  # line 1 is the header
        if None in r:  # csv.DictReader's key for the surplus fields of a ragged row
            raise ValueError(f"{path} line {i} has more fields than the header")
        if (r.get("ending") or "t_min") not in FID_ENDINGS:
            raise ValueError(f"{path} line {i}: column 'ending' is {r['ending']!r}; expected one "
                             f"of {FID_ENDINGS}")  # fmt: skip
        if r["role"] not in ROLES:
            raise ValueError(f"{path} line {i}: column 'role' is {r['role']!r}; expected one of "
                             f"{list(ROLES)}")  # fmt: skip
        for col in INTEGER + NUMBER:
            v = r.get(col)
            want = int if col in INTEGER else (int, float)
            # NaN is a failed cell's FID; anything else must be a count or a score, >= 0
            if v is not None and not (isinstance(v, want) and (v != v or 0 <= v < 1e9)):
                kind = "an integer" if col in INTEGER else "a number"
                raise ValueError(f"{path} line {i}: column {col!r} is {v!r}; expected {kind} "
                                 "from 0 to 1e9, or empty")  # fmt: skip


def _fid_points(
    rows: list[dict], x: str = "nfe"
) -> dict[tuple, dict[int, tuple[float, float, float]]]:
    """``{(peer, sampler, grid, ending): {x: (fid, below, above)}}`` with ``x`` the measured
    ``nfe`` or the ``nfe_budget``: the mean over seeds with bars to the lowest and highest seed,
    or one seed's FID with its bootstrap ``fid_sd``."""
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in rows:
        if r.get("role") in ("cell", "peer") and finite(r.get("fid")) and isinstance(r.get(x), int):
            key = (r.get("role") == "peer", r["sampler"], r.get("grid", ""),
                   r.get("ending") or "t_min")  # fmt: skip
            groups.setdefault(key, {}).setdefault(r[x], []).append(r)
    out = {}
    for key, curve in groups.items():
        out[key] = {}
        for nfe, rs in sorted(curve.items()):
            fids = [r["fid"] for r in rs]
            mean = sum(fids) / len(fids)
            sd = rs[0].get("fid_sd") if len(rs) == 1 and finite(rs[0].get("fid_sd")) else None
            low, high = (sd, sd) if sd is not None else (mean - min(fids), max(fids) - mean)
            out[key][nfe] = (mean, low, high)
    return out


def _stochastic(sampler: str) -> bool | None:
    """Whether a registry sampler (with options) is stochastic; ``None`` for other names."""
    from benchmarks.fid_table import sampler_of

    try:
        return sampler_of(sampler).stochastic
    except ValueError:
        return None


def _fid_family(peer: bool, sampler: str, family: str) -> str:
    """The curve a cell belongs to in the best-per-budget panel."""
    if peer:
        return family
    kind = _stochastic(sampler)
    return "scoresde" if kind is None else f"scoresde {'stochastic' if kind else 'ODE'}"


def _short_grid(grid: str) -> str:
    """``default: Karras(rho=7.0)`` -> ``default Karras``, ``karras(rho=7)`` -> ``karras``."""
    return grid.replace("default: ", "default ").split("(")[0]


FAMILY_STYLE = {"scoresde ODE": ("-", "C0", "o"), "scoresde stochastic": ("-", "C3", "D"),
                "scoresde": ("-", "C0", "o"), "diffusers": ("--", "C1", "s"),
                "k-diffusion": ("--", "C2", "^")}  # fmt: skip
LINE = {(False, "denoise_final"): "-", (False, "t_min"): ":", (True, "denoise_final"): "--",
        (True, "t_min"): "-."}  # fmt: skip


def _draw_best(ax, rows: list[dict]) -> None:
    """Best cell per budget and family; the families' labels sit at their own heights so that
    ties at one budget stay readable."""
    family_of = {r["sampler"]: r.get("family") or "scoresde" for r in rows}
    best: dict[str, dict[int, tuple]] = {}
    for (peer, key, grid, ending), curve in _fid_points(rows, "nfe_budget").items():
        if ending != "denoise_final":
            continue
        fam = _fid_family(peer, key, family_of.get(key, "scoresde"))
        for nfe, point in curve.items():
            if nfe not in best.setdefault(fam, {}) or point[0] < best[fam][nfe][0][0]:
                best[fam][nfe] = (point, f"{key} ({_short_grid(grid)})")
    for k, (fam, curve) in enumerate(sorted(best.items())):
        nfes = sorted(curve)
        ls, color, marker = FAMILY_STYLE.get(fam, ("--", "C4", "v"))
        ax.errorbar(
            nfes, [curve[n][0][0] for n in nfes],
            yerr=[[curve[n][0][1] for n in nfes], [curve[n][0][2] for n in nfes]],
            ls=ls, color=color, marker=marker, ms=4, capsize=2, label=f"best of {fam}",
        )  # fmt: skip
        for n in nfes:
            ax.annotate(curve[n][1], (n, curve[n][0][0]), fontsize=6.5, color=color,
                        xytext=(5, 7 - 9 * k), textcoords="offset points",
                        bbox={"boxstyle": "square,pad=0.05", "fc": "w", "ec": "none", "alpha": 0.8})  # fmt: skip
    budgets = [n for curve in best.values() for n in curve]
    if budgets:  # room on the right for the last budget's names
        ax.set_xlim(min(budgets) / 1.3, max(budgets) * 2.4)


def _draw_cells(ax, rows: list[dict]) -> None:
    """Every cell at its measured NFE; colour and marker together tell the series apart."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>P"
    for i, ((peer, key, grid, ending), curve) in enumerate(_fid_points(rows).items()):
        nfes = sorted(curve)
        label = f"{key} ({grid})" + ("" if ending == "denoise_final" else ", ends at t_min")
        ax.errorbar(
            nfes, [curve[n][0] for n in nfes],
            yerr=[[curve[n][1] for n in nfes], [curve[n][2] for n in nfes]],
            marker=markers[(i // len(colors)) % len(markers)], ms=4, capsize=2, label=label,
            ls=LINE[(peer, ending)], color=colors[i % len(colors)],
        )  # fmt: skip
    for r in rows:
        if r.get("role") == "adaptive" and finite(r.get("fid")) and isinstance(r.get("nfe"), int):
            sd = r.get("fid_sd") if finite(r.get("fid_sd")) else None
            ax.errorbar([r["nfe"]], [r["fid"]], yerr=sd, marker="*", ms=9, color="k",
                        ls="none", label=f"{r['sampler']} ({r['grid']}), adaptive")  # fmt: skip


def _draw_limits(ax, rows: list[dict]) -> None:
    """The long reference runs as horizontal lines: the ODE limit and the SDE limit."""
    for r in rows:
        if r.get("role") != "reference" or not finite(r.get("fid")):
            continue
        kind = _stochastic(r["sampler"])
        name = {True: "SDE limit", False: "ODE limit", None: "reference"}[kind]
        steps = f"{r['n_steps']} steps, " if isinstance(r.get("n_steps"), int) else ""
        ax.axhline(r["fid"], color={True: "C3", False: "C0", None: "k"}[kind], lw=1.1, ls=":",
                   label=f"{name}: {r['sampler']}, {steps}{r['nfe']} NFE")  # fmt: skip


def plot_fid(rows: list[dict], path: Path) -> Path:
    """FID vs NFE. Left: the best cell within each NFE budget of each family (scoresde ODE and
    stochastic samplers solid, each peer library dashed), ending with x0, each point named with
    its grid. Right: every sampler or peer, grid and ending at its measured NFE: scoresde
    solid, peers dashed, ending at ``t_min`` dotted (dash-dot for a peer), adaptive runs as
    stars. Bars: ± the bootstrap sd of a one-seed cell (``fid_sd``), else the lowest to the
    highest seed. The long reference runs (the ODE and SDE limits) are horizontal lines."""
    n_series = len(_fid_points(rows))
    many = n_series > 10
    fig, (best_ax, ax) = plt.subplots(
        1, 2, figsize=(20, 7.5) if many else (13, 5), width_ratios=(1.3, 1) if many else None
    )
    _draw_best(best_ax, rows)
    _draw_cells(ax, rows)
    for a in (best_ax, ax):
        _draw_limits(a, rows)
        nfe_axis(a)
        a.set_yscale("log")
        # plain FID labels (20, 50, 100), not 2x10^1
        a.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        a.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))  # fmt: skip
        a.set_ylabel("FID (1000 samples)")
        a.grid(True, which="both", alpha=0.3)
    best_ax.set_xlabel("NFE budget")
    ax.set_xlabel("NFE spent (a two-call step spends 9, 19, 49 of a budget of 10, 20, 50)")
    best_ax.set_title(
        "best cell per NFE budget and family, ending with x0 (bars: ±fid_sd or seed range)",
        fontsize=8,
    )
    best_ax.legend(fontsize=7)
    ax.set_title("every cell: scoresde solid, peers dashed (their own code); dotted: ends at "
                 "t_min; stars: adaptive", fontsize=8)  # fmt: skip
    if many:
        ax.legend(fontsize=6.5, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
