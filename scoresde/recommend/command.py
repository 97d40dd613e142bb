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
with the best peer (diffusers, k-diffusion) on the same budget and ending printed below, and
adaptive runs ranked at their measured NFE; without ``--problem`` that ranking is printed after
the exact-error one. Each ranking ends with how to sample with its own first choice.

The committed tables ship inside the package (``scoresde/benchmark_results/``), so the command
works from any install; in a source checkout the newest of those and of ``benchmarks/results``
is read. A ``--quick`` table or one missing problems is still ranked, but the first line of the
output says so.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys

from .exact_ranking import format_recommendation, recommend
from .fid_ranking import FID_ENDINGS, format_fid_recommendation, recommend_fid
from .tables import FID_PROBLEM, split_spec

__all__ = ["usage_lines", "add_recommend_parser"]

# what each ranking is of, in the lines that say how to sample with its first choice
IMAGE_MODEL = "the trained MNIST image model"
EXACT_PROBLEMS = "the exact Gaussian-mixture problems"

# how to build each grid of the tables, in Python and on the ``sample`` command line
_GRID_CODE = {
    "uniform_time": "S.UniformTime()",
    "uniform_lambda": "S.UniformLambda()",
    "karras": "S.Karras(7.0)",
    "quadratic": "S.Quadratic()",
}


# how the tables name an adaptive sampler's runs: its tolerance, or its defaults
_ADAPTIVE_GRID = re.compile(r"adaptive\((?:rtol=(?P<rtol>[0-9.e+-]+)|defaults)\)")


def usage_lines(
    sampler: str,
    grid: str,
    nfe: int,
    n_steps: int | None,
    *,
    denoise_final: bool = False,
    adaptive: bool = False,
) -> list[str]:
    """A copy-pasteable ``S.sample(...)`` line (``denoiser`` and ``shape`` are the user's) and
    the matching ``python -m scoresde sample`` command for one ranked (sampler, grid); a grid
    named ``default: ...`` is the sampler's own, which both use when none is given. An adaptive
    run (``adaptive``, or an exact-error grid named ``adaptive(...)``) picks its own steps, so
    it gets no grid and no NFE, and the table's tolerances as options."""
    key, options = split_spec(sampler)
    tolerances = _ADAPTIVE_GRID.fullmatch(grid)
    adaptive = adaptive or tolerances is not None
    if tolerances and tolerances["rtol"]:  # as benchmarks/exact_error.py runs it: atol = rtol/100
        rtol = float(tolerances["rtol"])
        options = {**options, "rtol": rtol, "atol": rtol / 100}
    if options:  # a table row run with options (``key:option=value,...``)
        args = "".join(f", {k}={v!r}" for k, v in options.items())
        sampler_code = f'S.get_sampler("{key}"{args})'
        sampler_arg = shlex.quote(json.dumps({"name": key, "options": options}))
    else:
        sampler_code, sampler_arg = f'"{key}"', key
    final_code = ", denoise_final=True" if denoise_final else ""
    final_arg = " --denoise-final" if denoise_final else ""
    command = f"  python -m scoresde sample --ckpt CHECKPOINT.pt --sampler {sampler_arg}"
    if adaptive:
        return [
            f"  x = S.sample({sampler_code}, denoiser, shape=shape{final_code}).x",
            f"{command}{final_arg} --out samples.png",
        ]
    default = grid.startswith("default")
    code = _GRID_CODE.get(grid)
    if grid == "optimized":
        code = f"S.Optimized({sampler_code}, denoiser, shape=(16, *shape[1:]))"
    grid_arg, note = (f", grid={code}", "") if code else ("", f"  # on the benchmark's {grid!r}")
    if default:
        note = ""
    steps = f", n_steps={n_steps}" if n_steps is not None else ""
    grid_flag = "" if default else f" --grid {grid}"
    return [
        f"  x = S.sample({sampler_code}, denoiser, shape=shape{grid_arg}{steps}{final_code}).x{note}",
        f"{command}{grid_flag} --nfe {nfe}{final_arg} --out samples.png",
    ]


def _usage(result: dict, applies_to: str) -> str:
    """The lines that end a ranking: how to sample with its first choice, saying what that
    choice was ranked on, so that two rankings printed together are never confused."""
    if not result["ranking"]:
        return ""
    top = result["ranking"][0]
    final = result.get("ending") == "denoise_final"
    title = f"to sample with the first on {applies_to} ({top['sampler']}, grid {top['grid']}"
    title += f", ending {result['ending']}):" if "ending" in result else "):"
    lines = usage_lines(top["sampler"], top["grid"], top["nfe"], top["n_steps"],
                        denoise_final=final, adaptive=top.get("adaptive", False))  # fmt: skip
    return "\n".join(["", "", title, *lines])


def _check_options(args: argparse.Namespace) -> None:
    """Refuse an option the asked-for ranking would ignore: --table and --ending belong to one
    table each, and silently dropping one would answer another question than the user's."""
    if args.problem == FID_PROBLEM and args.table is not None:
        raise ValueError(
            f"--table {args.table!r} is an exact-error table, which --problem {FID_PROBLEM} does "
            "not read; pass a fid_vs_steps.tsv as --fid-table"
        )
    if args.problem not in (None, FID_PROBLEM):
        for flag, value in (("--fid-table", args.fid_table), ("--ending", args.ending)):
            if value is not None:
                raise ValueError(
                    f"{flag} {value!r} applies to the FID ranking, which --problem "
                    f"{args.problem} does not print; use --problem {FID_PROBLEM} or no --problem"
                )


def _run(args: argparse.Namespace) -> int:
    try:
        _check_options(args)
        if args.problem == FID_PROBLEM:
            fid = recommend_fid(args.nfe, table=args.fid_table, top=args.top, ending=args.ending)
            print(format_fid_recommendation(fid) + _usage(fid, IMAGE_MODEL))
            return 0
        result = recommend(args.nfe, args.problem, table=args.table, top=args.top)
        text = format_recommendation(result) + _usage(result, EXACT_PROBLEMS)
        if args.problem is None:
            try:
                fid = recommend_fid(args.nfe, table=args.fid_table, top=args.top,
                                    ending=args.ending)  # fmt: skip
                text += "\n\n" + format_fid_recommendation(fid) + _usage(fid, IMAGE_MODEL)
            except (FileNotFoundError, ValueError) as err:
                if args.fid_table is not None:
                    raise
                # the exact ranking stands alone, but the user learns why no FID one follows
                text += f"\n\nno ranking on {IMAGE_MODEL}: {err}"
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
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
