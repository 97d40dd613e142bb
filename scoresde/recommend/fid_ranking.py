"""The ranking of ``scoresde recommend`` by the FID of a trained MNIST model
(``benchmarks/fid_vs_steps.py``, ``fid_vs_steps.tsv``)."""

from __future__ import annotations

import math
from pathlib import Path

from ..utils import check_int
from .tables import OURS, banner, check_budget, int_or_none, partial_reasons, read_table

__all__ = ["FID_ENDINGS", "recommend_fid", "format_fid_recommendation"]

FID_ENDINGS = ("denoise_final", "t_min")


def _seed_groups(rows: list[dict]) -> list[dict]:
    """One entry per (sampler, grid, ending, NFE budget): the mean and sample standard deviation
    of its FID over seeds (for one seed, its bootstrap ``fid_sd`` where the table has it, else
    0), the seed count and its largest measured NFE."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["sampler"], r["grid"], r["ending"], r.get("nfe_budget") or r["nfe"])
        groups.setdefault(key, []).append(r)
    out = []
    for (sampler, grid, ending, _), rs in groups.items():
        values = [r["fid"] for r in rs]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
        if len(values) == 1:  # one seed: its bootstrap sd, where the table has the column
            boot = float(rs[0].get("fid_sd") or "nan")
            sd = boot if math.isfinite(boot) else 0.0
        widest = max(rs, key=lambda r: r["nfe"])
        out.append({"sampler": sampler, "grid": grid, "ending": ending, "fid": mean,
                    "fid_sd": sd, "seeds": len(values), "nfe": int(widest["nfe"]),
                    "n_steps": int_or_none(widest.get("n_steps")),
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
    check_int("nfe", nfe, low=1)
    check_int("top", top, low=1)
    if ending is not None and ending not in FID_ENDINGS:
        raise ValueError(f"ending must be one of {FID_ENDINGS}; got {ending!r}")
    needed = {"role", "sampler", "grid", "nfe", "fid"}
    table, rows = read_table(table, "fid_vs_steps.tsv", needed, "fid")
    for r in rows:
        r["ending"] = r.get("ending") or ("denoise_final" if r["role"] == "reference" else "t_min")
    cells = [r for r in rows if r["role"] == "cell"]
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

    peers = best_per_sampler([r for r in rows if r["role"] == "peer" and r["ending"] == ending])
    reference = [r for r in rows if r["role"] == "reference"]
    return {"table": table, "nfe": nfe, "ending": ending, "ranking": best_per_sampler(cells)[:top],
            "best_peer": peers[0] if peers else None, "reference": reference,
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
        sd = f" ± {float(r['fid_sd']):.2f}" if r.get("fid_sd") else ""
        lines.append(f"  reference: {r['sampler']} ({int(r['nfe'])} NFE) FID={r['fid']:.2f}{sd}")
    return "\n".join(lines)
