"""A task is a plugin (issue 22.1): a task registered from this file alone is trained, validated,
evaluated, scored and tabled with no change under surgflow/ (before, each of those named
"phase" / "tools" / "anticipation" in its own branches and ignored any other task)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from surgflow.evaluation import files, score
from surgflow.evaluation.per_video import format_per_video
from surgflow.models.tasks import Task
from surgflow.registry import TASKS

NAME = "frame_parity"


def _parity(batch) -> torch.Tensor:
    """1.0 where the frame index within its video is even: [B, T] (from Batch.starts)."""
    T = batch.valid.shape[1]
    index = batch.starts.to(batch.valid.device)[:, None] + torch.arange(T, device=batch.valid.device)
    return (index % 2 == 0).float()


class ParityEvaluation(score.TaskEvaluation):
    validation_metrics = ("val/parity_accuracy",)
    per_video_columns = ("accuracy",)

    def ground_truth(self, dataset, video, names):
        return {"gt_frame_parity": (np.arange(dataset.num_frames(video)) % 2 == 0).astype(np.float32)}

    def validation_record(self, task, outputs, decoded, labels):
        keep = labels.valid[0]
        return (task.target(labels)[0][keep].cpu().numpy(),
                decoded["frame_parity_prob"][0][keep].cpu().numpy())

    def validation_summary(self, task, records, names, wmae):
        hits = [((p > 0.5) == (g > 0.5)).mean() for g, p in records.values()]
        return {"val/parity_accuracy": float(np.mean(hits))} if hits else {}

    def write_files(self, rec, video, pred_dir, gt_dir, names):
        if "frame_parity_prob" in rec:
            files.write_table(pred_dir / f"{video}-frame_parity.txt", rec["frame_parity_prob"][:, None],
                              ["even"])
            files.write_table(gt_dir / f"{video}-frame_parity.txt", rec["gt_frame_parity"][:, None],
                              ["even"], fmt="{:.0f}")

    def score(self, preds, names, fps, label, non_causal, notes, relaxed=None, wmae="per_instrument"):
        if not all("frame_parity_prob" in r for r in preds.values()):
            return None
        videos = sorted(preds)
        hit = {v: ((preds[v]["frame_parity_prob"] > 0.5) == (preds[v]["gt_frame_parity"] > 0.5))
               for v in videos}
        protocol = {"task": NAME, "split": label, "videos": videos, "num_videos": len(videos),
                    "num_frames": sum(len(h) for h in hit.values()), "fps": fps, "notes": list(notes)}
        return {"task": NAME, "label": label, "protocol": protocol,
                "accuracy": 100.0 * float(np.concatenate(list(hit.values())).mean()),
                "per_video": {v: {"frames": len(h), "accuracy": 100.0 * float(h.mean())}
                              for v, h in hit.items()}}

    def table_lines(self, result):
        return [f"  parity accuracy {result['accuracy']:.2f}"]

    def write_predictions(self, rec, video, out_dir, names):
        if "frame_parity_prob" not in rec:
            return []
        path = out_dir / f"{video}-frame_parity.txt"
        files.write_table(path, rec["frame_parity_prob"][:, None], ["even"])
        return [path]

    score_help = "frame parity: accuracy of the even-frame flag"

    def add_score_arguments(self, parser):
        parser.add_argument("--gt", required=True, help="folder of <video>-frame_parity.txt files")

    def score_files(self, args, notes):
        """`surgflow score frame_parity --gt G --pred P`: the files write_files wrote."""
        preds = {}
        for path in sorted(Path(args.pred).glob("*-frame_parity.txt")):
            video = path.name[: -len("-frame_parity.txt")]
            pred = files.read_table(path, ["even"], "parity")[1][:, 0]
            gt = files.read_table(Path(args.gt) / path.name, ["even"], "parity")[1][:, 0]
            preds[video] = {"frame_parity_prob": pred, "gt_frame_parity": gt}
        return self.score(preds, None, args.fps or 1.0, args.label, False, notes), []


class FrameParityTask(Task):
    """Predicts whether the frame index is even; its labels come from the frame index."""
    name, output_keys = NAME, (NAME,)
    evaluation = ParityEvaluation()

    def __init__(self, in_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, 1)

    @classmethod
    def from_config(cls, in_dim, task_cfg, **_dims):
        return cls(in_dim)

    def target(self, batch):
        return _parity(batch)

    def forward(self, h):  # h [B, T, H]
        return {NAME: self.fc(h)[..., 0]}  # [B, T]

    def loss(self, outputs, batch):
        logits = outputs[NAME].float()
        bce = F.binary_cross_entropy_with_logits(logits, self.target(batch), reduction="none")
        valid = batch.valid.to(bce.dtype)
        return {NAME: (bce * valid).sum() / valid.sum().clamp_min(1.0)}

    def decode(self, outputs):
        return {"frame_parity_prob": outputs[NAME].float().sigmoid()}


@pytest.fixture
def parity_task():
    TASKS.register(NAME)(FrameParityTask)
    yield FrameParityTask
    TASKS.unregister(NAME)  # other tests must not see the toy


def test_a_task_registered_from_a_test_file_runs_end_to_end(parity_task, tiny_root, synthetic_raw,
                                                             tmp_path, capsys):
    from surgflow.config import load_config
    from surgflow.evaluation.runner import evaluate_run
    from surgflow.training.trainer import train
    from surgflow.training.validation import validation_metrics

    assert validation_metrics(["phase", NAME]) == ["val/loss", "val/accuracy", "val/f1",
                                                  "val/jaccard", "val/parity_accuracy"]
    cfg = load_config("synthetic_phase_tiny", [
        f"data.root={tiny_root}", "data.split=auto", "model.backbone=test_convnext",
        "model.hidden=16", "train.seq_len=8", "train.epochs=1", "train.device=cpu",
        "data.augment=false", "train.batch_size=1", f"task.tasks=[phase,{NAME}]"])
    run = tmp_path / "run"
    res = train(cfg, run)
    # trained and validated: its loss is logged per step and its validation metric per epoch
    assert NAME in res["train"] and "val/parity_accuracy" in res["val"]
    assert "val/parity_accuracy" in (run / "metrics.csv").read_text().splitlines()[0]

    ev = evaluate_run(run, split="test", plots=False, quiet=True)
    assert list(ev["scores"]) == ["phase", NAME]  # built-ins first, then plugins
    result = ev["scores"][NAME]
    assert 0.0 <= result["accuracy"] <= 100.0
    video = next(iter(ev["preds"]))
    assert (tmp_path / "run" / "eval_test" / "predictions" / f"{video}-frame_parity.txt").is_file()
    assert (tmp_path / "run" / "eval_test" / "ground_truth" / f"{video}-frame_parity.txt").is_file()
    saved = json.loads((run / "eval_test" / "scores.json").read_text())
    assert saved["scores"][NAME]["accuracy"] == pytest.approx(result["accuracy"])
    # the report: its rows in the eval text, its per-video tables beside the JSON
    assert f"[test] {NAME} scores:" in ev["text"] and "parity accuracy" in ev["text"]
    csv_rows = (run / "eval_test" / f"scores.{NAME}.per_video.csv").read_text().splitlines()
    assert csv_rows[0] == "video,frames,accuracy" and len(csv_rows) == 1 + len(ev["preds"])
    assert "[test] per video (percent)" in format_per_video(result)
    # the ground-truth file it wrote is the frame index's parity
    gt = files.read_table(run / "eval_test" / "ground_truth" / f"{video}-frame_parity.txt",
                          ["even"], "parity")[1][:, 0]
    assert list(gt[:4]) == [1.0, 0.0, 1.0, 0.0]

    # `surgflow score frame_parity` scores the files eval wrote, to the same number
    from surgflow.cli import main

    out = tmp_path / "parity.json"
    assert main(["score", NAME, "--gt", str(run / "eval_test" / "ground_truth"),
                 "--pred", str(run / "eval_test" / "predictions"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(result["accuracy"], abs=1e-4)
    assert main(["score", NAME, "--pred", "x"]) == 2  # its own required flag, from its own parser
    capsys.readouterr()
    assert main(["score"]) == 2  # no task: the message lists the plugin beside the built-ins
    assert f"phase, tools, anticipation, {NAME}" in capsys.readouterr().err

    # `surgflow view` shows its column beside the phase task's (per run and per video)
    import re

    assert main(["view", str(run), "--out", str(tmp_path / "view")]) == 0
    html = (tmp_path / "view" / "index.html").read_text()
    data = json.loads(re.search(r'id="surgflow-data">(.*?)</script>', html, re.S).group(1))
    labels = [c["label"] for c in data["runs"][0]["summary"]]
    assert labels == ["accuracy (%)", "F1 (%)", f"{NAME} accuracy (%)"]
    per_video = [result["per_video"][v]["accuracy"] for v in sorted(result["per_video"])]
    assert data["runs"][0]["summary"][2]["mean"] == pytest.approx(np.mean(per_video), abs=1e-3)
    shown = {v["name"]: v["runs"][0]["metrics"][2] for v in data["videos"]}
    assert shown == {v: pytest.approx(result["per_video"][v]["accuracy"], abs=0.06) for v in shown}

    # `surgflow predict` streams a video and writes its file: the offline eval's numbers
    test_video = sorted(ev["preds"])[0]
    stream = tmp_path / "stream"
    assert main(["predict", str(run / "checkpoints" / "best.pt"),
                 str(Path(synthetic_raw) / "videos" / f"{test_video}.mp4"), "--out", str(stream)]) == 0
    online = files.read_table(stream / f"{test_video}-frame_parity.txt", ["even"], "parity")[1][:, 0]
    offline = files.read_table(run / "eval_test" / "predictions" / f"{test_video}-frame_parity.txt",
                               ["even"], "parity")[1][:, 0]
    assert len(online) == len(offline) and np.allclose(online, offline, atol=2e-3)


def test_the_toy_task_is_gone_after_its_fixture():
    assert NAME not in TASKS


def test_tasks_build_from_their_own_section_and_keep_it():
    """Issue 22.4: a task is built from the Config's `task` section and keeps what it read there;
    its loss takes no config (before, loss() read cfg.task.horizon whenever a cfg was passed)."""
    import inspect

    from surgflow.config import from_dict
    from surgflow.models.tasks import AnticipationTask

    task_cfg = from_dict({"task": {"tasks": ["anticipation"], "horizon": 3.0,
                                   "anticipation_ce_weight": 0.5}}).task
    task = AnticipationTask.from_config(8, task_cfg, num_instruments=2)
    assert (task.horizon, task.ce_weight) == (3.0, 0.5)
    for name, cls in TASKS.items():
        assert list(inspect.signature(cls.loss).parameters) == ["self", "outputs", "batch"], name
