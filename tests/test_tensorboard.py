"""TensorBoard of a run: validation F1/Jaccard, gradient norm, lr, the resolved config as text and
hparams, a phase ribbon per validation, and `surgflow eval`'s test scores in the same folder."""
from __future__ import annotations

import numpy as np

from surgflow.config import load_config
from surgflow.training.metrics_log import ribbon_image
from surgflow.training.trainer import train


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_ribbon_image_colours_gt_above_prediction():
    img = ribbon_image(np.array([0, 0, 1, -1]), np.array([0, 1, 1, 1]), 7, row=3)
    assert img.shape == (8, 4, 3) and img.dtype == np.uint8
    top, bottom = img[0], img[-1]
    assert (top[0] == bottom[0]).all() and not (top[1] == bottom[1]).all()  # 0/0 same, 0/1 differ
    assert (top[2] == bottom[2]).all() and (top[3] == 230).all()  # unlabelled: light grey


def test_tensorboard_tags_and_eval_scores(tiny_root, tmp_path):
    from surgflow.evaluation.runner import evaluate_run

    run = tmp_path / "run"
    cfg = load_config(None, [
        f"data.root={tiny_root}", "data.split=auto", "model.backbone=test_convnext",
        "model.hidden=16", "train.seq_len=16", "train.epochs=2", "train.lr=3e-3",
        "train.device=cpu", "train.log_every=1", "data.augment=false"])
    res = train(cfg, run)
    acc = _events(run)
    scalars = set(acc.Tags()["scalars"])
    for tag in ("val/accuracy", "val/f1", "val/jaccard", "val/loss", "train/grad_norm", "train/lr",
                "train/loss", "train/step_loss"):
        assert tag in scalars, tag
    f1 = [e.value for e in acc.Scalars("val/f1")]
    assert len(f1) == 2 and all(0.0 <= v <= 1.0 for v in f1)
    images = acc.Tags()["images"]
    assert images == ["val_ribbon/video03"], images  # the split's one validation video
    assert len(acc.Images("val_ribbon/video03")) == 2  # at each validation
    tensors = set(acc.Tags()["tensors"])
    assert "config/text_summary" in tensors
    assert "lr: 0.003" in acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins

    evaluate_run(run, split="test", plots=False, quiet=True)
    acc = _events(run)
    test_tags = [t for t in acc.Tags()["scalars"] if t.startswith("test/")]
    assert "test/phase/video/accuracy/mean" in test_tags, test_tags
    (ev,) = acc.Scalars("test/phase/video/accuracy/mean")
    assert ev.step == res["best_metric"]["step"] and 0.0 <= ev.value <= 100.0


def test_eval_of_a_read_only_run_skips_tensorboard_with_a_note(tmp_path, monkeypatch, capsys):
    """A colleague's run on a read-only share, evaluated with --out elsewhere: the TensorBoard hook
    cannot write RUN/tb; eval completes (exit 0) with a note instead of a traceback."""
    import errno
    import json
    import pathlib

    import torch.utils.tensorboard

    from _helpers import make_checkpoint
    from test_cli_conventions import _fake_store

    from surgflow.cli import main

    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    make_checkpoint(run / "checkpoints" / "best.pt", size=(32, 56), fps=1.0)
    _fake_store(monkeypatch, 1.0, (32, 56))
    tb = str(run / "tb")
    real_write, real_open = pathlib.Path.write_bytes, open

    def read_only(path, *a, **k):
        if str(path).startswith(tb):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_write(path, *a, **k)

    def writer(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", tb)

    monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", writer)
    out = tmp_path / "elsewhere"
    assert main(["eval", str(run), "--data-root", str(tmp_path / "store"), "--split", "train",
                 "--out", str(out), "--device", "cpu", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert f"note: cannot write to {tb} (Read-only file system)" in err, err
    assert "not added to the run's TensorBoard" in err, err
    assert json.loads((out / "scores.json").read_text())["scores"]["phase"]
