"""The ranking of ``scoresde recommend`` by the median per-sample error against the exact PF-ODE
solution (``benchmarks/exact_error.py``, ``exact_error.tsv``)."""

from __future__ import annotations

import math
from pathlib import Path

from ..utils import check_int
from .tables import (
    FID_PROBLEM,
    OURS,
    banner,
    budget_note,
    check_budget,
    int_or_none,
    partial_reasons,
    ranked_heads,
    read_table,
)

__all__ = ["recommend", "format_recommendation"]


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
    check_int("nfe", nfe, low=1)
    check_int("top", top, low=1)
    needed = {"problem", "family", "sampler", "grid", "nfe", "median_error"}
    table, rows = read_table(table, "exact_error.tsv", needed, "median_error")
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    partial = partial_reasons(table, problems if problem is None else None)
    if problem is not None:
        if problem not in problems:
            raise ValueError(
                f"problem must be one of {problems} (the exact problems of {str(table)!r}) or "
                f"{FID_PROBLEM!r} (the FID table's trained model); got {problem!r}"
            )
        problems = [problem]
    rows = [r for r in rows if r["problem"] in problems]
    check_budget(nfe, [r for r in rows if r["family"] == OURS], table)
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
                        "nfe": int(widest["nfe"]), "n_steps": int_or_none(widest.get("n_steps"))})  # fmt: skip
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
        "notes": budget_note(nfe, rows),
    }


def format_recommendation(result: dict) -> str:
    """The ranking as plain text, with the best peer per problem and our ratio to it."""
    probs = result["problems"]
    lines = banner(result.get("partial", [])) + [
        f"Best samplers at <= {result['nfe']} NFE on the exact Gaussian-mixture problems "
        "(median per-sample error vs the exact solution)",
        f"table: {result['table']}",
        *result.get("notes", []),
        "",
    ]
    ranking = result["ranking"]
    if not ranking:
        return "\n".join(lines + ["no scoresde run fits this budget on every problem"])
    heads = ranked_heads(ranking)
    if len(probs) == 1:
        p = probs[0]
        lines.append(f"problem {p}:")
        for head, r in zip(heads, ranking, strict=True):
            err, n = r["errors"][p]
            lines.append(f"{head}  error={err:.3e}  ({n} NFE)")
    else:
        lines.append(
            "ranked by the geometric mean over problems of error / best scoresde error "
            "(1 = best everywhere):"
        )
        for head, r in zip(heads, ranking, strict=True):
            lines.append(f"{head}  score={r['score']:.3g}")
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
