"""Issue 11 golden tests: scoring that cannot be misread (rates recorded or refused, horizon,
exact anticipation boundaries, wMAE conventions, clipping, --videos, per-video tables)."""
import csv
import json

import numpy as np
import pytest

from surgflow.cli import main
from surgflow.evaluation import anticipation_metrics as am, files, runner, score
from surgflow.io_utils import SurgflowError
from surgflow.labels import CHOLEC80_PHASES, CHOLEC80_TOOLS


def _tools_file(path, presence, frame_step=1):
    """Cholec80 tool format; `frame_step` 25 numbers the 1-fps rows in 25-fps frames (official)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n" + "".join(
        f"{frame_step * i}\t" + "\t".join(str(int(x)) for x in r) + "\n" for i, r in enumerate(presence)))


def _antic_pred(path, values, names, fmt="{:.17g}"):
    files.write_table(path, np.asarray(values, dtype=np.float64).reshape(len(values), -1), names, fmt)


def _eval_files(tmp_path, n=57, fps=1.0, seed=9):
    """What `surgflow eval` writes for one video of n frames (runner.write_prediction_files)."""
    rng = np.random.default_rng(seed)
    gt = np.sort(rng.integers(0, 7, n))
    pred = np.where(rng.random(n) < .4, gt, rng.integers(0, 7, n))
    preds = {"video01": {"phase": pred, "gt_phase": gt}}
    out = tmp_path / "eval_test"
    runner.write_prediction_files(preds, out / "predictions", out / "ground_truth",
                                  CHOLEC80_PHASES, [], [], fps)
    return out / "ground_truth", out / "predictions", gt, pred


# ---------------------------------------------------------------- 1. no silent subsampling

def test_eval_output_rescored_without_flags_uses_recorded_fps(tmp_path, capsys):
    gt_dir, pred_dir, gt, pred = _eval_files(tmp_path)
    assert json.loads((pred_dir / "fps.json").read_text())["fps"] == 1.0
    assert json.loads((gt_dir / "fps.json").read_text())["fps"] == 1.0
    out = tmp_path / "s.json"
    assert main(["score", "phase", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    # before the fix: "1 videos, 3 frames" (every 25th row of both), accuracy over 3 frames
    assert res["protocol"]["num_frames"] == 57
    assert res["video"]["accuracy"]["mean"] == pytest.approx(100 * (gt == pred).mean())
    assert res["protocol"]["gt_fps"] == 1.0 and res["protocol"]["gt_fps_source"].startswith("recorded")
    assert "57 frames at 1 fps" in capsys.readouterr().out


def test_ambiguous_pair_without_recorded_rate_is_refused(tmp_path, capsys):
    gt_dir, pred_dir, gt, pred = _eval_files(tmp_path)
    (gt_dir / "fps.json").unlink()
    (pred_dir / "fps.json").unlink()
    assert main(["score", "phase", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    err = capsys.readouterr().err
    assert "as many rows (57)" in err and "--gt-fps 1" in err and "fps.json" in err
    out = tmp_path / "s.json"
    assert main(["score", "phase", "--gt", str(gt_dir), "--pred", str(pred_dir), "--gt-fps", "1",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["protocol"]["num_frames"] == 57


def test_flag_contradicting_the_recorded_rate_is_refused(tmp_path, capsys):
    gt_dir, pred_dir, _, _ = _eval_files(tmp_path)
    assert main(["score", "phase", "--gt", str(gt_dir), "--pred", str(pred_dir), "--gt-fps", "25"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["score", "phase", "--gt", str(gt_dir), "--pred", str(pred_dir), "--fps", "5"]) == 2
    assert "--fps 5 contradicts" in capsys.readouterr().err


def test_bad_sidecar_names_the_file(tmp_path):
    gt_dir, pred_dir, _, _ = _eval_files(tmp_path)
    (pred_dir / "fps.json").write_text('{"fps": "one"}')
    with pytest.raises(SurgflowError, match="predictions/fps.json.*positive number"):
        files.load_phase_dirs(gt_dir, pred_dir, CHOLEC80_PHASES)


# ---------------------------------------------------------------- 2. rates checked against rows

def test_fps_checked_against_tool_rows(tmp_path, capsys):
    n = 120
    t = np.zeros((n, 7), int)
    t[60:70, 1] = 1
    _tools_file(tmp_path / "tools" / "video01-tool.txt", t, frame_step=25)  # one row per second
    _antic_pred(tmp_path / "pred" / "video01-anticipation.txt", np.zeros(n), ["Bipolar"])
    args = ["score", "anticipation", "--tools", str(tmp_path / "tools"), "--pred", str(tmp_path / "pred"),
            "--horizon", "3", "--instruments", "Bipolar"]
    assert main(args + ["--fps", "5"]) == 2  # before the fix: exit 0, targets 5x too small
    err = capsys.readouterr().err
    assert "25 frames apart" in err and "--fps 1" in err
    out = tmp_path / "a.json"
    assert main(args + ["--json", str(out)]) == 0  # the default 1 fps matches the rows
    res = json.loads(out.read_text())
    assert res["protocol"]["fps"] == 1.0
    # frame 59 is one second before the use at frame 60: 1/60 minutes
    assert res["instruments"]["Bipolar"]["eMAE"] == pytest.approx(np.mean(np.arange(1, 18)) / 60)
    # the same check for tool presence
    files.write_table(tmp_path / "pred" / "video01-tool.txt", t.astype(float), CHOLEC80_TOOLS)
    assert main(["score", "tools", "--gt", str(tmp_path / "tools"), "--pred", str(tmp_path / "pred"),
                 "--fps", "5"]) == 2


# ---------------------------------------------------------------- 3. horizon > 0

@pytest.mark.parametrize("h", ["0", "-3"])
def test_non_positive_horizon_refused(tmp_path, capsys, h):
    t = np.zeros((30, 7), int)
    _tools_file(tmp_path / "tools" / "video01-tool.txt", t)
    _antic_pred(tmp_path / "pred" / "video01-anticipation.txt", np.zeros(30), ["Bipolar"])
    assert main(["score", "anticipation", "--tools", str(tmp_path / "tools"), "--pred",
                 str(tmp_path / "pred"), "--gt-fps", "1", "--horizon", h, "--instruments", "Bipolar"]) == 2
    assert "--horizon must be a positive" in capsys.readouterr().err
    with pytest.raises(ValueError, match="horizon"):
        am.anticipation_errors(np.zeros(3), np.zeros(3), float(h))
    with pytest.raises(SurgflowError, match="horizon"):
        score.score_anticipation({"v": np.zeros((3, 1))}, {"v": np.zeros((3, 1))}, ["x"], float(h))


# ---------------------------------------------------------------- 4. exact boundaries

def _last_frame_case(tmp_path):
    t = np.zeros((200, 7), int)
    t[-1, CHOLEC80_TOOLS.index("Bipolar")] = 1
    _tools_file(tmp_path / "tools" / "video01-tool.txt", t)
    return ["score", "anticipation", "--tools", str(tmp_path / "tools"), "--pred", str(tmp_path / "pred"),
            "--gt-fps", "1", "--horizon", "3", "--instruments", "Bipolar"]


def test_issue_repro_mmae_dmae_boundaries(tmp_path):
    args = _last_frame_case(tmp_path)
    _antic_pred(tmp_path / "pred" / "video01-anticipation.txt", np.zeros(200), ["Bipolar"])
    out = tmp_path / "a.json"
    assert main(args + ["--json", str(out)]) == 0
    r = json.loads(out.read_text())["instruments"]["Bipolar"]
    # distances 19..161 frames (mMAE) and 163..179 (dMAE); 18 and 162 are exactly 0.1h and 0.9h
    assert r["mMAE"] == pytest.approx(1.5, abs=1e-12)   # was 1.491667
    assert r["dMAE"] == pytest.approx(2.85, abs=1e-12)  # was 2.841667
    assert r["eMAE"] == pytest.approx(9 / 60, abs=1e-12)


def test_perfect_prediction_scores_exactly_zero(tmp_path):
    args = _last_frame_case(tmp_path)
    y = np.minimum((199 - np.arange(200)) / 60.0, 3.0)
    _antic_pred(tmp_path / "pred" / "video01-anticipation.txt", y, ["Bipolar"])
    out = tmp_path / "a.json"
    assert main(args + ["--json", str(out)]) == 0
    r = json.loads(out.read_text())["instruments"]["Bipolar"]
    assert all(r[m] == 0.0 for m in ("inMAE", "outMAE", "wMAE", "eMAE", "dMAE", "mMAE", "MAE"))


def test_float32_targets_classified_by_frame_distance():
    from surgflow.data.targets import anticipation_targets

    present = np.zeros((200, 1), bool)
    present[-1] = True
    y32 = anticipation_targets(present, 1.0, 3.0)  # float32, as eval and training produce them
    assert y32.dtype == np.float32
    r = am.anticipation_errors(y32[:, 0], np.zeros(200), 3.0, fps=1.0)
    assert r["mMAE"] == pytest.approx(1.5, abs=1e-6) and r["dMAE"] == pytest.approx(2.85, abs=1e-6)
    assert am.anticipation_errors(y32[:, 0], y32[:, 0], 3.0, fps=1.0)["inMAE"] == 0.0
    # without fps: float64 with a 1e-5 min tolerance gives the same selection
    r2 = am.anticipation_errors(y32[:, 0], np.zeros(200), 3.0)
    assert r2["mMAE"] == pytest.approx(1.5, abs=1e-6) and r2["dMAE"] == pytest.approx(2.85, abs=1e-6)


# ---------------------------------------------------------------- 5. wMAE conventions

def test_wmae_conventions():
    # instrument a: in-horizon frames (errors 1, 1) and out frames (error 2); b: out frames only (error 0.5)
    gt = {"v": np.array([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])}
    pr = {"v": np.array([[2.0, 3.5], [1.0, 3.5], [1.0, 3.5]])}
    default = score.score_anticipation(gt, pr, ["a", "b"], 3.0)
    bn = score.score_anticipation(gt, pr, ["a", "b"], 3.0, wmae="pitfalls_bn")
    assert np.isnan(default["instruments"]["b"]["wMAE"])
    assert default["mean"]["wMAE"] == pytest.approx((1.0 + 2.0) / 2)           # b drops out
    assert bn["mean"]["wMAE"] == pytest.approx((1.0 + (2.0 + 0.5) / 2) / 2)    # in over a, out over a, b
    assert default["protocol"]["wmae_convention"].startswith("per_instrument")
    assert bn["protocol"]["wmae_convention"].startswith("pitfalls_bn")
    assert "wMAE mean: pitfalls_bn" in score.format_table(bn)
    with pytest.raises(SurgflowError, match="--wmae"):
        score.score_anticipation(gt, pr, ["a", "b"], 3.0, wmae="bn")


# ---------------------------------------------------------------- 6. clipping stated, MAE over 0 < y <= h

def test_no_clipping_by_default_and_clip_flag(tmp_path, capsys):
    t = np.zeros((10, 7), int)
    t[5, CHOLEC80_TOOLS.index("Bipolar")] = 1
    _tools_file(tmp_path / "tools" / "video01-tool.txt", t)
    # targets at 1 fps, h = 0.05 min (3 frames): rows 0-2 out (y = h; row 2 is exactly 3 frames
    # before the use), 3-4 in (2/60, 1/60), 5 present, 6-9 out (never used again)
    pred = np.array([0.1, 0.1, 0.05, -0.02, 1 / 60, 0.0, 0.05, 0.05, 0.05, 0.05])
    _antic_pred(tmp_path / "pred" / "video01-anticipation.txt", pred, ["Bipolar"])
    args = ["score", "anticipation", "--tools", str(tmp_path / "tools"), "--pred", str(tmp_path / "pred"),
            "--gt-fps", "1", "--horizon", "0.05", "--instruments", "Bipolar"]
    out = tmp_path / "a.json"
    assert main(args + ["--json", str(out)]) == 0
    assert "not clipped" in capsys.readouterr().out
    res = json.loads(out.read_text())
    r = res["instruments"]["Bipolar"]
    assert r["inMAE"] == pytest.approx((0.02 + 2 / 60) / 2)  # the negative prediction counts as is
    assert r["outMAE"] == pytest.approx(0.1 / 7)              # 0.1 > h counts as is
    assert r["MAE"] == pytest.approx((0.1 + 0.02 + 2 / 60) / 9)  # every frame with 0 < y <= h
    assert "not clipped" in res["protocol"]["clip"]
    assert main(args + ["--clip", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["instruments"]["Bipolar"]["inMAE"] == pytest.approx(1 / 60)
    assert res["instruments"]["Bipolar"]["outMAE"] == 0.0
    assert "clipped to [0, 0.05]" in res["protocol"]["clip"]


# ---------------------------------------------------------------- 7. --videos

def _phase_dirs(tmp_path, gt_ids, pred_ids, n=6):
    for d, ids in (("gt", gt_ids), ("pred", pred_ids)):
        (tmp_path / d).mkdir(exist_ok=True)
        for k in ids:
            (tmp_path / d / f"video{k:02d}-phase.txt").write_text(
                "Frame\tPhase\n" + "".join(f"{i}\t{(i + k) % 7}\n" for i in range(n)))
    return ["score", "phase", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
            "--gt-fps", "1"]


def test_videos_subset_list_range_and_split(tmp_path, capsys):
    args = _phase_dirs(tmp_path, range(1, 81), range(41, 81))
    assert main(args) == 2  # the video sets differ
    assert "video01" in capsys.readouterr().err
    out = tmp_path / "s.json"
    assert main(args + ["--videos", "cholec80_40_40", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    p = json.loads(out.read_text())["protocol"]
    assert p["videos"] == [f"video{k}" for k in range(41, 81)] and p["videos_selection"] == "cholec80_40_40"
    assert "videos: video41..video80  (--videos cholec80_40_40)" in text
    assert main(args + ["--videos", "video43,45-47", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["protocol"]["videos"] == ["video43", "video45", "video46", "video47"]
    assert "4 video(s) scored; 36 prediction file(s) outside the selection ignored" in capsys.readouterr().out
    assert main(args + ["--videos", "cholec80_32_8_40:val"]) == 2  # 33-40 have no predictions
    assert "missing from predictions" in capsys.readouterr().err
    assert main(args + ["--videos", "41,99,video7x"]) == 2
    err = capsys.readouterr().err
    assert "99" in err and "video7x" in err


def test_select_videos_forms():
    avail = [f"video{k:02d}" for k in range(1, 81)]
    assert files.select_videos("1-3,video05", avail) == ["video01", "video02", "video03", "video05"]
    assert files.select_videos("cholec80_anticipation", avail)[:3] == ["video07", "video08", "video11"]
    assert len(files.select_videos("cholec80_40_8_32:val", avail)) == 8
    with pytest.raises(SurgflowError, match="subset"):
        files.select_videos("cholec80_40_40:dev", avail)
    assert files.compact_names(["video01", "video02", "video03", "video05", "x"]) == \
        "video01..video03, video05, x"


# ---------------------------------------------------------------- 8. per-video tables

def test_per_video_table_printed_and_written(tmp_path, capsys):
    args = _phase_dirs(tmp_path, range(1, 4), range(1, 4))
    out = tmp_path / "scores.json"
    assert main(args + ["--json", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    csv_path, md_path = tmp_path / "scores.per_video.csv", tmp_path / "scores.per_video.md"
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["video"] for r in rows] == ["video01", "video02", "video03"]
    for r in rows:
        assert float(r["accuracy"]) == pytest.approx(res["per_video"][r["video"]]["accuracy"], abs=1e-6)
        assert int(r["frames"]) == 6
        acc = f"{res['per_video'][r['video']]['accuracy']:.2f}"
        assert any(ln.split()[:3] == [r["video"], "6", acc] for ln in text.splitlines())
    md = md_path.read_text()
    assert "| video | frames | accuracy |" in md and md.count("| video0") == 3


def test_per_video_tables_for_tools_and_anticipation(tmp_path):
    from surgflow.evaluation import per_video

    rng = np.random.default_rng(1)
    gt = {v: (rng.random((30, 2)) < .5).astype(float) for v in ("a", "b")}
    pr = {v: rng.random((30, 2)) for v in gt}
    t = score.score_tools(gt, pr, ["x", "y"])
    for v in gt:
        one = score.score_tools({v: gt[v]}, {v: pr[v]}, ["x", "y"])
        assert t["per_video"][v]["mAP"] == pytest.approx(one["mAP"])
    y = {v: np.array([[0.5], [3.0]]) for v in ("a", "b")}
    yh = {"a": np.array([[1.0], [3.0]]), "b": np.array([[0.5], [2.0]])}
    a = score.score_anticipation(y, yh, ["x"], 3.0)
    assert a["per_video"]["a"]["inMAE"] == pytest.approx(0.5) and a["per_video"]["b"]["outMAE"] == 1.0
    paths = per_video.write_per_video(a, tmp_path / "s.json", "anticipation")
    assert [p.name for p in paths] == ["s.anticipation.per_video.csv", "s.anticipation.per_video.md"]
    assert "a,2,0.500000,0.000000" in paths[0].read_text()


def test_anticipation_baselines_on_a_golden_sequence():
    """Constant h is exact out of the horizon and off by y within it; the train mean is the mean
    of the training targets, scored on the test video only."""
    import numpy as np

    from surgflow.evaluation.score import anticipation_baselines

    h = 1.0
    test = np.array([[1.0], [1.0], [0.5], [0.25], [0.0]])  # minutes to the next use
    train = np.array([[0.5], [0.5]])
    r = anticipation_baselines({"t": test, "a": train}, ["a"], ["t"], ["Clipper"], h)
    assert r["constant_h"]["outMAE"] == 0.0
    assert r["constant_h"]["inMAE"] == pytest.approx((0.5 + 0.75) / 2)
    assert r["train_mean"]["outMAE"] == pytest.approx(0.5)
    assert r["train_mean"]["inMAE"] == pytest.approx((0.0 + 0.25) / 2)


def test_pmae_tolerance_stated_in_the_json_protocol(tmp_path, capsys):
    from surgflow.labels import ANTICIPATION_INSTRUMENTS

    tools, pred = tmp_path / "tools", tmp_path / "pred"
    presence = np.zeros((40, len(CHOLEC80_TOOLS)), dtype=int)
    presence[30:, :] = 1
    _tools_file(tools / "video01-tool.txt", presence, frame_step=25)
    _antic_pred(pred / "video01-anticipation.txt", np.full((40, 5), 0.3), list(ANTICIPATION_INSTRUMENTS))
    out = tmp_path / "s.json"
    assert main(["score", "anticipation", "--tools", str(tools), "--pred", str(pred),
                 "--horizon", "3", "--json", str(out)]) == 0
    p = json.loads(out.read_text())["protocol"]
    assert "1e-9" in p["selections"]["pMAE"] and "1e-9 h" in p["pmae_tolerance"], p


def test_paper_presets_use_the_papers_wmae_and_eval_states_it():
    from surgflow.config import CHOICES, load_config

    assert tuple(CHOICES["task.wmae"]) == am.WMAE_CONVENTIONS
    assert load_config(None).task.wmae == "per_instrument"
    for preset in ("cholec80_anticipation_h3", "cholec80_anticipation_h5"):
        assert load_config(preset).task.wmae == "pitfalls_bn", preset
    # eval scores with the run's convention and its table/JSON say which
    preds = {"v": {"anticipation_min": np.array([[2.0, 3.5], [1.0, 3.5], [1.0, 3.5]]),
                   "gt_anticipation": np.array([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])}}
    meta = {"phase_names": CHOLEC80_PHASES, "tool_names": CHOLEC80_TOOLS, "instruments": ["a", "b"],
            "horizon": 3.0, "fps": 1.0, "size": [8, 8], "preprocess": {}, "dataset_root": "",
            "split": "all", "causal": True}
    res = runner.score_predictions(preds, meta, 1.0, "test", False, wmae="pitfalls_bn")["anticipation"]
    assert res["mean"]["wMAE"] == pytest.approx((1.0 + (2.0 + 0.5) / 2) / 2)
    assert res["protocol"]["wmae_convention"].startswith("pitfalls_bn")
    assert "wMAE mean: pitfalls_bn" in score.format_table(res)
    assert "not the BN-pitfalls meter" in score.WMAE_DESCRIPTION["per_instrument"]


def test_cheating_report_states_its_wmae_convention():
    from surgflow.experiments import cheating_report

    assert cheating_report._wmae_convention().startswith("per_instrument")
    assert cheating_report._wmae_convention() == score.WMAE_DESCRIPTION["per_instrument"]


def test_phase_prior_baseline_uses_the_true_phase_of_each_test_frame():
    """phase_prior predicts each instrument's mean training target of the frame's TRUE phase; an
    unlabelled frame (-1) and a phase unseen in training get the overall training mean."""
    import numpy as np

    from surgflow.evaluation.score import anticipation_baselines

    h = 1.0
    train_y = np.array([[0.2], [0.4], [1.0], [1.0]])  # phase 0: mean 0.3; phase 1: mean 1.0
    train_p = np.array([0, 0, 1, 1])
    test_y = np.array([[0.5], [1.0], [0.25], [0.75]])
    test_p = np.array([0, 1, 2, -1])  # phase 2 unseen in training, -1 unlabelled
    r = anticipation_baselines({"a": train_y, "t": test_y}, ["a"], ["t"], ["Clipper"], h,
                               phases={"a": train_p, "t": test_p})
    overall = train_y.mean()  # 0.65
    # in-horizon frames: 0.5 (pred 0.3), 0.25 (pred overall), 0.75 (pred overall)
    assert r["phase_prior"]["inMAE"] == pytest.approx((0.2 + abs(0.25 - overall) + abs(0.75 - overall)) / 3)
    assert r["phase_prior"]["outMAE"] == pytest.approx(0.0)  # y = h in phase 1, predicted 1.0
    assert set(r) == {"constant_h", "train_mean", "phase_prior"}
    assert "phase_prior" not in anticipation_baselines({"a": train_y, "t": test_y}, ["a"], ["t"],
                                                       ["Clipper"], h)


def test_validation_wmae_follows_the_configured_convention(monkeypatch):
    """val/wMAE (what picks best.pt) uses task.wmae, the convention eval reports for the run."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from surgflow.config import load_config
    from surgflow.evaluation.anticipation_metrics import anticipation_scores
    from surgflow.training import validation
    from surgflow.training.runtime import Runtime

    rng = np.random.default_rng(0)
    inst = ["Bipolar", "Clipper"]
    # instrument 0 has in- and out-of-horizon frames, instrument 1 only in-horizon ones: the two
    # conventions then give different means
    gt = {"v1": np.stack([np.r_[np.full(5, 3.0), rng.uniform(0.1, 2.9, 5)],
                          rng.uniform(0.1, 2.9, 10)], 1)}
    pred = {"v1": np.clip(gt["v1"] + rng.normal(0, 0.5, gt["v1"].shape), 0, 3)}
    fake = {"v1": {"loss_sum": 1.0, "n": 10, "tasks": {"anticipation": (gt["v1"], pred["v1"])}}}
    monkeypatch.setattr(validation, "_validate_videos", lambda *a: fake)
    from surgflow.models.tasks import AnticipationTask

    rt = Runtime(device=torch.device("cpu"))
    ds = SimpleNamespace(videos=["v1"], phase_names=[], tool_names=inst)
    model = torch.nn.Module()  # validate reads the model's tasks (the task keeps the horizon)
    model.tasks = torch.nn.ModuleDict({"anticipation": AnticipationTask(1, len(inst), horizon=3.0)})
    got = {}
    for conv in ("per_instrument", "pitfalls_bn"):
        cfg = load_config(None, ["task.tasks=[anticipation]", f"task.wmae={conv}", "task.horizon=3"])
        got[conv] = validation.validate(model, ds, cfg, rt, inst)["val/wMAE"]
        want = anticipation_scores(gt, pred, inst, 3.0, wmae=conv)["mean"]["wMAE"]
        assert got[conv] == pytest.approx(want)
    assert got["per_instrument"] != pytest.approx(got["pitfalls_bn"])
