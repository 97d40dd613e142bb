"""The two caches of ``benchmarks/fid_vs_steps.py``, both in its result folder.

- ``fid_vs_steps.cells.jsonl``: one finished row per line, keyed by everything that determines
  it, so a stopped run resumes where it was (:func:`append_cell`, :func:`read_cells`).
- ``fid_cells/<hash>.npz``: the Inception features of each cell's generated images (float32
  ``(n, d)``, with the cell's measured NFE, its time and its key), keyed by everything that
  determines the samples but not the reference statistics, so re-scoring a table against other
  reference statistics, or redrawing it, never samples again (:func:`save_features`,
  :func:`load_features`). At ``n = 1000`` and 2048 features a file is about 8 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scoresde.metrics.fid import save_npz

__all__ = ["append_cell", "read_cells", "features_path", "save_features", "load_features"]


def append_cell(cache: Path, key: str, row: dict) -> None:
    """Append one finished cell, on a line of its own even after a torn last line, and fsync it."""
    with open(cache, "a+b") as f:
        torn = False
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps({"key": key, "row": row}) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def read_cells(cache: Path | None) -> dict[str, dict]:
    """The finished cells of a JSON-lines cache by key (the last one wins); a torn last line
    (a run killed while writing it) is skipped."""
    if cache is None or not Path(cache).exists():
        return {}
    done = {}
    for line in Path(cache).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[entry["key"]] = entry["row"]
    return done


def features_path(folder: Path, key: str) -> Path:
    """Where the features of the cell with (JSON) ``key`` live in ``folder``."""
    return Path(folder) / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def save_features(folder: Path, key: str, features: Tensor, nfe: int | None, time_s: float):
    """Write one cell's features atomically (:func:`scoresde.metrics.fid.save_npz`)."""
    return save_npz(
        features_path(folder, key),
        compressed=True,
        features=features.cpu().to(torch.float32).numpy(),
        nfe=-1 if nfe is None else nfe,
        time_s=time_s,
        key=key,
    )


def load_features(folder: Path | None, key: str) -> tuple[Tensor, int | None, float] | None:
    """``(features, nfe, time_s)`` of the cell with ``key``, or ``None`` when it has no file (or
    an unreadable one, or one written for another key)."""
    if folder is None:
        return None
    path = features_path(folder, key)
    try:
        with np.load(path) as f:
            if str(f["key"]) != key:
                return None
            nfe = int(f["nfe"])
            return torch.from_numpy(f["features"]), (None if nfe < 0 else nfe), float(f["time_s"])
    except (OSError, ValueError, KeyError):
        return None
