"""Issue 21, training side: nothing lost between a checkpoint and its metrics row, a resume on
re-prepared videos refused, eval of a live run, SIGTERM as a clean stop, unreadable last.pt as a
message, no false warning inside the first epoch, native BatchNorm never sees padding."""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from surgflow.cli import main
from surgflow.config import load_config, to_yaml
from surgflow.io_utils import SurgflowError
from surgflow.training import metrics_log
from surgflow.checkpoint_io import load_checkpoint, save_checkpoint
from surgflow.training.trainer import Trainer, train


def _cfg(root, *extra):
    return load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=8",
        "train.seq_len=16", "train.epochs=1", "train.lr=3e-3", "train.device=cpu",
        "train.deterministic=true", "data.augment=false", *extra])


def _rows(run) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        return {r["epoch"]: r for r in csv.DictReader(f)}


def _tb_steps(run, tag) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


@pytest.mark.parametrize("stop", ["kill", "disk_full"])
def test_stop_between_checkpoint_and_metrics_row_restores_the_row(tiny_root, tmp_path,
                                                                  monkeypatch, stop):
    straight = tmp_path / "straight"
    train(_cfg(tiny_root, "train.epochs=2"), straight)
    run = tmp_path / "run"
    real_write = metrics_log.MetricsLogger.write_row

    def stopped_at_row(self, row, step):
        if row["epoch"] == 1.0:  # last.pt of epoch 1 is written, its row not yet
            if stop == "kill":
                raise KeyboardInterrupt("killed between last.pt and metrics.csv")
            raise OSError(errno.ENOSPC, "No space left on device", str(self.csv_path))
        real_write(self, row, step)

    monkeypatch.setattr(metrics_log.MetricsLogger, "write_row", stopped_at_row)
    with pytest.raises(KeyboardInterrupt if stop == "kill" else SurgflowError):
        train(_cfg(tiny_root, "train.epochs=2"), run)
    monkeypatch.setattr(metrics_log.MetricsLogger, "write_row", real_write)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (run / "metrics.csv").exists()  # the row of epoch 1 was never written

    train(_cfg(tiny_root, "train.epochs=2"), run, resume=True)
    ra, rb = _rows(straight), _rows(run)
    assert list(rb) == ["1", "2"]  # epoch 1's row is back, before epoch 2's
    for key in ra["1"]:
        if key != "frames_per_s":  # deterministic run: the same numbers as without the stop
            assert ra["1"][key] == rb["1"][key], key
    step1 = int(rb["1"]["step"])
    log = (run / "log.txt").read_text()
    assert f"epoch 1 step {step1}: " in log and "restored from" in log
    assert step1 in _tb_steps(run, "val/accuracy") and step1 in _tb_steps(run, "train/loss")


def test_resume_on_reprepared_videos_is_refused(tiny_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    run = tmp_path / "run"
    train(_cfg(data, "train.max_steps=1"), run)
    # the same folder re-prepared: video01 (train) from another source, same name, same size
    m = json.loads((data / "manifest.json").read_text())
    m["videos"]["video01"]["checksum"] = "0" * 64
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SurgflowError, match=r"train videos video01: other content.*"
                                            r"--allow-data-change"):
        train(_cfg(data, "train.max_steps=2"), run, resume=True)
    res = train(_cfg(data, "train.max_steps=2"), run, resume=True, allow_data_change=True)
    assert res["step"] == 2
    assert "--allow-data-change: train videos video01" in (run / "log.txt").read_text()


def _run_with_best(tiny_root, tmp_path) -> Path:
    run = tmp_path / "run"
    train(_cfg(tiny_root, "train.max_steps=2"), run)  # validates at the stop: best.pt = last.pt
    return run


def test_eval_of_a_live_run_says_so_and_tolerates_the_best_write(tiny_root, tmp_path, capsys):
    from surgflow.evaluation.runner import evaluate_run
    from surgflow.outputs import FolderLock

    run = _run_with_best(tiny_root, tmp_path)
    ck = run / "checkpoints"
    last = load_checkpoint(ck / "last.pt")
    # the instant between the two writes of a new best: last.pt records it, best.pt is older
    save_checkpoint(ck / "best.pt", dict(last, step=last["step"] - 1))
    with FolderLock(run, "surgflow train"):  # this live process holds the run: still training
        res = evaluate_run(run, split="val", plots=False, out=tmp_path / "ev")
        err = capsys.readouterr().err
        assert f"best.pt (step {last['step'] - 1}" in err and "the run is live" in err
        assert "a newer best by now" in err
        notes = json.dumps(json.loads(Path(res["json"]).read_text()))
        assert "the run is live" in notes
        # no best.pt yet in a live run: the message says it is training, not that a write failed
        (ck / "best.pt").unlink()
        with pytest.raises(SurgflowError, match="still training .* no best.pt yet"):
            evaluate_run(run, split="val", plots=False, out=tmp_path / "ev2")
    # the same files without a live run: the interrupted write is reported as before
    save_checkpoint(ck / "best.pt", dict(last, step=last["step"] - 1))
    with pytest.raises(SurgflowError, match="write was interrupted"):
        evaluate_run(run, split="val", plots=False, out=tmp_path / "ev3")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_eval_uses_an_intact_best_beside_a_damaged_last(tiny_root, tmp_path, capsys, damage):
    from surgflow.evaluation.runner import evaluate_run

    run = _run_with_best(tiny_root, tmp_path)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:4000] if damage == "truncated" else b"")
    res = evaluate_run(run, split="val", plots=False, out=tmp_path / "ev")
    assert Path(res["json"]).is_file()
    err = capsys.readouterr().err
    assert "last.pt" in err and "best.pt could not be checked" in err


