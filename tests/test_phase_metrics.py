"""Phase metrics: golden sequences worked by hand and a scikit-learn cross-check."""
import numpy as np
import pytest
from sklearn import metrics as skm

from surgflow.evaluation import phase_metrics as pm


def test_hand_worked_union_and_gt_only():
    # class 0: TP 2 FP 0 FN 2 -> P 1, R .5, J .5, F1 2/3
    # class 1: TP 2 FP 2 FN 2 -> P .5, R .5, J 1/3, F1 .5
    # class 2 (predicted, absent from GT): TP 0 FP 2 -> all 0
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    u = pm.video_metrics(gt, pred, 7)
    assert u["accuracy"] == pytest.approx(0.5)
    assert u["precision"] == pytest.approx(0.5)
    assert u["recall"] == pytest.approx(1 / 3)
    assert u["jaccard"] == pytest.approx(5 / 18)
    assert u["f1"] == pytest.approx(7 / 18)
    g = pm.video_metrics(gt, pred, 7, gt_only=True)  # the absent-but-predicted phase is left out
    assert g["precision"] == pytest.approx(0.75)
    assert g["recall"] == pytest.approx(0.5)
    assert g["jaccard"] == pytest.approx(5 / 12)
    assert g["f1"] == pytest.approx(7 / 12)


def test_never_predicted_phase_scores_zero():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 0, 0])  # phase 1 never predicted
    pc = pm.per_class_from_confusion(pm.confusion_matrix(gt, pred, 3))
    assert pc["precision"][1] == 0 and pc["recall"][1] == 0 and pc["f1"][1] == 0
    m = pm.video_metrics(gt, pred, 3, gt_only=True)
    assert m["recall"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert m["precision"] == pytest.approx(0.25)  # (0.5 + 0) / 2


def test_absent_phase_is_undefined_per_phase_not_zero():
    gts = {"a": np.array([0, 0, 1, 1]), "b": np.array([0, 0, 0, 2])}
    preds = {"a": np.array([0, 0, 1, 1]), "b": np.array([0, 0, 0, 0])}
    vw = pm.videowise(gts, preds, 3)
    pp = pm.per_phase(vw["confusions"])
    # phase 1 only in video a (perfect there): mean over 1 video = 1, not (1 + 0) / 2
    assert pp["phases"]["recall"]["mean"][1] == pytest.approx(1.0)
    assert pp["phases"]["recall"]["n"][1] == 1
    assert np.isnan(pp["phases"]["recall"]["std"][1])  # one video: no sample std
    # phase 2 only in video b and missed there
    assert pp["phases"]["recall"]["mean"][2] == 0
    # phase 0 in both videos, recall 1 both times
    assert pp["phases"]["recall"]["mean"][0] == 1 and pp["phases"]["recall"]["n"][0] == 2
    # video-wise std is the sample std over videos
    acc = [vw["per_video"][v]["accuracy"] for v in ("a", "b")]
    assert vw["summary"]["accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1))


def test_unlabelled_frames_are_dropped():
    gt = np.array([-1, -1, 0, 1])
    pred = np.array([1, 1, 0, 1])
    assert pm.video_metrics(gt, pred, 2)["accuracy"] == 1.0


def test_frame_pooled_weights_long_videos():
    gts = {"long": np.zeros(90, int), "short": np.ones(10, int)}
    preds = {"long": np.zeros(90, int), "short": np.zeros(10, int)}
    fp = pm.frame_pooled(gts, preds, 2)
    assert fp["accuracy"] == pytest.approx(0.9)
    vw = pm.videowise(gts, preds, 2)
    assert vw["summary"]["accuracy"]["mean"] == pytest.approx(0.5)


def test_sklearn_cross_check_random():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 300))
        gt = rng.integers(0, 7, n)
        pred = np.where(rng.random(n) < 0.6, gt, rng.integers(0, 7, n))
        if trial % 3 == 0:
            gt[gt == 3] = 4  # a phase absent from GT
        for gt_only in (False, True):
            labels = np.unique(gt) if gt_only else np.union1d(gt, pred)
            ours = pm.video_metrics(gt, pred, 7, gt_only=gt_only)
            kw = dict(labels=labels, average="macro", zero_division=0)
            assert ours["accuracy"] == pytest.approx(skm.accuracy_score(gt, pred))
            assert ours["precision"] == pytest.approx(skm.precision_score(gt, pred, **kw))
            assert ours["recall"] == pytest.approx(skm.recall_score(gt, pred, **kw))
            assert ours["f1"] == pytest.approx(skm.f1_score(gt, pred, **kw))
            assert ours["jaccard"] == pytest.approx(skm.jaccard_score(gt, pred, **kw))
    # frame-pooled = sklearn on the concatenation
    gts = {str(i): rng.integers(0, 5, 50) for i in range(4)}
    preds = {k: np.where(rng.random(50) < .5, v, rng.integers(0, 5, 50)) for k, v in gts.items()}
    g = np.concatenate(list(gts.values()))
    p = np.concatenate(list(preds.values()))
    fp = pm.frame_pooled(gts, preds, 5)
    assert fp["f1"] == pytest.approx(skm.f1_score(g, p, labels=np.union1d(g, p), average="macro",
                                                  zero_division=0))


def test_bad_prediction_ids_raise():
    with pytest.raises(ValueError):
        pm.confusion_matrix(np.array([0, 1]), np.array([0, 9]), 7)
