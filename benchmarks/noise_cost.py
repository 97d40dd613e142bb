r"""Per-step cost of the noise sources at an image-sized state.

Each source is bound to a ``UniformTime`` grid of a VP process and asked for the increment of
every step in order, as a sampler asks, on a ``(256, 3, 32, 32)`` float32 state with one torch
thread. Measured: milliseconds per step (best of ``--repeats`` passes over the grid, each with a
freshly bound source) and the number of state-sized normal draws per step made inside the
Brownian paths, counted at their generators (``GaussianNoise`` makes one plain draw per step,
which is not counted). The sources:

* ``gaussian``: ``GaussianNoise``, one fresh draw per step (the baseline of the ratio);
* ``brownian``: ``BrownianNoise`` (dyadic tree, ``tol=1e-7``), the same path at any step count;
* ``brownian_tol1e-5``: the same with ``tol=1e-5`` (leaves 100x wider, a shallower tree);
* ``torchsde_halfway``: ``torchsde.BrownianInterval(halfway_tree=True, tol=1e-7)``, the previous
  construction of ``BrownianNoise`` (timed over the first ``--old-steps`` steps only: it is slow);
* ``torchsde_query_split``: ``torchsde.BrownianInterval`` with its default query-point splitting
  and ``dt`` set to the step: cheap, but its path depends on the grid, so it does not give the
  same path at another step count (for reference only).

    python -m benchmarks.noise_cost          # ~1-2 min on one CPU thread

Writes ``noise_cost.tsv``, ``noise_cost.md`` and ``env_noise_cost.txt`` to
``benchmarks/results/<date>_<device>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torchsde
import torchsde._brownian.brownian_interval as torchsde_bi

import scoresde as S
import scoresde.noise as noise_module
from benchmarks.common import git_revision, result_dir, write_env, write_tsv

SHAPE = (256, 3, 32, 32)
COLUMNS = ["source", "n_steps", "steps_timed", "ms_per_step", "ratio_to_gaussian",
           "draws_per_step"]  # fmt: skip


class _Counter:
    """Counts calls of the draw functions of both Brownian implementations."""

    def __init__(self):
        self.n = 0
        self._dyadic, self._torchsde = noise_module._DyadicBrownian._draw, torchsde_bi._randn

    def __enter__(self):
        def dyadic(obj, *a):
            self.n += 1
            return self._dyadic(obj, *a)

        def interval(*a):
            self.n += 1
            return self._torchsde(*a)

        noise_module._DyadicBrownian._draw = dyadic
        torchsde_bi._randn = interval
        return self

    def __exit__(self, *exc):
        noise_module._DyadicBrownian._draw = self._dyadic
        torchsde_bi._randn = self._torchsde


class _Interval(S.NoiseSource):
    """A bare ``torchsde.BrownianInterval`` in reversed time, queried like ``BrownianNoise``."""

    def __init__(self, **options):
        self.options = options

    def bind(self, ts, like):
        opts = dict(self.options)
        if opts.pop("dt_from_grid", False):
            opts["dt"] = float(ts[0] - ts[1])
        self._bm = torchsde.BrownianInterval(
            t0=-float(ts[0]), t1=-float(ts[-1]), size=like.shape, dtype=like.dtype, entropy=0,
            **opts,
        )  # fmt: skip

    def __call__(self, t, t_next, like):
        return self._bm(-t, -t_next) / (t - t_next) ** 0.5


SOURCES = {
    "gaussian": lambda: S.GaussianNoise(torch.Generator().manual_seed(0)),
    "brownian": lambda: S.BrownianNoise(seed=0),
    "brownian_tol1e-5": lambda: S.BrownianNoise(seed=0, tol=1e-5),
    "torchsde_halfway": lambda: _Interval(halfway_tree=True, tol=1e-7),
    "torchsde_query_split": lambda: _Interval(dt_from_grid=True),
}


def time_source(make, ts: torch.Tensor, steps: int, repeats: int) -> tuple[float, float]:
    """(ms per step, draws per step) over the first ``steps`` steps of ``ts``."""
    like = torch.zeros(SHAPE)
    grid = ts.tolist()
    best, draws = float("inf"), 0.0
    for _ in range(repeats):
        noise = make()
        noise.bind(ts, like)
        with _Counter() as counter:
            start = time.perf_counter()
            for i in range(steps):
                noise(grid[i], grid[i + 1], like)
            elapsed = time.perf_counter() - start
        best = min(best, elapsed / steps)
        draws = counter.n / steps
    return 1e3 * best, draws


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 64, 100, 128, 200])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old-steps", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sha, start = git_revision(), time.perf_counter()
    sde = S.VPSDE()
    rows = []
    for n in args.steps:
        ts = S.UniformTime().grid(sde, n)
        base = None
        for name, make in SOURCES.items():
            steps = min(n, args.old_steps) if name == "torchsde_halfway" else n
            repeats = 1 if name == "torchsde_halfway" else args.repeats
            ms, draws = time_source(make, ts, steps, repeats)
            base = ms if name == "gaussian" else base
            rows.append({"source": name, "n_steps": n, "steps_timed": steps, "ms_per_step": ms,
                         "ratio_to_gaussian": ms / base, "draws_per_step": draws})  # fmt: skip
            print(f"{name:>22} n={n:4d}: {ms:8.2f} ms/step, {ms / base:5.1f}x, {draws:5.1f} draws")
    folder = result_dir("cpu", out=args.out)
    write_tsv(folder / "noise_cost.tsv", rows, COLUMNS)
    lines = [
        f"# Noise source cost per step, state {SHAPE} float32, one CPU thread",
        "",
        "| source | " + " | ".join(f"n={n}" for n in args.steps) + " |",
        "| --- | " + " | ".join("---" for _ in args.steps) + " |",
    ]
    for name in SOURCES:
        cells = [
            f"{r['ms_per_step']:.1f} ms ({r['ratio_to_gaussian']:.1f}x, {r['draws_per_step']:.1f})"
            for r in rows
            if r["source"] == name
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: ms per step (ratio to gaussian, state-sized normal draws per step inside "
        "the Brownian paths; gaussian's one plain draw per step is not counted).",
    ]
    (folder / "noise_cost.md").write_text("\n".join(lines) + "\n")
    write_env(folder, device="cpu", seeds={"seed": 0}, git_sha=sha, name="env_noise_cost.txt",
              extra={"wall_s": f"{time.perf_counter() - start:.0f}"})  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
