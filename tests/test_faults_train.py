"""Issue 10, runs side: best.pt never lost, one run per directory, resolved data root and its
override, resume on other data refused, and messages instead of tracebacks."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from surgflow.checkpoint_io import best_problem, load_checkpoint, save_checkpoint
from surgflow.cli import main
from surgflow.config import load_config
from surgflow.io_utils import SurgflowError
from surgflow.runs import load_model, resolve_checkpoint_path
from surgflow.training import checkpoint as trainer_mod  # the module whose save_checkpoint writes
from surgflow.training.trainer import train


def _cfg(root, *extra):
    return load_config(None, [
        f"data.root={root}", "data.split=auto", "model.backbone=test_convnext", "model.hidden=8",
        "train.seq_len=16", "train.epochs=1", "train.lr=3e-3", "train.device=cpu",
        "data.augment=false", *extra])


def test_kill_during_best_write_loses_nothing(tiny_root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = trainer_mod.save_checkpoint

    def killed_at_best(path, ckpt):
        if path.name == "best.pt":
            raise KeyboardInterrupt("killed while writing best.pt")  # last.pt is already written
        real(path, ckpt)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", killed_at_best)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_root), run)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["best"]["step"] == last["step"] and not (run / "checkpoints" / "best.pt").exists()
    # eval never falls back to last.pt silently: it refuses and names --checkpoint last
    with pytest.raises(SurgflowError, match=r"best\.pt is missing.*--checkpoint last.*--resume"):
        resolve_checkpoint_path(run, "best")
    assert main(["eval", str(run), "--no-plots"]) == 2
    assert "--checkpoint last" in capsys.readouterr().err
    assert resolve_checkpoint_path(run, "last") == run / "checkpoints" / "last.pt"
    # a resume (here: nothing left to train) restores best.pt from last.pt, which is the best
    train(_cfg(tiny_root), run, resume=True)
    assert "rewrote best.pt from last.pt" in (run / "log.txt").read_text()
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == last["best"]["step"] and best_problem(run / "checkpoints") is None
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    # a best.pt older than the best recorded in last.pt (interrupted second best write) is caught
    stale = dict(best, step=best["step"] - 1)
    save_checkpoint(run / "checkpoints" / "best.pt", stale)
    with pytest.raises(SurgflowError, match=r"holds step \d+, but .* records the best at step"):
        load_model(run)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_one_run_per_dir_stale_lock_and_partial_files(tiny_root, tmp_path):
    from surgflow.outputs import LOCK_NAME, FolderLock

    run = tmp_path / "run"
    with FolderLock(run, "surgflow train"):  # a live run holds the directory
        with pytest.raises(SurgflowError, match=r"in use by surgflow train \(pid \d+"):
            train(_cfg(tiny_root, "train.max_steps=1"), run)
        assert not (run / "checkpoints").exists()  # the refused run wrote nothing
    # a killed run left its lock (dead pid) and partial checkpoint temp files behind
    (run / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename,
                                             "command": "surgflow train"}))
    (run / "checkpoints").mkdir()
    for i in range(3):
        (run / "checkpoints" / f".last.pt.k{i}.tmp").write_bytes(b"\0" * 100_000)
    train(_cfg(tiny_root, "train.max_steps=1"), run)
    log = (run / "log.txt").read_text()
    assert "removed the stale lock" in log and "removed 3 partial file(s)" in log
    assert not list((run / "checkpoints").glob(".*.tmp")) and not (run / LOCK_NAME).exists()


def _copy(src, dst, phases=None):
    shutil.copytree(src, dst)
    if phases is not None:
        m = json.loads((dst / "manifest.json").read_text())
        m["phase_names"] = m["phase_names"] + phases
        (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_data_root_resolved_moved_and_resume_on_other_data(tiny_root, prepared_synthetic,
                                                           tmp_path, monkeypatch, capsys):
    data = _copy(tiny_root, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train(_cfg("data", "train.max_steps=1"), run)  # relative data.root
    monkeypatch.chdir(run)  # eval from another folder
    assert load_config(run / "config.yaml").data.root == str(data.resolve())
    assert load_checkpoint(run / "checkpoints" / "last.pt")["meta"]["dataset_root"] == str(data.resolve())

    moved = tmp_path / "moved"
    data.rename(moved)
    assert main(["eval", str(run), "--checkpoint", "last", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "gone or moved; pass --data-root" in err
    assert main(["eval", str(run), "--checkpoint", "last", "--no-plots", "--data-root",
                 str(moved), "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "scores.json").is_file()
    (tmp_path / "afile").write_text("x")
    assert main(["eval", str(run), "--checkpoint", "last", "--data-root", str(moved), "--out",
                 str(tmp_path / "afile" / "ev")]) == 2
    assert "--out cannot write to evaluation folder" in capsys.readouterr().err

    # --resume on other data: refused unless --allow-data-change
    with pytest.raises(SurgflowError, match=r"dataset_root: .*--allow-data-change"):
        train(_cfg(moved, "train.max_steps=2"), run, resume=True)
    with pytest.raises(SurgflowError, match=r"size: \[32, 56\] \(checkpoint\) vs \[64, 112\]"):
        train(_cfg(prepared_synthetic, "train.max_steps=2"), run, resume=True)
    res = train(_cfg(moved, "train.max_steps=2"), run, resume=True, allow_data_change=True)
    assert res["step"] == 2
    # a model shape that cannot hold the weights is refused even then
    more = _copy(moved, tmp_path / "more", phases=["Extra"])
    with pytest.raises(SurgflowError, match=r"do not fit the model.*\[7, 8\] vs model \[8, 8\]|do not fit"):
        train(_cfg(more, "train.max_steps=3"), run, resume=True, allow_data_change=True)


def test_disk_full_during_training_is_a_message(tiny_root, tmp_path, monkeypatch):
    def full(path, ckpt):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(trainer_mod, "save_checkpoint", full)
    with pytest.raises(SurgflowError, match=r"disk full while writing .*last\.pt.*--resume"):
        train(_cfg(tiny_root, "train.max_steps=1"), tmp_path / "run")
    assert not (tmp_path / "run" / ".surgflow.lock").exists()  # released on the way out


def test_weights_not_fitting_config_is_a_message(tmp_path):
    from _helpers import make_checkpoint

    path = make_checkpoint(tmp_path / "m.pt")
    ck = torch.load(path, weights_only=True)
    key = next(k for k, v in ck["model"].items() if v.ndim == 2)
    ck["model"][key] = torch.zeros(ck["model"][key].shape[0] + 1, ck["model"][key].shape[1])
    torch.save(ck, path)
    with pytest.raises(SurgflowError, match=rf"weights do not fit.*{key}: checkpoint"):
        load_model(path)


def test_output_paths_and_flags_refused_before_work(tiny_root, synthetic_raw, tmp_path, capsys,
                                                    monkeypatch):
    from _helpers import make_checkpoint
    from surgflow.online import export as export_mod

    ckpt = make_checkpoint(tmp_path / "m.pt")
    afile = tmp_path / "afile"
    afile.write_text("x")
    video = tmp_path / "v.mp4"
    shutil.copy(synthetic_raw / "videos" / "video01.mp4", video)

    def rc_err(argv):
        rc = main(argv)
        return rc, capsys.readouterr().err

    cfg_yaml = tmp_path / "c.yaml"
    cfg_yaml.write_text(f"data:\n  root: {tiny_root}\nmodel:\n  backbone: test_convnext\n")
    rc, err = rc_err(["train", str(cfg_yaml), "--out", str(afile / "run")])
    assert rc == 2 and "--out cannot write to run directory" in err and "afile" in err
    rc, err = rc_err(["predict", str(ckpt), str(video), "--out", str(afile)])
    assert rc == 2 and "--out cannot write to prediction folder" in err
    rc, err = rc_err(["predict", str(ckpt), str(video), "--out", str(tmp_path / "p"),
                      "--render", str(tmp_path)])
    assert rc == 2 and "--render" in err and "is a folder" in err
    rc, err = rc_err(["predict", str(ckpt), str(video), "--fps", "0"])
    assert rc == 2 and "--fps 0: must be > 0" in err
    rc, err = rc_err(["eval", str(ckpt), "--chunk", "0"])
    assert rc == 2 and "--chunk 0: must be >= 1" in err

    def no_export(*a, **k):
        raise AssertionError("export ran before its output path was checked")

    monkeypatch.setattr(export_mod, "export_onnx", no_export)
    rc, err = rc_err(["export", str(ckpt), "--onnx", str(afile / "m.onnx")])
    assert rc == 2 and "--onnx" in err and "afile" in err
