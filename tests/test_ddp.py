"""Two processes (gloo, CPU) train one model: every rank ends with identical parameters and the
same number of steps. Covers the DDP-wrapped forward (carry_hidden) and the manual gradient
all-reduce (full_context)."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, ports: list, root: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", SURGFLOW_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from surgflow.config import load_config
    from surgflow.training.trainer import Trainer

    for port, strategy in zip(ports, ("carry_hidden", "full_context")):
        os.environ["MASTER_PORT"] = str(port)
        cfg = load_config(None, [
            f"data.root={root}", "data.split=all", "model.backbone=test_convnext",
            "model.hidden=16", "train.seq_len=16", "train.epochs=1", "train.max_steps=3",
            "train.lr=3e-3", "train.device=cpu", f"train.strategy={strategy}",
            "train.micro_batch=8", "data.val_subset="])
        t = Trainer(cfg, f"{out}/{strategy}")
        res = t.fit()
        torch.save({"step": res["step"], "model": t.model.state_dict()},
                   f"{out}/{strategy}-rank{rank}.pt")


def test_two_process_gloo_ranks_agree(tiny_root, tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, [_free_port(), _free_port()], str(tiny_root), str(tmp_path)),
             nprocs=world, join=True)
    for strategy in ("carry_hidden", "full_context"):
        r0 = torch.load(tmp_path / f"{strategy}-rank0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"{strategy}-rank1.pt", weights_only=True)
        assert r0["step"] == r1["step"] == 3
        for k in r0["model"]:
            assert torch.equal(r0["model"][k], r1["model"][k]), f"{strategy}: {k} differs between ranks"
        # the model moved away from its initialisation (gradients were applied)
        ck = torch.load(tmp_path / strategy / "checkpoints" / "last.pt", weights_only=True)
        assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == 3
        assert all(torch.equal(ck["model"][k], r0["model"][k]) for k in r0["model"])
