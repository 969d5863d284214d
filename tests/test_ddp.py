"""Two processes (gloo, CPU) train one model: every rank ends with identical parameters and the
same number of steps. Covers the DDP-wrapped forward (carry_hidden) and the manual gradient
all-reduce (full_context)."""
from __future__ import annotations

import os
import socket

import pytest
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---- issue 21: class-weighted losses, idle steps and frames/s over uneven ranks ----

def _phase_batch(rank: int):
    """Per-rank outputs' inputs and labels: rank 0 6 valid frames (one unlabelled), rank 1 2 valid
    of 6 (an idle-lane tail); phases skewed so median-frequency-like weights matter."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(200 + rank)
    x = torch.randn(1, 6, 4, generator=g)
    phase = torch.tensor([[0, 0, 0, 1, -1, 2]]) if rank == 0 else torch.tensor([[2, 1, 0, 0, 0, 0]])
    valid = torch.ones(1, 6, dtype=torch.bool) if rank == 0 else torch.arange(6)[None] < 2
    tools = (torch.rand(1, 6, 2, generator=g) > 0.5).float()
    return x, SimpleNamespace(phase=phase, valid=valid, tools=tools)


class _Outputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p, self.t = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)

    def forward(self, x):
        return {"phase": self.p(x), "tools": self.t(x)}


def _tasks():
    from surgflow.models.tasks import PhaseTask, ToolsTask

    return {"phase": PhaseTask(8, 3, weights=[0.4, 2.5, 1.3]), "tools": ToolsTask(8, 2)}


def _uneven_worker(rank: int, world: int, ports: list, root: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]),
                      SURGFLOW_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from types import SimpleNamespace

    from surgflow.config import load_config
    from surgflow.training import trainer as trainer_mod
    from surgflow.training.runtime import setup_runtime
    from surgflow.training.strategies import rank_weighted_loss

    cfg = load_config(None, ["train.device=cpu", "model.backbone=test_convnext", "task.tasks=[phase, tools]"])
    rt = setup_runtime(cfg)
    model = SimpleNamespace(tasks=_tasks())
    x, batch = _phase_batch(rank)
    grads = {}
    for mode in ("ddp", "manual", "frames"):
        torch.manual_seed(0)
        net = _Outputs()
        if mode == "frames":  # before: the whole loss weighted by the rank's share of valid frames
            o = net(x)
            sum(t.loss(o, batch)[n] for n, t in model.tasks.items()).backward()
            rt.all_reduce_gradients(net.parameters(), rt.frame_weight(int(batch.valid.sum())))
        elif mode == "ddp":  # carry_hidden / clips: DDP averages the weighted losses' gradients
            ddp = rt.wrap(net)  # held: its reducer averages the gradients in backward
            loss, _ = rank_weighted_loss(model, ddp(x), batch, rt)
            loss.backward()
        else:  # full_context / two_stage: the trainer averages the gradients itself
            loss, _ = rank_weighted_loss(model, net(x), batch, rt)
            loss.backward()
            rt.all_reduce_gradients(net.parameters())
        grads[mode] = torch.cat([p.grad.flatten() for p in net.parameters()])
    rt.close()

    # a real 2-rank run on videos of uneven length: per step (frames, loss) of each rank, and a
    # clock that reads 0 s at the epoch's start and 1 s ever after (the epoch takes one second)
    os.environ["MASTER_PORT"] = str(ports[1])
    readings = []
    trainer_mod.time = SimpleNamespace(
        perf_counter=lambda: readings.append(1) or float(len(readings) > 1))
    cfg = load_config(None, [
        f"data.root={root}", "data.split=all", "model.backbone=test_convnext", "model.hidden=8",
        "train.seq_len=6", "train.epochs=1", "train.lr=3e-3", "train.device=cpu",
        "train.log_every=0", "data.val_subset=", "data.augment=false"])
    t = trainer_mod.Trainer(cfg, f"{out}/run")
    steps = []
    inner = t.strategy.train_step

    def recorded(b):
        res = inner(b)
        steps.append((res.frames, res.loss))
        return res

    t.strategy.train_step = recorded
    t.fit()
    torch.save({"grads": grads, "steps": steps}, f"{out}/uneven-rank{rank}.pt")


@pytest.mark.slow
def test_class_weighted_gradient_idle_steps_and_frames_per_s(tiny_root, tmp_path):
    import csv

    world = 2
    mp.spawn(_uneven_worker, args=(world, [_free_port(), _free_port()], str(tiny_root),
                                   str(tmp_path)), nprocs=world, join=True)
    r = [torch.load(tmp_path / f"uneven-rank{i}.pt", weights_only=True) for i in range(world)]
    # reference: one process, both ranks' frames in one batch, the model's own loss
    from types import SimpleNamespace

    torch.manual_seed(0)
    net = _Outputs()
    xs, bs = zip(*(_phase_batch(i) for i in range(world)))
    both = SimpleNamespace(**{k: torch.cat([getattr(b, k) for b in bs]) for k in ("phase", "valid", "tools")})
    out = net(torch.cat(xs))
    sum(task.loss(out, both)[name] for name, task in _tasks().items()).backward()
    ref = torch.cat([p.grad.flatten() for p in net.parameters()])
    diffs = {(i, mode): float((r[i]["grads"][mode] - ref).abs().max())
             for i in range(world) for mode in ("ddp", "manual")}
    assert max(diffs.values()) < 1e-6, diffs
    # weighting by valid frames alone misses the class weights (the test can fail)
    assert float((r[0]["grads"]["frames"] - ref).abs().max()) > 1e-3

    # train/loss: the mean over all ranks' valid frames (an idle step is no loss of 0)
    steps = [s for i in range(world) for s in r[i]["steps"]]
    assert any(f == 0 for f, _ in steps), "precondition: a rank idles at the end of the epoch"
    frames = sum(f for f, _ in steps)
    expected = sum(f * loss for f, loss in steps) / frames
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["train/loss"]) == pytest.approx(expected, rel=1e-5)
    # frames/s: every rank's valid frames over the one-second epoch, not rank 0's x 2
    assert float(row["frames_per_s"]) == pytest.approx(frames, rel=1e-5)
    assert frames != 2 * sum(f for f, _ in r[0]["steps"])
