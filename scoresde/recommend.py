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
(``benchmarks/fid_vs_steps.py``, ``fid_vs_steps.tsv``): the mean over seeds of each scoresde
sampler's best cell, among the cells of one ending (``denoise_final`` by default, ``--ending``),
with the best peer (diffusers, k-diffusion) on the same budget and ending printed below; without
``--problem`` that ranking is printed after the exact-error one when a FID table exists.

The committed tables ship inside the package (``scoresde/benchmark_results/``), so the command
works from any install; in a source checkout the newest of those and of ``benchmarks/results``
is read. A ``--quick`` table or one missing problems is still ranked, but the first line of the
output says so.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

__all__ = [
    "latest_table",
    "recommend",
    "format_recommendation",
    "recommend_fid",
    "format_fid_recommendation",
    "add_recommend_parser",
]

# the tables shipped with the package (copies of benchmarks/results/<run>/, see
# benchmarks/publish.py), and the benchmarks' own output folder when run from a source checkout
PACKAGED = Path(__file__).resolve().parent / "benchmark_results"
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
OURS = "scoresde"
FID_PROBLEM = "mnist_fid"
SCRIPTS = {"exact_error.tsv": "exact_error", "fid_vs_steps.tsv": "fid_vs_steps"}
# the problems of a full ``benchmarks/exact_error.py`` run (a test keeps this in step with it)
FULL_PROBLEMS = ("gmm2d_ddpm", "gmm2d_vp", "gmm2d_ve", "gmm64_ddpm", "gmm64_vp", "gmm64_ve")


def latest_table(results: Path | None = None, name: str = "exact_error.tsv") -> Path:
    """The newest ``name`` (``exact_error.tsv`` or ``fid_vs_steps.tsv``) in the run folders
    (``<YYYY-MM-DD>_<device>[_quick]``) under ``results``, by default under the packaged tables
    and ``benchmarks/results`` (when present). On the same date a full run is preferred to a
    ``_quick`` one, and ``benchmarks/results`` to its packaged copy."""
    roots = [results] if results is not None else [PACKAGED, RESULTS]
    tables = sorted(
        (
            (p.parent.name[:10], not p.parent.name.endswith("_quick"), p.parent.name, k, p)
            for k, root in enumerate(roots)
            for p in Path(root).glob(f"*/{name}")
        )
    )
    if not tables:
        where = " or ".join(repr(str(r)) for r in roots)
        raise FileNotFoundError(
            f"no benchmark table (*/{name}) under {where}; run "
            f"`python -m benchmarks.{SCRIPTS.get(name, name)}` from the scoresde repository or "
            "pass the table's path"
        )
    return tables[-1][-1]


def partial_reasons(table: Path, problems: list[str] | None = None) -> list[str]:
    """Why ``table`` is not a full benchmark run: written by ``--quick`` (its folder name or the
    ``command`` in the ``env.txt`` beside it), or lacking some of ``FULL_PROBLEMS`` when
    ``problems`` (the table's) is given. Empty for a full table."""
    reasons = []
    env = table.parent / "env.txt"
    command = ""
    if env.is_file():
        lines = env.read_text(errors="replace").splitlines()
        command = next((ln for ln in lines if ln.startswith("command:")), "")
    if table.parent.name.endswith("_quick") or "--quick" in command.split():
        reasons.append("a --quick run (fewer samples, budgets and grids)")
    if problems is not None:
        missing = [p for p in FULL_PROBLEMS if p not in problems]
        if missing:
            reasons.append(f"it lacks problems {missing}")
    return reasons


def _read(table: Path, name: str, needed: set[str], value: str) -> list[dict]:
    """The rows with finite ``nfe`` and ``value`` (as floats) of a TSV table expected to be a
    ``name`` (``exact_error.tsv`` or ``fid_vs_steps.tsv``)."""

    def num(v: str):
        try:
            return float(v) if v not in ("", None) else math.nan
        except ValueError:
            return math.nan

    if not table.is_file():
        raise FileNotFoundError(f"table {str(table)!r} is not a file")
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(
            f"{str(table)!r} is not a table of benchmarks/{SCRIPTS[name]}.py: {err}"
        ) from None
    if not rows:
        raise ValueError(
            f"{str(table)!r} is not a table of benchmarks/{SCRIPTS[name]}.py: it has no rows"
        )
    if not needed <= set(rows[0]):
        raise ValueError(
            f"{str(table)!r} is not a table of benchmarks/{SCRIPTS[name]}.py; it lacks "
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
    partial = partial_reasons(table, problems if problem is None else None)
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
        widest = max(per.values(), key=lambda r: r["nfe"])
        ranking.append({"sampler": sampler, "grid": grid, "score": score, "errors": errors,
                        "nfe": int(widest["nfe"]), "n_steps": _int_or_none(widest.get("n_steps"))})  # fmt: skip
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
        "partial": partial,
    }


