"""The committed benchmark tables ``scoresde recommend`` ranks from: where they are
(:func:`latest_table`), whether one is a full run (:func:`partial_reasons`), and their rows
(:func:`read_rows`, :func:`read_table`)."""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

__all__ = [
    "PACKAGED",
    "RESULTS",
    "OURS",
    "FULL_PROBLEMS",
    "latest_table",
    "partial_reasons",
    "LINE",
    "FID_PROBLEM",
    "read_rows",
    "read_table",
    "check_budget",
    "budget_note",
    "int_or_none",
    "ranked_heads",
    "banner",
    "split_spec",
]

# the tables shipped with the package (copies of benchmarks/results/<run>/, see
# benchmarks/publish.py), and the benchmarks' own output folder when run from a source checkout
PACKAGED = Path(__file__).resolve().parents[1] / "benchmark_results"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
OURS = "scoresde"
SCRIPTS = {"exact_error.tsv": "exact_error", "fid_vs_steps.tsv": "fid_vs_steps"}
FLAGS = {"exact_error.tsv": "--table", "fid_vs_steps.tsv": "--fid-table"}
# the key under which :func:`read_rows` keeps each row's line in the file, for error messages
LINE = "line"
# the ``--problem`` that ranks by the FID table instead of the exact-error one
FID_PROBLEM = "mnist_fid"
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


def read_rows(table: str | Path | None, name: str, needed: set[str]) -> tuple[Path, list[dict]]:
    """``(path, rows)`` of a TSV table expected to be a ``name`` (``exact_error.tsv`` or
    ``fid_vs_steps.tsv``; by default the :func:`latest_table` of that name), each row's values
    as strings and its line in the file under ``LINE``. Raises ``ValueError`` naming the option
    that gave the table (``--table`` / ``--fid-table``) for a path that is no such table, and
    the line of a row whose field count differs from the header's."""
    flag, script = FLAGS[name], f"benchmarks/{SCRIPTS[name]}.py"
    table = latest_table(name=name) if table is None else Path(table)
    if table.is_dir():
        try:  # the folder's own table, else the newest of its run folders
            inside = table / name if (table / name).is_file() else latest_table(table, name)
            hint = f"; did you mean {str(inside)!r}?"
        except FileNotFoundError:
            hint = ""
        raise ValueError(f"{flag} {str(table)!r} is a folder; expected a {name}{hint}")
    if not table.is_file():
        raise FileNotFoundError(f"{flag} {str(table)!r} is not a file; expected a {name}")
    prefix = f"{flag} {str(table)!r} is not a table of {script}"
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's BOM
            reader = csv.DictReader(f, delimiter="\t")
            rows = [{**r, LINE: reader.line_num} for r in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{prefix}: {err}") from None
    if not rows:
        raise ValueError(f"{prefix}: it has no rows")
    if not needed <= set(rows[0]):
        raise ValueError(f"{prefix}; it lacks {sorted(needed - set(rows[0]))}")
    header = len(reader.fieldnames)
    repeated = sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})
    if repeated:  # DictReader would keep the last of them silently
        raise ValueError(f"{prefix}: its header repeats the column(s) {repeated}")
    for r in rows:  # DictReader files surplus fields under None and fills missing ones with None
        if None in r or None in r.values():
            fields = header + len(r.get(None, [])) - sum(v is None for v in r.values())
            raise ValueError(
                f"{str(table)!r} line {r[LINE]}: {fields} fields; expected {header}, as the header"
            )
    return table, rows


def read_table(
    table: str | Path | None, name: str, needed: set[str], value: str
) -> tuple[Path, list[dict]]:
    """``(path, rows)`` of :func:`read_rows`: the rows with finite ``nfe`` and ``value`` (as
    floats)."""

    def num(v: str):
        try:
            return float(v) if v not in ("", None) else math.nan
        except ValueError:
            return math.nan

    table, rows = read_rows(table, name, needed)
    for r in rows:
        r["nfe"], r[value] = num(r["nfe"]), num(r[value])
    return table, [r for r in rows if math.isfinite(r["nfe"]) and math.isfinite(r[value])]


def check_budget(nfe: int, rows: list[dict], table: Path) -> None:
    """Refuse a budget below the smallest measured NFE of ``rows``: nothing would fit it."""
    smallest = min((r["nfe"] for r in rows), default=math.inf)
    if nfe < smallest:
        raise ValueError(
            f"nfe={nfe} is below the smallest budget in {str(table)!r} ({smallest:g} NFE)"
        )


def budget_note(nfe: int, rows: list[dict]) -> list[str]:
    """One line when ``nfe`` is above every fixed budget (``nfe_budget``) of ``rows``: asking
    for more than the table measured is allowed, but the user should know it."""
    budgets = [b for r in rows if (b := int_or_none(r.get("nfe_budget"))) is not None]
    if budgets and nfe > max(budgets):
        return [
            f"note: the table's largest budget is {max(budgets)} NFE, below the {nfe} asked for"
        ]
    return []


def int_or_none(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def ranked_heads(ranking: list[dict]) -> list[str]:
    """``"  i. sampler  grid=grid"`` of each ranked entry, the columns as wide as their longest
    value so that long names (``dpm_solver_pp_2s_ancestral``) keep the ranking aligned."""
    number = len(str(len(ranking)))
    width = {k: max((len(r[k]) for r in ranking), default=0) for k in ("sampler", "grid")}
    return [f"  {i:>{number}}. {r['sampler']:<{width['sampler']}}  grid={r['grid']:<{width['grid']}}"
            for i, r in enumerate(ranking, 1)]  # fmt: skip


def banner(partial: list[str]) -> list[str]:
    if not partial:
        return []
    return [f"WARNING: partial benchmark table ({'; '.join(partial)}); this ranking is not the "
            "full benchmark's"]  # fmt: skip


def split_spec(spec: str) -> tuple[str, dict]:
    """``(key, options)`` of a table's sampler name: a registry key, or ``key:option=value,...``
    with Python literals as values (a bare word is a string: ``restart:solver=unipc``), as
    ``benchmarks/fid_vs_steps.py --samplers`` writes them. Raises ``ValueError`` naming the
    spec for an option without ``=``."""
    key, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"sampler spec {spec!r}: option {item!r} must be name=value")
        try:
            options[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[name.strip()] = value.strip()
    return key, options
