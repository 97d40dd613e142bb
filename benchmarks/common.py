"""Shared plumbing of the benchmark scripts: result folders, the environment record, TSV I/O."""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import math
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def device_label(device: str | torch.device = "cpu") -> str:
    """``cpu`` or ``cuda-<gpu name>`` with spaces and slashes removed, for folder names."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return "cuda-" + "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return device.type


def result_dir(
    device: str | torch.device = "cpu", *, suffix: str = "", out: str | Path | None = None
) -> Path:
    """``benchmarks/results/<YYYY-MM-DD>_<device><suffix>/`` (created), or ``out`` if given."""
    path = (
        Path(out)
        if out is not None
        else RESULTS / f"{_dt.date.today().isoformat()}_{device_label(device)}{suffix}"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    """``HEAD``'s SHA, with `` (uncommitted changes)`` when tracked files differ from it. Scripts
    take it when they start: a long run must not record commits made while it ran."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD") + (" (uncommitted changes)" if dirty else "")


def write_env(
    folder: Path,
    *,
    device: str | torch.device,
    seeds: dict,
    git_sha: str,
    extra: dict | None = None,
    name: str = "env.txt",
) -> Path:
    """Write the environment record: the git revision the run started from
    (:func:`git_revision`), the command, versions, device and seeds."""
    device = torch.device(device)
    lines = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            shlex.quote(a) for a in [Path(sys.executable).name, "-m", *_module_argv()]
        ),
        "git_sha": git_sha,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "diffusers": _version("diffusers"),
        "k-diffusion": _version("k-diffusion"),
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "cpu": f"{cpu_name()}; torch threads {torch.get_num_threads()}",
        "seeds": ", ".join(f"{k}={v}" for k, v in seeds.items()),
        **(extra or {}),
    }
    path = folder / name
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def _module_argv() -> list[str]:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return [spec.name if spec is not None else sys.argv[0], *sys.argv[1:]]


def write_tsv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Rows as a tab-separated table; floats in ``%.6g``, ``None`` and NaN as empty/``nan``."""

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.6g}"
        return str(v)

    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([fmt(row.get(c)) for c in columns])
    return path


def read_tsv(path: Path) -> list[dict]:
    """Rows of a table written by :func:`write_tsv`; numeric fields come back as int or float."""

    def parse(v: str):
        if v == "":
            return None
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as f:
        rows = csv.DictReader(f, delimiter="\t")
        # a ragged row's surplus fields stay a list under the key None, for the caller to refuse
        return [{k: parse(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]


NFE_TICKS = [5, 10, 20, 50, 100, 200, 500, 1000]


def nfe_axis(ax) -> None:
    """Log x axis with plain NFE labels at the usual budgets (no 4x10^0 minor labels)."""
    import matplotlib.ticker

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [t for t in NFE_TICKS if lo <= t <= hi]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def finite(v) -> bool:
    """A table cell holding a finite number (``read_tsv`` gives ``None`` or text otherwise)."""
    return isinstance(v, (int, float)) and math.isfinite(v)