def _object_pickle(path):
    ck = load_checkpoint(path)
    ck["extra"] = Path("x")  # an object weights_only refuses
    torch.save(ck, path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "object"])
def test_resume_onto_unreadable_last_is_a_message(tiny_root, tmp_path, capsys, damage):
    run = tmp_path / "run"
    cfg = _cfg(tiny_root, "train.max_steps=1", "train.epochs=2")
    train(cfg, run)
    last = run / "checkpoints" / "last.pt"
    if damage == "object":
        _object_pickle(last)
    else:
        last.write_bytes(last.read_bytes()[:5000] if damage == "truncated" else b"")
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"--resume: checkpoint {last}" in err
    assert "copy it again" in err and "another --out" in err
    assert not (run / ".surgflow.lock").exists()


def test_resume_inside_the_first_epoch_warns_nothing(tiny_root, tmp_path, monkeypatch):
    run = tmp_path / "run"

    def killed(self, *a, **k):
        raise KeyboardInterrupt("killed before the first validation")

    monkeypatch.setattr(Trainer, "_end_of_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_root, "train.checkpoint_every=1"), run)
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["best"]["step"] is None
    train(_cfg(tiny_root, "train.checkpoint_every=1"), run, resume=True)
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "WARNING" not in log and "cannot be recovered" not in log
    assert (run / "checkpoints" / "best.pt").is_file()  # written by the first validation


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_resume_is_bit_exact(tiny_root, tmp_path):
    """A real `surgflow train` process gets SIGTERM mid-epoch: it writes last.pt at the next
    step, says so, releases the lock and exits 143; resumed, it ends where an uninterrupted run
    ends, bit for bit."""
    extra = ("train.val_every=1000", "train.log_every=1", "model.dropout=0.2", "data.augment=true")
    cfg = _cfg(tiny_root, "train.epochs=40", *extra)
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", SURGFLOW_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "surgflow.cli", "train", str(tmp_path / "c.yaml"),
                             "--out", str(run)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            log = run / "log.txt"
            if log.is_file() and "step 2:" in log.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM received: stopped at step" in out and "--resume" in out
    assert "Traceback" not in out
    (ckpts,) = [ln for ln in out.splitlines() if ln.startswith("checkpoints: ")]
    named = ckpts.split(": ", 1)[1].split()
    assert named and all(Path(p).is_file() for p in named), ckpts  # no best.pt before validation
    assert not (run / ".surgflow.lock").exists()
    assert not list(run.glob(".*.tmp")) and not list((run / "checkpoints").glob(".*.tmp"))
    k = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert k >= 2 and f"stopped at step {k} " in out

    # resumed to k + 3 steps vs one uninterrupted run of k + 3 steps
    n = f"train.max_steps={k + 3}"
    train(_cfg(tiny_root, "train.epochs=40", *extra, n), run, resume=True)
    train(_cfg(tiny_root, "train.epochs=40", *extra, n), tmp_path / "straight")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(run / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == k + 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(x[s], y[s]) for s in x)
    assert torch.equal(a["rng"][0]["generators"]["augment"], b["rng"][0]["generators"]["augment"])


def test_native_batchnorm_never_normalises_padding(tiny_root, tmp_path):
    bn = ("model.backbone=test_resnet", "model.norm=native")
    # lanes end their videos at different steps: padding would enter the batch statistics
    with pytest.raises(SurgflowError, match=r"train\.batch_size=2 .*BatchNorm.*frozen_bn or gn"):
        Trainer(_cfg(tiny_root, *bn, "train.batch_size=2"), tmp_path / "lanes")
    assert not (tmp_path / "lanes" / ".surgflow.lock").exists()
    Trainer(_cfg(tiny_root, "model.norm=gn", "model.backbone=test_resnet", "train.batch_size=2"),
            tmp_path / "gn").close()  # no batch statistics: accepted
    # one lane: a step without a valid frame (a rank's idle step under DDP) leaves the running
    # statistics as they are
    t = Trainer(_cfg(tiny_root, *bn), tmp_path / "one")
    try:
        batch = next(iter(t.strategy.batches(0)))
        batch.valid[:] = False
        batch.phase[:] = -1
        batch.videos = [""]
        layers = [m for m in t.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert layers and all(m.training for m in layers)
        before = [m.running_mean.clone() for m in layers]
        t.strategy.train_step(batch)
        assert all(torch.equal(b, m.running_mean) for b, m in zip(before, layers))
        assert all(m.training for m in layers)  # back in train mode for the next real step
        batch.valid[:] = True
        t.strategy.train_step(batch)  # a real step still updates them
        assert not all(torch.equal(b, m.running_mean) for b, m in zip(before, layers))
    finally:
        t.close()
