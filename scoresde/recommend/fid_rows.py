"""Strict reading of a ``fid_vs_steps.tsv`` (``benchmarks/fid_vs_steps.py``) for ``scoresde
recommend``: a hand-edited or damaged table must never be ranked silently wrong, so every value
the ranking uses is checked and the first bad one is reported with its file, line and column."""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..samplers import SAMPLERS, get_sampler
from ..train_cli import GRID_NAMES
from .tables import LINE, OURS, read_rows, split_spec

__all__ = ["FID_ENDINGS", "ROLES", "read_fid_table"]

FID_ENDINGS = ("denoise_final", "t_min")
ROLES = ("cell", "peer", "reference", "adaptive")
PEER_FAMILIES = ("diffusers", "k-diffusion")
# a peer is ``<family>:<method>`` on its library's own grid (benchmarks/fid_peers.py)
_PEER_SAMPLER = re.compile(r"(?P<family>[a-z-]+):[A-Za-z0-9_]+")
_PEER_GRID = re.compile(r"linspace|karras\(rho=[0-9.]+\)")
# a sampler run on its own default grid: ``default: <the grid's repr>``
_DEFAULT_GRID = re.compile(r"default: .+")
# an older table has no family, ending or seed columns: their values are then empty
_NEEDED = {"role", "sampler", "grid", "nfe", "fid"}
# no FID, NFE or count of a real table comes near this; a larger value is a damaged one (and
# would overflow the spread over seeds)
HIGHEST = 1e9
# the numeric columns: (an integer?, the lowest valid value, may it be empty?); an empty one
# may also read nan, as benchmarks/common.write_tsv writes a missing float
_NUMBERS = {
    "nfe": (True, 1, False),
    "fid": (False, 0, False),
    "nfe_budget": (True, 1, True),
    "n_steps": (True, 1, True),
    "seed": (True, 0, True),
    "n_samples": (True, 1, True),
    "fid_sd": (False, 0, True),  # empty in tables older than the bootstrap
}


def _number(r: dict, column: str, where: str) -> int | float | None:
    """The value of ``r[column]`` (``None`` for an empty optional one), or ``ValueError``."""
    integer, low, optional = _NUMBERS[column]
    text = r.get(column) or ""
    if optional and text.lower() in ("", "nan"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low <= value <= HIGHEST and (value.is_integer() or not integer)):
        kind = f"an integer >= {low}" if integer else f"a number from {low} to {HIGHEST:g}"
        empty = " or empty" if optional else ""
        raise ValueError(f"{where}: {column} = {text!r}; expected {kind}{empty}")
    return int(value) if integer else value


def _check_name(r: dict, where: str, known: dict[str, bool]) -> None:
    """Refuse a row whose role, family, sampler, grid or ending the benchmark never writes: a
    typo would otherwise be ranked, and its ``sample`` command fail or run something else.
    ``known`` caches, per sampler spec already checked, whether that sampler is adaptive."""
    role, family, sampler, grid = r["role"], r.get("family") or "", r["sampler"], r["grid"]
    if role not in ROLES:
        raise ValueError(f"{where}: role = {role!r}; expected one of {ROLES}")
    if (r.get("ending") or "") not in ("", *FID_ENDINGS):
        raise ValueError(f"{where}: ending = {r['ending']!r}; expected one of {FID_ENDINGS}")
    if role == "peer":
        peer = _PEER_SAMPLER.fullmatch(sampler)
        if family not in PEER_FAMILIES or not peer or peer["family"] != family:
            raise ValueError(
                f"{where}: peer sampler = {sampler!r} of family {family!r}; expected "
                f"'<family>:<method>' with the family column one of {PEER_FAMILIES}"
            )
        if not _PEER_GRID.fullmatch(grid):
            raise ValueError(f"{where}: peer grid = {grid!r}; expected linspace or karras(rho=R)")
        return
    if family not in ("", OURS):
        raise ValueError(f"{where}: family = {family!r} of a {role} row; expected {OURS!r}")
    if sampler not in known:
        try:
            key, options = split_spec(sampler)
            if key not in SAMPLERS:
                raise ValueError("unknown sampler")
            known[sampler] = get_sampler(key, **options).nfe(1) is None
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{where}: sampler = {sampler!r} ({err}); expected a key of scoresde.SAMPLERS, "
                "optionally with options as key:name=value,..."
            ) from None
    if (role == "adaptive") != known[sampler]:
        raise ValueError(
            f"{where}: sampler = {sampler!r} with role {role!r}; an adaptive sampler's rows have "
            "role 'adaptive', and only those"
        )
    if grid not in GRID_NAMES and not _DEFAULT_GRID.fullmatch(grid):
        raise ValueError(
            f"{where}: grid = {grid!r}; expected one of {list(GRID_NAMES)} or "
            "'default: <the sampler's default grid>'"
        )


def read_fid_table(table: str | Path | None) -> tuple[Path, list[dict], int]:
    """``(path, rows, failed)`` of a ``fid_vs_steps.tsv`` (by default the latest committed one):
    its rows with the numeric columns as ints or floats (``None`` where empty and allowed,
    ``fid_sd`` NaN), and the number of failed cells left out: rows without a FID whose ``note``
    holds the error that stopped them, as the benchmark writes them. Any other bad value raises
    ``ValueError`` naming the file, the line, the column, the value and what was expected."""
    table, raw = read_rows(table, "fid_vs_steps.tsv", _NEEDED)
    rows, failed, known, seen = [], 0, {}, {}
    for r in raw:
        where = f"{str(table)!r} line {r[LINE]}"
        _check_name(r, where, known)
        # one cell per (sampler, grid, ending, budget, seed): a repeated row would count as a seed
        cell = tuple(r.get(c) for c in ("role", "sampler", "grid", "ending", "nfe_budget", "seed"))
        if cell in seen:
            raise ValueError(f"{where} repeats the cell of line {seen[cell]} (the same role, "
                             "sampler, grid, ending, budget and seed)")  # fmt: skip
        seen[cell] = r[LINE]
        if r["fid"].lower() in ("", "nan") and (r.get("note") or "").strip():
            failed += 1
            continue
        r.update({column: _number(r, column, where) for column in _NUMBERS})
        r["fid_sd"] = math.nan if r["fid_sd"] is None else r["fid_sd"]
        rows.append(r)
    return table, rows, failed
