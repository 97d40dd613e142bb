"""Run :func:`tests.metrics.fid_helpers.pipeline` under ``torchrun`` with the gloo backend and
save each rank's result to ``OUT_DIR/rank{r}.pt``. Usage:
``torchrun --standalone --nproc_per_node=2 tests/metrics/dist_worker.py NET_FILE OUT_DIR``."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.metrics.fid_helpers import pipeline  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        result = pipeline(Path(sys.argv[1]))
        torch.save(
            {**result, "world": dist.get_world_size()},
            Path(sys.argv[2]) / f"rank{dist.get_rank()}.pt",
        )
    finally:
        dist.destroy_process_group()
