"""The markdown summary of a steps-vs-FID table (``benchmarks/fid_vs_steps.py``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["seed_stats", "cell_stats", "summary"]


def seed_stats(values: Sequence[float]) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation (0 for one value) and count of a cell's FIDs over seeds."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, var**0.5, len(values)


def cell_stats(rows: Sequence[dict]) -> tuple[float, float | None, int] | None:
    """``(FID, error, seeds)`` of one cell's rows: the mean and standard deviation over seeds,
    or for one seed its FID and bootstrap ``fid_sd`` (``None`` where the row has none)."""
    st = seed_stats([r.get("fid") for r in rows])
    if st is None or st[2] > 1:
        return st
    sd = next((r.get("fid_sd") for r in rows if r.get("fid") is not None), None)
    return st[0], sd, 1


def summary(rows: list[dict]) -> str:
    """A markdown table of FID by sampler or peer and ending (rows) and NFE budget (columns,
    with the measured NFE where it is smaller; ± the standard deviation over seeds where there
    are several, else the bootstrap ``fid_sd``), then the best scoresde sampler and the best
    peer per budget, the adaptive samplers' runs (their own NFE) and the reference runs."""
    cells = [r for r in rows if r.get("role") in ("cell", "peer")]
    budgets = sorted({r["nfe_budget"] for r in cells})
    groups: dict[tuple, list[dict]] = {}
    for r in cells:
        key = (r["sampler"], r.get("grid", ""), r.get("ending") or "t_min", r["nfe_budget"])
        groups.setdefault(key, []).append(r)
    peers = {r["sampler"] for r in cells if r.get("role") == "peer"}

    def pm(st: tuple[float, float | None, int]) -> str:
        return f"{st[0]:.1f}" + ("" if st[1] is None else f" ± {st[1]:.1f}")

    def show(rs: list[dict] | None) -> str:
        if not rs:
            return "–"
        st = cell_stats(rs)
        if st is None:
            return "failed"
        nfe = {r.get("nfe") for r in rs} - {None, rs[0]["nfe_budget"]}
        return pm(st) + (f" ({max(nfe)})" if nfe else "")

    lines = [
        "| sampler | grid | ending | " + " | ".join(f"NFE {b}" for b in budgets) + " |",
        "| --- | --- | --- |" + " --- |" * len(budgets),
    ]
    for key, grid, ending in dict.fromkeys((s, g, e) for s, g, e, _ in groups):
        name = f"`{key}` (peer)" if key in peers else f"`{key}`"
        lines.append(
            f"| {name} | {grid} | {ending} | "
            + " | ".join(show(groups.get((key, grid, ending, b))) for b in budgets)
            + " |"
        )
    for title, mine in (("**best**", True), ("**best peer**", False)):
        best = []
        for b in budgets:
            scored = [(st, k[0]) for k, rs in groups.items()
                      if k[3] == b and (k[0] not in peers) == mine and (st := cell_stats(rs))]  # fmt: skip
            best.append(min(scored, default=None, key=lambda t: t[0][0]))
        if mine or peers:
            lines.append(
                f"| {title} | | | "
                + " | ".join("–" if t is None else f"`{t[1]}` {pm(t[0])}" for t in best)
                + " |"
            )
    seeds = sorted({r.get("seed") for r in cells if r.get("seed") is not None})
    if len(seeds) > 1:
        lines.append(f"\n± : standard deviation over seeds {seeds} where a cell has several, "
                     "else the bootstrap standard deviation over the cell's features.")  # fmt: skip
    elif any(r.get("fid_sd") is not None for r in cells):
        lines.append("\n± : the bootstrap standard deviation of each cell's FID over redraws of "
                     "its features (its sampling noise at this n; `benchmarks/fid_bootstrap.py`).")  # fmt: skip
    for r in rows:
        if r.get("role") == "adaptive":
            lines.append(
                f"\nAdaptive: `{r['sampler']}` on `{r['grid']}`, seed {r.get('seed')} (ending "
                f"{r.get('ending')}): "
                + (
                    f"FID {pm(cell_stats([r]))} at {r.get('nfe')} NFE (the largest batch's)"
                    if r.get("fid") is not None
                    else f"failed ({r.get('note', '')})"
                )
                + f", {r.get('n_samples')} samples."
            )
        if r.get("role") == "reference":
            lines.append(
                f"\nReference: `{r['sampler']}`, {r['n_steps']} steps on `{r['grid']}` "
                f"({r.get('nfe')} NFE, ending {r.get('ending') or 'denoise_final'}): FID "
                + (pm(cell_stats([r])) if r.get("fid") is not None else "failed")
                + f", {r.get('n_samples')} samples."
            )
    return "\n".join(lines)
