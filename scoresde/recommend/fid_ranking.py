"""The ranking of ``scoresde recommend`` by the FID of a trained MNIST model
(``benchmarks/fid_vs_steps.py``, ``fid_vs_steps.tsv``)."""

from __future__ import annotations

import math
from pathlib import Path

from ..utils import check_int
from .fid_rows import FID_ENDINGS, read_fid_table
from .tables import OURS, banner, budget_note, check_budget, partial_reasons, ranked_heads

__all__ = ["FID_ENDINGS", "recommend_fid", "format_fid_recommendation"]


def _seed_groups(rows: list[dict]) -> list[dict]:
    """One entry per (sampler, grid, ending, NFE budget): the mean and sample standard deviation
    of its FID over seeds (for one seed, its bootstrap ``fid_sd`` where the table has it, else
    0), the seed count, its largest measured NFE and whether it is an adaptive run (which picks
    its own steps: its budget is its measured NFE)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["sampler"], r["grid"], r["ending"], r.get("nfe_budget") or r["nfe"])
        groups.setdefault(key, []).append(r)
    out = []
    for (sampler, grid, ending, _), rs in groups.items():
        values = [r["fid"] for r in rs]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
        if len(values) == 1:  # one seed: its bootstrap sd, where the table has one
            sd = rs[0]["fid_sd"] if math.isfinite(rs[0]["fid_sd"]) else 0.0
        widest = max(rs, key=lambda r: r["nfe"])
        out.append({"sampler": sampler, "grid": grid, "ending": ending, "fid": mean,
                    "fid_sd": sd, "seeds": len(values), "nfe": int(widest["nfe"]),
                    "n_steps": widest["n_steps"], "n_samples": widest["n_samples"],
                    "adaptive": widest["role"] == "adaptive",
                    "family": widest.get("family") or OURS})  # fmt: skip
    return out


def recommend_fid(
    nfe: int, *, table: str | Path | None = None, top: int = 5, ending: str | None = None
) -> dict:
    """The scoresde samplers of a ``fid_vs_steps.tsv`` ranked by FID at budget ``nfe``, as a dict:
    ``table``, ``nfe``, ``ending``, ``ranking`` (``{sampler, grid, fid, fid_sd, seeds, nfe,
    n_steps, n_samples, adaptive}``: each sampler's best (grid, budget) cell with measured NFE <=
    ``nfe``, its FID the mean over seeds, best first; an adaptive run counts at its measured NFE),
    ``best_peer`` (the same for the best peer row, or ``None``; ``peer_cells`` says whether the
    table has any peer cell of that ending), ``reference`` (the long reference runs), ``failed``
    (how many failed cells, without a FID, were left out) and ``notes`` (lines to print).

    Only cells with one ending are ranked: ``ending``, by default ``denoise_final`` when the
    table has it (the model's x0 at the end, the field's convention), else the table's own.
    Tables written before the ending and seed columns existed end at ``t_min`` and have one
    seed; they are read as such. A bad value in the table raises ``ValueError`` naming its line
    and column (:func:`.fid_rows.read_fid_table`)."""
    check_int("nfe", nfe, low=1)
    check_int("top", top, low=1)
    if ending is not None and ending not in FID_ENDINGS:
        raise ValueError(f"ending must be one of {FID_ENDINGS}; got {ending!r}")
    table, rows, failed = read_fid_table(table)
    for r in rows:
        r["ending"] = r.get("ending") or ("denoise_final" if r["role"] == "reference" else "t_min")
    cells = [r for r in rows if r["role"] in ("cell", "adaptive")]
    endings = list(dict.fromkeys(r["ending"] for r in cells))
    if ending is None:
        ending = "denoise_final" if "denoise_final" in endings or not endings else endings[0]
    elif ending not in endings:
        raise ValueError(f"{str(table)!r} has no cells ending {ending!r}; it has {endings}")
    cells = [r for r in cells if r["ending"] == ending]
    check_budget(nfe, cells, table)

    def best_per_sampler(rs: list[dict]) -> list[dict]:
        best: dict[str, dict] = {}
        for g in _seed_groups([r for r in rs if r["nfe"] <= nfe]):
            if g["sampler"] not in best or g["fid"] < best[g["sampler"]]["fid"]:
                best[g["sampler"]] = g
        return sorted(best.values(), key=lambda g: (g["fid"], g["sampler"]))

    peer_cells = [r for r in rows if r["role"] == "peer" and r["ending"] == ending]
    peers = best_per_sampler(peer_cells)
    reference = [r for r in rows if r["role"] == "reference"]
    return {"table": table, "nfe": nfe, "ending": ending, "ranking": best_per_sampler(cells)[:top],
            "best_peer": peers[0] if peers else None, "peer_cells": bool(peer_cells),
            "reference": reference, "failed": failed, "notes": budget_note(nfe, cells),
            "partial": partial_reasons(table)}  # fmt: skip


def _fid_text(r: dict) -> str:
    if r["seeds"] > 1:
        return f"FID={r['fid']:.2f} ± {r['fid_sd']:.2f} ({r['seeds']} seeds)"
    return f"FID={r['fid']:.2f}" + (f" ± {r['fid_sd']:.2f} (bootstrap)" if r["fid_sd"] else "")


def format_fid_recommendation(result: dict) -> str:
    """The FID ranking as plain text, with the best peer on the same budget and ending, and the
    reference runs the budgets are heading to."""
    ending = result.get("ending", "t_min")
    how = ("the model's x0 at the last step" if ending == "denoise_final"
           else "the state at t_min, residual noise left in")  # fmt: skip
    lines = banner(result.get("partial", [])) + [
        f"Best samplers at <= {result['nfe']} NFE on the trained MNIST model "
        "(FID, lower is better; mean ± sd over seeds, or ± the bootstrap sd of one seed)",
        f"ending: {ending} ({how})",
        f"table: {result['table']}",
        *result.get("notes", []),
    ]
    if result.get("failed"):
        lines.append(f"skipped {result['failed']} failed cell(s): no FID, see the note column")
    lines.append("")
    ranking = result["ranking"]
    for head, r in zip(ranked_heads(ranking), ranking, strict=True):
        run = f"{r['nfe']} NFE" + (", adaptive" if r["adaptive"] else "")
        if r["n_samples"]:
            run += f", {r['n_samples']} samples"
        lines.append(f"{head}  {_fid_text(r)}  ({run})")
    peer = result.get("best_peer")
    if peer is not None:
        lines.append(
            f"  best peer: {peer['sampler']} (grid={peer['grid']}, {peer['nfe']} NFE) "
            f"{_fid_text(peer)}"
        )
    elif result.get("peer_cells"):
        lines.append(f"  best peer: none at <= {result['nfe']} NFE with ending {ending}")
    else:
        lines.append(f"  best peer: none (no peer cell in the table has ending {ending})")
    for r in result["reference"]:
        sd = f" ± {r['fid_sd']:.2f}" if math.isfinite(r["fid_sd"]) else ""
        lines.append(
            f"  reference: {r['sampler']} ({r['nfe']} NFE, ending {r['ending']}) "
            f"FID={r['fid']:.2f}{sd}"
        )
    return "\n".join(lines)
