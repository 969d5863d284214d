"""Multi-node launch on one machine: two `torchrun --nnodes 2 --nproc_per_node 1` agents meet
through a c10d rendezvous on 127.0.0.1 and train one run with gloo (what two hosts would do)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_torchrun_c10d_gloo(tiny_root, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", SURGFLOW_NO_PROGRESS="1")
    port = _free_port()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"data: {{root: '{tiny_root}', split: all, val_subset: '', augment: false}}\n"
                   "model: {backbone: test_convnext, hidden: 8}\n"
                   "train: {seq_len: 8, max_steps: 2, device: cpu, lr: 0.001}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "surgflow-test",
           "--max_restarts", "0", "-m", "surgflow", "train", str(cfg), "--out", str(out)]
    agents = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=tmp_path) for _ in range(2)]  # node 1, node 2
    logs = []
    for a in agents:
        try:
            logs.append(a.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for b in agents:
                b.kill()
            raise
    assert all(a.returncode == 0 for a in agents), "\n".join(logs)[-4000:]
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == 2
    assert "rank 0 of 2" in (out / "log.txt").read_text()
