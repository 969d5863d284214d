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


# ---- loss weighted by valid frames across ranks; validation spread over ranks ----

def _frames_data(rank: int):
    """Rank 0: 6 valid frames of 6; rank 1: 2 valid of 6 (idle-lane padding)."""
    g = torch.Generator().manual_seed(100 + rank)
    x, y = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    valid = torch.ones(6, dtype=torch.bool) if rank == 0 else torch.arange(6) < 2
    return x, y, valid


def _masked_mse(model, x, y, valid):
    err = (model(x).squeeze(-1) - y) ** 2
    return (err * valid).sum() / valid.sum().clamp_min(1)  # per-frame mean, as the task losses


def _weight_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), SURGFLOW_NO_PROGRESS="1",
                      HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from types import SimpleNamespace

    from surgflow.config import load_config
    from surgflow.data.store import PreparedDataset
    from surgflow.models.model import build_model
    from surgflow.training import validation
    from surgflow.training.runtime import setup_runtime
    from surgflow.training.strategies import Strategy

    cfg = load_config(None, ["train.device=cpu", "model.backbone=test_convnext", "model.hidden=16",
                             "train.seq_len=16"])
    rt = setup_runtime(cfg)
    x, y, valid = _frames_data(rank)
    grads = {}
    for mode in ("manual", "ddp", "unweighted"):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        weight = rt.frame_weight(int(valid.sum()))
        if mode == "manual":  # strategies without the DDP forward (full_context, two_stage)
            _masked_mse(model, x, y, valid).backward()
            rt.all_reduce_gradients(model.parameters(), weight)
        elif mode == "ddp":  # carry_hidden / clips: the loss is scaled before DDP's averaging
            ddp = rt.wrap(model)
            Strategy.backward(SimpleNamespace(loss_weight=weight), _masked_mse(ddp, x, y, valid))
        else:  # what it did before: every rank's mean counts the same
            _masked_mse(model, x, y, valid).backward()
            rt.all_reduce_gradients(model.parameters())
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])

    # validation: each rank runs its share of the videos, every rank gets all results
    ds = PreparedDataset(root, split="all").subset("train")
    torch.manual_seed(0)
    model = build_model(cfg, num_phases=len(ds.phase_names), size=tuple(ds.size))
    ran = []
    inner = validation._validate_videos
    validation._validate_videos = lambda m, d, videos, *a: ran.extend(videos) or inner(m, d, videos, *a)
    metrics = validation.validate(model, ds, cfg, rt, [])
    torch.save({"grads": grads, "ran": ran, "metrics": metrics, "videos": list(ds.videos)},
               f"{out}/weights-rank{rank}.pt")
    rt.close()


def test_loss_weighted_by_valid_frames_and_validation_spread(tiny_root, tmp_path):
    world = 2
    mp.spawn(_weight_worker, args=(world, _free_port(), str(tiny_root), str(tmp_path)),
             nprocs=world, join=True)
    r = [torch.load(tmp_path / f"weights-rank{i}.pt", weights_only=True) for i in range(world)]
    # reference: one process, the per-frame mean over the 8 valid frames of both ranks
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    xs, ys, vs = zip(*(_frames_data(i) for i in range(world)))
    _masked_mse(model, torch.cat(xs), torch.cat(ys), torch.cat(vs)).backward()
    ref = torch.cat([p.grad.flatten() for p in model.parameters()])
    for i in range(world):
        assert torch.allclose(r[i]["grads"]["manual"], ref, atol=1e-6), r[i]["grads"]["manual"]
        assert torch.allclose(r[i]["grads"]["ddp"], ref, atol=1e-6), r[i]["grads"]["ddp"]
        # the unweighted mean of the ranks' means is a different gradient (the test can fail)
        assert not torch.allclose(r[i]["grads"]["unweighted"], ref, atol=1e-3)
    # validation: disjoint halves of the videos, together all of them; identical metrics on
    # both ranks, equal to one process validating everything
    videos = r[0]["videos"]
    assert len(videos) == 4 and sorted(r[0]["ran"] + r[1]["ran"]) == sorted(videos)
    assert len(r[0]["ran"]) == len(r[1]["ran"]) == 2
    assert r[0]["metrics"] == r[1]["metrics"] and "val/f1" in r[0]["metrics"]
    from surgflow.config import load_config
    from surgflow.data.store import PreparedDataset
    from surgflow.models.model import build_model
    from surgflow.training.runtime import Runtime
    from surgflow.training.validation import validate

    cfg = load_config(None, ["train.device=cpu", "model.backbone=test_convnext", "model.hidden=16",
                             "train.seq_len=16"])
    ds = PreparedDataset(tiny_root, split="all").subset("train")
    torch.manual_seed(0)
    single = validate(build_model(cfg, num_phases=len(ds.phase_names), size=tuple(ds.size)), ds, cfg,
                      Runtime(device=torch.device("cpu")), [])
    assert single.keys() == r[0]["metrics"].keys()
    for k, v in single.items():
        assert abs(v - r[0]["metrics"][k]) < 1e-5, k
