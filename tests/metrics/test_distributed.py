"""Sharded generation and feature extraction give the same result in 1 and 2 processes.

``torchrun --standalone --nproc_per_node=2`` with the gloo backend runs the generate -> features
-> FID pipeline of ``fid_helpers.pipeline`` on 2 CPU processes; every rank must return the
features of one process (all rows, in order) and the same FID. A tiny random TorchScript network
stands in for Inception (its cost would add minutes and nothing to what is tested: the sharding
is independent of the network). Each batch is computed from its global index with the same
batch composition and one thread in every process, so equality is exact: any tolerance would hide
a batch landing in the wrong place or being drawn from the wrong seed.
"""

import os
import subprocess
import sys

import torch

from tests.metrics.fid_helpers import REPO, pipeline, write_tiny_feature_net


def test_two_gloo_processes_reproduce_one_process(tmp_path):
    net = write_tiny_feature_net(tmp_path / "tiny.pt")
    single = pipeline(net)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests" / "metrics" / "dist_worker.py"),
        str(net),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["world"] == 2
        assert torch.equal(got["gen"], single["gen"]), f"rank {rank}: generated features differ"
        assert torch.equal(got["real"], single["real"]), f"rank {rank}: real features differ"
        assert got["fid"] == single["fid"], f"rank {rank}: FID {got['fid']} != {single['fid']}"
        # 37 images in batches of 5 are 8 batches, dealt round-robin: 4 batches (20 images) to
        # rank 0 and 4 (17 images) to rank 1; one process generated all 37
        assert got["generated_here"] == (20, 17)[rank], (
            f"rank {rank} generated {got['generated_here']}"
        )
    assert single["generated_here"] == 37
