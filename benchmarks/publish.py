"""Copy the newest full benchmark tables into the package, where ``scoresde recommend`` reads
them after any install::

    python -m benchmarks.publish            # newest full run of each table
    python -m benchmarks.publish --run benchmarks/results/2026-11-23_cpu

Copies ``exact_error.tsv`` and ``fid_vs_steps.tsv`` with the ``env*.txt`` records beside them to
``scoresde/benchmark_results/<run folder>/`` and removes older packaged runs of the same table.
A ``--quick`` run is never published.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from benchmarks.common import REPO, RESULTS

PACKAGED = REPO / "scoresde" / "benchmark_results"
TABLES = {"exact_error.tsv": ("env.txt",), "fid_vs_steps.tsv": ("env_fid.txt",)}


def newest_full(name: str, results: Path = RESULTS) -> Path | None:
    """The newest ``name`` in a run folder of ``results`` that is not a ``_quick`` run."""
    runs = sorted(p for p in results.glob(f"*/{name}") if not p.parent.name.endswith("_quick"))
    return runs[-1] if runs else None


def publish(run: Path | None = None, packaged: Path = PACKAGED) -> list[Path]:
    """Copy each table (from ``run``, or the newest full run that has it) into ``packaged``;
    returns the files written."""
    written = []
    for name, envs in TABLES.items():
        src = (run / name) if run is not None else newest_full(name)
        if src is None or not src.is_file():
            continue
        if src.parent.name.endswith("_quick"):
            raise ValueError(f"{src} is a --quick run; publish a full one")
        for old in packaged.glob(f"*/{name}"):
            if old.parent.name != src.parent.name:
                old.unlink()
                for env in envs:
                    (old.parent / env).unlink(missing_ok=True)
                if not any(old.parent.iterdir()):
                    old.parent.rmdir()
        dest = packaged / src.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        for f in (name, *envs):
            if (src.parent / f).is_file():
                written.append(Path(shutil.copy2(src.parent / f, dest / f)))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.publish", description=__doc__)
    parser.add_argument("--run", type=Path, help="a run folder (default: the newest full runs)")
    args = parser.parse_args(argv)
    for path in publish(args.run):
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
