r"""The sampling noise of FID at a cell's sample size, by a bootstrap over its kept features.

Each cell of :mod:`benchmarks.fid_vs_steps` keeps its generated Inception features in
``<folder>/fid_cells/<hash>.npz``. For each of them this script redraws the ``n`` feature rows
with replacement ``--reps`` times and scores every redraw against the reference statistics, so
the spread of the redraws estimates how far FID moves when another ``n`` samples are drawn
(Efron & Tibshirani 1993, ch. 6). A redraw repeats rows, which biases its FID upwards; only the
spread is read, not the level.

    python -m benchmarks.fid_bootstrap benchmarks/results/<date>_cpu \
        --reference benchmarks/cache/mnist-train-10000.npz

Writes ``fid_bootstrap.md`` in the folder: per cell, its FID, the redraws' mean and standard
deviation.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scoresde.metrics import FeatureStats, fid


def bootstrap_fid(
    features: np.ndarray, reference: FeatureStats, *, reps: int, seed: int = 0
) -> np.ndarray:
    """FID of ``reps`` redraws (with replacement) of the rows of ``features`` ``(n, d)``."""
    rng = np.random.default_rng(seed)
    n = len(features)
    return np.array(
        [fid(FeatureStats.of(features[rng.integers(0, n, n)]), reference) for _ in range(reps)]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fid_bootstrap", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folder", type=Path, help="a fid_vs_steps result folder")
    parser.add_argument("--reference", type=Path, required=True, help="reference statistics .npz")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--cells", type=int, default=3, help="how many kept cells (default 3)")
    parser.add_argument("--samplers", nargs="+", help="only the cells of these samplers")
    parser.add_argument("--nfe", type=int, help="only the cells of this NFE budget")
    args = parser.parse_args(argv)

    reference, _ = FeatureStats.load(args.reference)
    chosen = []
    for path in sorted((args.folder / "fid_cells").glob("*.npz")):
        with np.load(path) as kept:
            key = json.loads(str(kept["key"]))
        if (not args.samplers or key.get("sampler") in args.samplers) and (
            args.nfe is None or key.get("nfe_budget") == args.nfe
        ):
            chosen.append(path)
    files = chosen[: args.cells]
    if not files:
        raise SystemExit(f"no kept features chosen in {str(args.folder / 'fid_cells')!r}")
    lines = [
        f"Bootstrap over each cell's features ({args.reps} redraws), against "
        f"`{args.reference.name}`.",
        "",
        "| cell | n | FID | redraws: mean | redraws: sd |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path in files:
        with np.load(path) as kept:
            features, key = kept["features"], json.loads(str(kept["key"]))
        values = bootstrap_fid(features, reference, reps=args.reps)
        label = f"{key.get('sampler')} {key.get('grid')} NFE<={key.get('nfe_budget')}"
        lines.append(
            f"| {label} | {len(features)} | {fid(FeatureStats.of(features), reference):.2f} | "
            f"{values.mean():.2f} | {values.std(ddof=1):.2f} |"
        )
        print(lines[-1], flush=True)
    (args.folder / "fid_bootstrap.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