def _int_or_none(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


# how to build each grid of the tables, in Python and on the ``sample`` command line
_GRID_CODE = {
    "uniform_time": "S.UniformTime()",
    "uniform_lambda": "S.UniformLambda()",
    "karras": "S.Karras(7.0)",
    "quadratic": "S.Quadratic()",
}


def usage_lines(
    sampler: str, grid: str, nfe: int, n_steps: int | None, *, denoise_final: bool = False
) -> list[str]:
    """A copy-pasteable ``S.sample(...)`` line (``denoiser`` and ``shape`` are the user's) and
    the matching ``python -m scoresde sample`` command for one ranked (sampler, grid); a grid
    named ``default: ...`` is the sampler's own, which both use when none is given."""
    default = grid.startswith("default")
    code = _GRID_CODE.get(grid)
    if grid == "optimized":
        code = f"S.Optimized({sampler!r}, denoiser, shape=(16, *shape[1:]))"
    grid_arg, note = (f", grid={code}", "") if code else ("", f"  # on the benchmark's {grid!r}")
    if default:
        note = ""
    steps = f", n_steps={n_steps}" if n_steps is not None else ""
    final = ", denoise_final=True" if denoise_final else ""
    return [
        f'  x = S.sample("{sampler}", denoiser, shape=shape{grid_arg}{steps}{final}).x{note}',
        f"  python -m scoresde sample --ckpt CHECKPOINT.pt --sampler {sampler}"
        + ("" if default else f" --grid {grid}")
        + f" --nfe {nfe}"
        + (" --denoise-final" if denoise_final else "")
        + " --out samples.png",
    ]


def _banner(partial: list[str]) -> list[str]:
    if not partial:
        return []
    return [f"WARNING: partial benchmark table ({'; '.join(partial)}); this ranking is not the "
            "full benchmark's"]  # fmt: skip


def format_recommendation(result: dict) -> str:
    """The ranking as plain text, with the best peer per problem and our ratio to it."""
    probs = result["problems"]
    lines = _banner(result.get("partial", [])) + [
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


FID_ENDINGS = ("denoise_final", "t_min")


def _seed_groups(rows: list[dict]) -> list[dict]:
    """One entry per (sampler, grid, ending, NFE budget): the mean and sample standard deviation
    of its FID over seeds (0 for one seed), the seed count and its largest measured NFE."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["sampler"], r["grid"], r["ending"], r.get("nfe_budget") or r["nfe"])
        groups.setdefault(key, []).append(r)
    out = []
    for (sampler, grid, ending, _), rs in groups.items():
        values = [r["fid"] for r in rs]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
        widest = max(rs, key=lambda r: r["nfe"])
        out.append({"sampler": sampler, "grid": grid, "ending": ending, "fid": mean,
                    "fid_sd": sd, "seeds": len(values), "nfe": int(widest["nfe"]),
                    "n_steps": _int_or_none(widest.get("n_steps")),
                    "n_samples": widest.get("n_samples", ""),
                    "family": widest.get("family") or OURS})  # fmt: skip
    return out


def recommend_fid(
    nfe: int, *, table: str | Path | None = None, top: int = 5, ending: str | None = None
) -> dict:
    """The scoresde samplers of a ``fid_vs_steps.tsv`` ranked by FID at budget ``nfe``, as a dict:
    ``table``, ``nfe``, ``ending``, ``ranking`` (``{sampler, grid, fid, fid_sd, seeds, nfe,
    n_steps, n_samples}``: each sampler's best (grid, budget) cell with measured NFE <= ``nfe``,
    its FID the mean over seeds, best first), ``best_peer`` (the same for the best peer row, or
    ``None``) and ``reference`` (the long reference runs).

    Only cells with one ending are ranked: ``ending``, by default ``denoise_final`` when the
    table has it (the model's x0 at the end, the field's convention), else the table's own.
    Tables written before the ending and seed columns existed end at ``t_min`` and have one
    seed; they are read as such."""
    _check_int("nfe", nfe, 1)
    _check_int("top", top, 1)
    if ending is not None and ending not in FID_ENDINGS:
        raise ValueError(f"ending must be one of {FID_ENDINGS}; got {ending!r}")
    table = latest_table(name="fid_vs_steps.tsv") if table is None else Path(table)
    rows = _read(table, "fid_vs_steps.tsv", {"role", "sampler", "grid", "nfe", "fid"}, "fid")
    for r in rows:
        r["ending"] = r.get("ending") or ("denoise_final" if r["role"] == "reference" else "t_min")
    cells = [r for r in rows if r["role"] == "cell"]
    endings = list(dict.fromkeys(r["ending"] for r in cells))
    if ending is None:
        ending = "denoise_final" if "denoise_final" in endings or not endings else endings[0]
    elif ending not in endings:
        raise ValueError(f"{str(table)!r} has no cells ending {ending!r}; it has {endings}")
    cells = [r for r in cells if r["ending"] == ending]
    _check_budget(nfe, cells, table)

    def best_per_sampler(rs: list[dict]) -> list[dict]:
        best: dict[str, dict] = {}
        for g in _seed_groups([r for r in rs if r["nfe"] <= nfe]):
            if g["sampler"] not in best or g["fid"] < best[g["sampler"]]["fid"]:
                best[g["sampler"]] = g
        return sorted(best.values(), key=lambda g: (g["fid"], g["sampler"]))

    peers = best_per_sampler([r for r in rows if r["role"] == "peer" and r["ending"] == ending])
    reference = [r for r in rows if r["role"] == "reference"]
    return {"table": table, "nfe": nfe, "ending": ending, "ranking": best_per_sampler(cells)[:top],
            "best_peer": peers[0] if peers else None, "reference": reference,
            "partial": partial_reasons(table)}  # fmt: skip


def _fid_text(r: dict) -> str:
    spread = f" ± {r['fid_sd']:.2f} ({r['seeds']} seeds)" if r["seeds"] > 1 else ""
    return f"FID={r['fid']:.2f}{spread}"


def format_fid_recommendation(result: dict) -> str:
    """The FID ranking as plain text, with the best peer on the same budget and ending, and the
    reference runs the budgets are heading to."""
    ending = result.get("ending", "t_min")
    how = ("the model's x0 at the last step" if ending == "denoise_final"
           else "the state at t_min, residual noise left in")  # fmt: skip
    lines = _banner(result.get("partial", [])) + [
        f"Best samplers at <= {result['nfe']} NFE on the trained MNIST model "
        "(FID, lower is better; mean ± sd over seeds)",
        f"ending: {ending} ({how})",
        f"table: {result['table']}",
        "",
    ]
    for i, r in enumerate(result["ranking"], 1):
        lines.append(
            f"  {i}. {r['sampler']:<24} grid={r['grid']:<16} {_fid_text(r)}  ({r['nfe']} NFE, "
            f"{r['n_samples']} samples)"
        )
    peer = result.get("best_peer")
    if peer is not None:
        lines.append(
            f"  best peer: {peer['sampler']} (grid={peer['grid']}, {peer['nfe']} NFE) "
            f"{_fid_text(peer)}"
        )
    for r in result["reference"]:
        lines.append(f"  reference: {r['sampler']} ({int(r['nfe'])} NFE) FID={r['fid']:.2f}")
    return "\n".join(lines)


def _usage(result: dict) -> str:
    if not result["ranking"]:
        return ""
    top = result["ranking"][0]
    lines = ["", "", f"to sample with the first ({top['sampler']}, grid {top['grid']}):"]
    final = result.get("ending") == "denoise_final"
    return "\n".join(lines + usage_lines(top["sampler"], top["grid"], top["nfe"], top["n_steps"],
                                         denoise_final=final))  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    try:
        if args.problem == FID_PROBLEM:
            fid = recommend_fid(args.nfe, table=args.fid_table, top=args.top, ending=args.ending)
            print(format_fid_recommendation(fid) + _usage(fid))
            return 0
        result = recommend(args.nfe, args.problem, table=args.table, top=args.top)
        text = format_recommendation(result)
        if args.problem is None:
            try:
                text += "\n\n" + format_fid_recommendation(
                    recommend_fid(args.nfe, table=args.fid_table, top=args.top, ending=args.ending)
                )
            except (FileNotFoundError, ValueError):
                if args.fid_table is not None:
                    raise
                # no committed FID table, or none of its cells fits this budget
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text + _usage(result))
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
        "--table",
        help="an exact_error.tsv (default: the latest shipped or under benchmarks/results)",
    )
    p.add_argument(
        "--fid-table",
        help="a fid_vs_steps.tsv (default: the latest shipped or under benchmarks/results)",
    )
    p.add_argument(
        "--ending",
        choices=FID_ENDINGS,
        help="FID table: rank the cells with this ending (default denoise_final when the table "
        "has it)",
    )
    p.add_argument("--top", type=int, default=5, help="how many pairs to print (default 5)")
    p.set_defaults(func=_run)
    return p
