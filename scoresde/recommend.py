"""``python -m scoresde recommend --nfe N [--problem P]``: the best samplers at an NFE budget,
read from the latest committed benchmark table (``benchmarks/results/*/exact_error.tsv``).

The table holds, for every sampler, time grid and NFE budget, the median per-sample error against
the exact PF-ODE solution on Gaussian-mixture problems (``benchmarks/exact_error.py``). For a
budget ``N`` each (sampler, grid) pair is represented by its best run with measured NFE <= N.
With ``--problem`` the pairs are ranked by their error on that problem; without it, by the
geometric mean over problems of their error divided by the best error any scoresde pair reached
on that problem (1.0 = best everywhere). The best diffusers / k-diffusion run on the same budget
is printed next to the ranking, so a peer that wins is shown as winning.

``--problem mnist_fid`` ranks instead by the FID of a trained MNIST model
(``benchmarks/fid_vs_steps.py``, ``fid_vs_steps.tsv``); without ``--problem`` that ranking is
printed after the exact-error one when a FID table exists.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

__all__ = [
    "latest_table",
    "recommend",
    "format_recommendation",
    "recommend_fid",
    "format_fid_recommendation",
    "add_recommend_parser",
]

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
OURS = "scoresde"
FID_PROBLEM = "mnist_fid"
SCRIPTS = {"exact_error.tsv": "exact_error", "fid_vs_steps.tsv": "fid_vs_steps"}


def latest_table(results: Path = RESULTS, name: str = "exact_error.tsv") -> Path:
    """The newest ``name`` (``exact_error.tsv`` or ``fid_vs_steps.tsv``) under ``results``
    (folders ``<YYYY-MM-DD>_<device>[_quick]``; on the same date a full run is preferred to a
    ``_quick`` one)."""
    tables = sorted(
        results.glob(f"*/{name}"),
        key=lambda p: (p.parent.name[:10], not p.parent.name.endswith("_quick"), p.parent.name),
    )
    if not tables:
        raise FileNotFoundError(
            f"no benchmark table (*/{name}) under {str(results)!r}; run "
            f"`python -m benchmarks.{SCRIPTS.get(name, name)}` from the scoresde repository or "
            "pass the table's path"
        )
    return tables[-1]


def _read(table: Path, name: str, needed: set[str], value: str) -> list[dict]:
    """The rows with finite ``nfe`` and ``value`` (as floats) of a TSV table expected to be a
    ``name`` (``exact_error.tsv`` or ``fid_vs_steps.tsv``)."""

    def num(v: str):
        try:
            return float(v) if v not in ("", None) else math.nan
        except ValueError:
            return math.nan

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not needed <= set(rows[0]):
        raise ValueError(
            f"{str(table)!r} is not a {SCRIPTS[name]} table; it lacks "
            f"{sorted(needed - set(rows[0]))}"
        )
    for r in rows:
        r["nfe"], r[value] = num(r["nfe"]), num(r[value])
    return [r for r in rows if math.isfinite(r["nfe"]) and math.isfinite(r[value])]


def _check_int(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}; got {value!r}")


def _check_budget(nfe: int, rows: list[dict], table: Path) -> None:
    """Refuse a budget below the smallest measured NFE of ``rows``: nothing would fit it."""
    smallest = min((r["nfe"] for r in rows), default=math.inf)
    if nfe < smallest:
        raise ValueError(
            f"nfe={nfe} is below the smallest budget in {str(table)!r} ({smallest:g} NFE)"
        )


def _best_per_config(rows: list[dict], nfe: int) -> dict[tuple[str, str, str], dict[str, dict]]:
    """``{(family, sampler, grid): {problem: best row with NFE <= nfe}}``."""
    best: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        if r["nfe"] > nfe:
            continue
        cfg = best.setdefault((r["family"], r["sampler"], r["grid"]), {})
        if r["problem"] not in cfg or r["median_error"] < cfg[r["problem"]]["median_error"]:
            cfg[r["problem"]] = r
    return best


def recommend(
    nfe: int, problem: str | None = None, *, table: str | Path | None = None, top: int = 5
) -> dict:
    """The ranking for budget ``nfe`` as a dict: ``table``, ``problems``, ``ranking`` (list of
    ``{sampler, grid, score, errors: {problem: (error, nfe)}}``, best first), and ``best_ours`` and
    ``peers``: the best scoresde row and the best peer row of each problem."""
    _check_int("nfe", nfe, 1)
    _check_int("top", top, 1)
    table = latest_table() if table is None else Path(table)
    needed = {"problem", "family", "sampler", "grid", "nfe", "median_error"}
    rows = _read(table, "exact_error.tsv", needed, "median_error")
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    if problem is not None:
        if problem not in problems:
            raise ValueError(
                f"problem must be one of {problems} (from {str(table)!r}); got {problem!r}"
            )
        problems = [problem]
    rows = [r for r in rows if r["problem"] in problems]
    _check_budget(nfe, [r for r in rows if r["family"] == OURS], table)
    configs = _best_per_config(rows, nfe)
    ours = {k: v for k, v in configs.items() if k[0] == OURS and set(v) == set(problems)}
    best_ours = {
        p: min((v[p] for v in ours.values()), key=lambda r: r["median_error"]) for p in problems
    }
    ranking = []
    for (_, sampler, grid), per in ours.items():
        ratios = [per[p]["median_error"] / best_ours[p]["median_error"] for p in problems]
        score = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        errors = {p: (per[p]["median_error"], int(per[p]["nfe"])) for p in problems}
        ranking.append({"sampler": sampler, "grid": grid, "score": score, "errors": errors})
    ranking.sort(key=lambda r: (r["score"], r["sampler"], r["grid"]))
    peers = {}
    for p in problems:
        cands = [v[p] for k, v in configs.items() if k[0] != OURS and p in v]
        if cands:
            peers[p] = min(cands, key=lambda r: r["median_error"])
    return {
        "table": table,
        "problems": problems,
        "nfe": nfe,
        "ranking": ranking[:top],
        "best_ours": best_ours,
        "peers": peers,
    }


def format_recommendation(result: dict) -> str:
    """The ranking as plain text, with the best peer per problem and our ratio to it."""
    probs = result["problems"]
    lines = [
        f"Best samplers at <= {result['nfe']} NFE (median per-sample error vs the exact solution)",
        f"table: {result['table']}",
        "",
    ]
    if not result["ranking"]:
        return "\n".join(lines + ["no scoresde run fits this budget on every problem"])
    if len(probs) == 1:
        p = probs[0]
        lines.append(f"problem {p}:")
        for i, r in enumerate(result["ranking"], 1):
            err, n = r["errors"][p]
            lines.append(
                f"  {i}. {r['sampler']:<24} grid={r['grid']:<16} error={err:.3e}  ({n} NFE)"
            )
    else:
        lines.append(
            "ranked by the geometric mean over problems of error / best scoresde error "
            "(1 = best everywhere):"
        )
        for i, r in enumerate(result["ranking"], 1):
            lines.append(f"  {i}. {r['sampler']:<24} grid={r['grid']:<16} score={r['score']:.3g}")
            for p in probs:
                err, n = r["errors"][p]
                lines.append(f"       {p:<14} error={err:.3e}  ({n} NFE)")
    lines += ["", "best scoresde run vs best peer run on the same budget, per problem:"]
    for p in probs:
        peer, ours = result["peers"].get(p), result["best_ours"][p]
        lines.append(
            f"  {p:<14} scoresde {ours['sampler']} ({ours['grid']}, {int(ours['nfe'])} NFE): "
            f"error={ours['median_error']:.3e}"
        )
        if peer is None:
            lines.append(f"  {'':<14} no peer run in the table")
            continue
        ratio = ours["median_error"] / peer["median_error"]
        verdict = "peer wins" if ratio > 1 else "scoresde wins"
        lines.append(
            f"  {'':<14} {peer['family']} {peer['sampler']} "
            f"({peer['grid']}, {int(peer['nfe'])} NFE): "
            f"error={peer['median_error']:.3e}; ours/peer = {ratio:.3g} ({verdict})"
        )
    return "\n".join(lines)


def recommend_fid(nfe: int, *, table: str | Path | None = None, top: int = 5) -> dict:
    """The samplers of a ``fid_vs_steps.tsv`` ranked by FID at budget ``nfe``, as a dict:
    ``table``, ``nfe``, ``ranking`` (``{sampler, grid, fid, nfe, n_samples}``, each sampler's best
    cell with measured NFE <= ``nfe``, best first) and ``reference`` (the long reference runs)."""
    _check_int("nfe", nfe, 1)
    _check_int("top", top, 1)
    table = latest_table(name="fid_vs_steps.tsv") if table is None else Path(table)
    rows = _read(table, "fid_vs_steps.tsv", {"role", "sampler", "grid", "nfe", "fid"}, "fid")
    cells = [r for r in rows if r["role"] == "cell"]
    _check_budget(nfe, cells, table)
    best: dict[str, dict] = {}
    for r in cells:
        if r["nfe"] <= nfe and (r["sampler"] not in best or r["fid"] < best[r["sampler"]]["fid"]):
            best[r["sampler"]] = r
    ranking = [
        {"sampler": r["sampler"], "grid": r["grid"], "fid": r["fid"], "nfe": int(r["nfe"]),
         "n_samples": r.get("n_samples", "")}
        for r in sorted(best.values(), key=lambda r: (r["fid"], r["sampler"]))
    ]  # fmt: skip
    reference = [r for r in rows if r["role"] == "reference"]
    return {"table": table, "nfe": nfe, "ranking": ranking[:top], "reference": reference}


def format_fid_recommendation(result: dict) -> str:
    """The FID ranking as plain text, with the reference run the budgets are heading to."""
    lines = [
        f"Best samplers at <= {result['nfe']} NFE on the trained MNIST model "
        "(FID, lower is better)",
        f"table: {result['table']}",
        "",
    ]
    for i, r in enumerate(result["ranking"], 1):
        lines.append(
            f"  {i}. {r['sampler']:<24} grid={r['grid']:<16} FID={r['fid']:.2f}  ({r['nfe']} NFE, "
            f"{r['n_samples']} samples)"
        )
    for r in result["reference"]:
        lines.append(f"  reference: {r['sampler']} ({int(r['nfe'])} NFE) FID={r['fid']:.2f}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.problem == FID_PROBLEM:
        print(
            format_fid_recommendation(recommend_fid(args.nfe, table=args.fid_table, top=args.top))
        )
        return 0
    print(format_recommendation(recommend(args.nfe, args.problem, table=args.table, top=args.top)))
    if args.problem is None:
        try:
            fid = recommend_fid(args.nfe, table=args.fid_table, top=args.top)
        except (FileNotFoundError, ValueError):
            if args.fid_table is not None:
                raise
            return 0  # no committed FID table, or none of its cells fits this budget
        print("\n" + format_fid_recommendation(fid))
    return 0


def add_recommend_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``recommend`` subcommand on an ``argparse`` subparsers object; the parsed
    namespace's ``func(args)`` prints the recommendation and returns the exit code."""
    p = subparsers.add_parser(
        "recommend",
        help="best samplers at an NFE budget, from the latest benchmark table",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--nfe", type=int, required=True, help="network-evaluation budget")
    p.add_argument(
        "--problem",
        help=f"one problem of the table (e.g. gmm64_ddpm), or {FID_PROBLEM} for the FID table; "
        "default: all",
    )
    p.add_argument(
        "--table", help="an exact_error.tsv (default: the latest under benchmarks/results)"
    )
    p.add_argument(
        "--fid-table", help="a fid_vs_steps.tsv (default: the latest under benchmarks/results)"
    )
    p.add_argument("--top", type=int, default=5, help="how many pairs to print (default 5)")
    p.set_defaults(func=_run)
    return p
